"""Who is asking: patients' credentials and tokens (``auth.py``), admin accounts and scopes
(``admins.py``), identity documents and phones (``identity.py``)."""
