"""Web processes must stay light: no torch or diffusers import on any request path."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from config.wsgi import application
from config.asgi import application as asgi_application
import config.uvicorn_worker
from django.urls import get_resolver
from config.celery import app
get_resolver().url_patterns  # imports every view module
import jobs.api.views, jobs.services, jobs.tasks
app.finalize(auto=True)
app.loader.import_default_modules()  # what a worker-side autodiscovery imports
heavy = sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules)
print(",".join(heavy) or "clean")
"""


def test_web_process_imports_no_torch_diffusers_or_transformers() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )

    assert result.stdout.strip().splitlines()[-1] == "clean"
