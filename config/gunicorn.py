"""gunicorn settings of the web process, from the environment: uvicorn's worker serves the ASGI
app (config.asgi), so an event stream waits on the event loop, not in a thread; sync views run
in Django's thread pool, and a few processes use the cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

port = os.environ.get("PORT", "8000")
bind = os.environ.get("WEB_BIND", f"0.0.0.0:{port}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "config.uvicorn_worker.StreamEndingUvicornWorker"
# The worker's heartbeat to the arbiter: a process whose event loop stalls this long is
# restarted. Long-lived streams do not count against it.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# Recycling processes now and then bounds slow memory growth in long-lived workers.
max_requests = 5000
max_requests_jitter = 500
accesslog = "-"


def on_starting(server: Any) -> None:
    """Metric files of processes from an earlier run would count twice: start empty."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
