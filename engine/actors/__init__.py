"""The Ray shells: the host actor around the core, the courier (outbox), the dispatcher (HIS
deliveries), their timers, their names, and the pool that starts them (``pool.py``, imported
only by ``engine.runtime``)."""
