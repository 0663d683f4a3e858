"""gunicorn settings of the web process, from the environment: requests are short (the GPU work
is elsewhere), so threads serve most of the concurrency and a few processes use the cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

port = os.environ.get("PORT", "8000")
bind = os.environ.get("WEB_BIND", f"0.0.0.0:{port}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
worker_class = "gthread"
# No view waits on the GPU: a request that takes this long is stuck, not slow.
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
