"""Listening: the low-level aiohttp server, its errors in the JSON envelope, and the
service lifecycle (start, hot reload, graceful drain).

The gateway uses aiohttp's low-level `web.Server` rather than an `Application`:
it has one handler and no router of aiohttp's, so the per-request cost of
middlewares and signals is not paid.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import structlog
from aiohttp import http_exceptions, web, web_response
from aiohttp.web_protocol import RequestHandler

from gateway.connection_cap import Refusal, default_cap
from gateway.drain import DRAIN_DEADLINE
from gateway.errors import error_body
from gateway.handler import Gateway
from gateway.runtime import Runtime

logger = structlog.get_logger("gateway")

#: Connections the kernel completes and queues while the gateway is busy elsewhere.
#: A full queue drops new connections' SYNs, and their clients try again only after
#: a second or more.  Linux caps it at ``net.core.somaxconn`` (4096 since 5.4);
#: Go's net/http (the go-chatgpt-api) asks for the cap too, nginx for 511.
LISTEN_BACKLOG = 4096
#: The ``Server`` header of the gateway's own answers (an upstream's own passes through):
#: its name without versions, which would only tell a scanner what to try.
SERVER_NAME = "chatgpt-gateway"
#: Once ``drain_timeout`` has passed, how long the requests still open get to end their
#: answers (an error event, say) before their connections are closed regardless.
END_GRACE = 0.5


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering malformed requests in the JSON envelope."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        code, text = "bad_request", "malformed HTTP request"
        if isinstance(exc, http_exceptions.LineTooLong) or "Too many headers" in str(exc):
            status, code, text = 431, "headers_too_large", "request line or headers too large"
        elif status == 504:
            code, text = "gateway_timeout", "request timed out"
        elif status >= 500:
            code, text = "internal_error", "the gateway failed to handle the request"
            logger.error("unhandled error", exc_info=exc)
        # SECURITY: aiohttp's messages quote the request bytes around the error (a token).
        logger.debug("rejected malformed request", status=status, **error_kind(exc))
        response = web.Response(
            status=status,
            body=error_body(
                text, "invalid_request_error" if status < 500 else "gateway_error", code
            ),
            content_type="application/json",
        )
        response.force_close()
        return response

    def end_request(self) -> None:
        """Cancel the request in progress, if any, so that it ends its answer (`gateway.drain`)."""
        task = self._task_handler
        if self._request_in_progress and task is not None and not task.done():
            task.cancel(DRAIN_DEADLINE)  # handed on to the request's own task


# Where aiohttp's description of a parse error ends and its quote of the request begins.
_QUOTE = re.compile(r"""[:'"]| when reading| b'""")


def error_kind(exc: BaseException | None) -> dict[str, str]:
    """What went wrong with a malformed request, for a log line: the error's class and
    the first words of its message, never the bytes it quotes (they may hold a token)."""
    if exc is None:
        return {}
    text = exc.message if isinstance(exc, http_exceptions.HttpProcessingError) else str(exc)
    reason = _QUOTE.split(text.strip().partition("\n")[0], maxsplit=1)[0].strip()
    return {"error": type(exc).__name__, "reason": reason[:80]}


class GatewayServer(web.Server):
    """`web.Server` whose connections use `JsonErrorRequestHandler`, at most
    ``max_connections`` at once (0: no cap); one over gets a `Refusal`."""

    def __init__(self, *args: Any, max_connections: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections

    def __call__(self) -> RequestHandler | Refusal:  # type: ignore[override]
        if self.max_connections and len(self._connections) >= self.max_connections:
            return Refusal()
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


def make_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (``SO_REUSEPORT`` lets several workers share a port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class Service:
    """A running gateway: the listening server and the runtime it serves with."""

    def __init__(self, runtime: Runtime) -> None:
        self.gateway = Gateway(runtime)
        self._runner: web.ServerRunner | None = None
        self._retired: set[asyncio.Task[None]] = set()
        #: Runtimes a reload replaced whose requests have not all ended yet.
        self._retiring: set[Runtime] = set()
        self.port = 0

    @property
    def runtime(self) -> Runtime:
        return self.gateway.runtime

    @classmethod
    async def create(cls, runtime: Runtime) -> Service:
        """A service for ``runtime``, its plugins started."""
        await runtime.startup()
        return cls(runtime)

    async def start(self, sock: socket.socket) -> None:
        """Serve on an already bound socket."""
        # aiohttp's default is "Python/3.x aiohttp/3.x", read from this module global by
        # every response it prepares: naming it once costs nothing per request.
        web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]
        server_config = self.runtime.config.server
        limit = max(8190, server_config.max_header_size)
        server = GatewayServer(
            self.gateway.handle,
            handler_cancellation=True,  # a client that disconnects cancels its upstream call
            max_line_size=limit,
            max_field_size=limit,
            # Request bodies pass as they came: bytes and Content-Encoding together.
            auto_decompress=False,
            # Also bounds how long a client may take to send a request head.
            keepalive_timeout=server_config.client_idle_timeout,
            # After an early answer (413, 408) the unread rest of a body is drained
            # this long, so that the client sees the answer rather than a reset.
            lingering_time=2.0,
            access_log=None,
            max_connections=server_config.max_client_connections or default_cap(),
        )
        # By cleanup time every request has ended, or been told to: do not wait long.
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=END_GRACE)
        await self._runner.setup()
        # (aiohttp listens again with its own backlog, 128, unless told otherwise.)
        site = web.SockSite(self._runner, sock, backlog=LISTEN_BACKLOG)
        await site.start()
        self.port = sock.getsockname()[1]

    async def reload(self, runtime: Runtime) -> None:
        """Swap in a new runtime; the old one retires once its requests have ended."""
        await runtime.startup()
        old, self.gateway.runtime = self.gateway.runtime, runtime
        self._retiring.add(old)
        task = asyncio.create_task(self._retire(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _retire(self, runtime: Runtime) -> None:
        await runtime.wait_idle()
        self._retiring.discard(runtime)
        await runtime.shutdown()

    async def stop(self, drain_timeout: float | None = None) -> bool:
        """Stop accepting, let requests finish up to ``drain_timeout``, end the rest, close.

        Requests of runtimes a reload replaced count too.  Returns whether every
        request finished in time.
        """
        if drain_timeout is None:
            drain_timeout = self.runtime.config.server.drain_timeout
        drained = True
        self.gateway.draining = True
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()  # stops listening; connections stay open
            drained = await self._wait_idle(drain_timeout)
            if not drained:
                assert self._runner.server is not None
                for connection in self._runner.server.connections:
                    if isinstance(connection, JsonErrorRequestHandler):
                        connection.end_request()
                await self._wait_idle(END_GRACE)
            await self._runner.cleanup()
            self._runner = None
        await asyncio.gather(*self._retired, return_exceptions=True)
        await self.runtime.shutdown()
        return drained

    async def _wait_idle(self, timeout: float) -> bool:
        """Wait until no request uses any runtime; ``False`` if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                for runtime in [self.runtime, *self._retiring]:
                    await runtime.wait_idle()
        except TimeoutError:
            return False
        return True
