"""The back office: booking records and their book (the read model), analytics, the HIS link
(adapters, the egress guard) and its deliveries."""
