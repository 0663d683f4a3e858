"""ASGI entry point: the web process serves the whole site over ASGI (gunicorn with uvicorn's
worker), so async views such as the event stream hold no thread while they wait."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()
