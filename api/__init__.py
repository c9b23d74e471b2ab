"""slotengine's HTTP API: FastAPI on uvicorn, with raw-ASGI fast paths for the booking route."""
