"""gunicorn's worker for the ASGI app: uvicorn's, whose shutdown first tells open event streams
to end (``core.shutdown``). A stream never ends on its own, so the server would otherwise wait
``graceful_timeout`` for it; ended, its client reconnects with ``Last-Event-ID``."""

from __future__ import annotations

import sys
from socket import socket

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from core.shutdown import process_stopping


class StreamEndingServer(Server):
    async def shutdown(self, sockets: list[socket] | None = None) -> None:
        process_stopping().set()
        await super().shutdown(sockets)


class StreamEndingUvicornWorker(UvicornWorker):
    async def _serve(self) -> None:
        # The parent's _serve, with the server above.
        self.config.app = self.wsgi
        server = StreamEndingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
