"""Runnable example services: ``examples.fastapi_app`` (uvicorn) and ``examples.flask_app`` (gunicorn)."""
