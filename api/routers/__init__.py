"""One FastAPI ``APIRouter`` per area of the API, included by ``api.app.create_app`` in order."""
