"""The example FastAPI service: ``uvicorn examples.fastapi_app.app:app`` or
``python -m examples.fastapi_app [--demo]``."""
