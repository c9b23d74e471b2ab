"""The flash-crowd path: the raw ASGI gateway in front of FastAPI (``booking.py``), each
worker's view of every session's stock (``availability.py``) and the limits (``limits.py``)."""
