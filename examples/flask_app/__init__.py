"""The example Flask service: ``gunicorn -w 2 --preload examples.flask_app.app:app``."""
