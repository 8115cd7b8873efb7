"""Load for server-sent events, with an aiohttp client: one stream at a time, or thousands.

- `sse_latency`: streams one after another over one kept-alive connection; the
  time to the first event and to the end of each, and every event counted.
- `hold_streams`: opens N streams at once that the upstream holds open after
  their first event, reads the process's resident memory before and with all
  N open, then lets them finish; every failure counted.

The upstream is told how to stream through its ``/_bench/`` control routes
(`UpstreamControl`), directly, never through the proxy under test.
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from collections.abc import Callable

import aiohttp
import attrs

from bench.load import Request

#: Connections being opened at once by `hold_streams` (the rest wait their turn).
OPENING_AT_ONCE = 256
#: Seconds the held streams get to end once released.
FINISH_TIMEOUT = 60.0


@attrs.frozen
class SSEResult:
    streams: int
    events: int  # events expected per stream (the final [DONE] not counted)
    ttfe_us: float  # median time to the first event
    total_us: float  # median time to the end of the stream
    errors: int


@attrs.frozen
class MemoryResult:
    streams: int
    opened: int  # streams open when the memory was read
    errors: int
    rss_before: int
    rss_open: int
    seconds: float
    #: The commonest errors, with how often each happened.
    error_kinds: dict[str, int] = attrs.field(factory=dict)

    @property
    def bytes_per_stream(self) -> float:
        """The memory grown while ``opened`` streams were open, per stream."""
        return (self.rss_open - self.rss_before) / self.opened if self.opened else 0.0


class UpstreamControl:
    """The bench upstream's ``/_bench/`` routes."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def _post(self, path: str, body: dict[str, object] | None = None) -> dict[str, int]:
        async with self.session.post(self.base_url + path, json=body or {}) as response:
            response.raise_for_status()
            return dict(await response.json())

    async def mode(self, events: int, hold: bool = False) -> None:
        await self._post("/_bench/mode", {"events": events, "hold": hold})

    async def release(self) -> None:
        await self._post("/_bench/release")

    async def open_streams(self) -> int:
        async with self.session.get(self.base_url + "/_bench/stats") as response:
            return int((await response.json())["open"])


async def read_stream(response: aiohttp.ClientResponse) -> tuple[float | None, int]:
    """Read a stream to its end: when its first bytes came, and how many events it had."""
    first: float | None = None
    count, last = 0, b""
    async for chunk in response.content.iter_any():
        if first is None:
            first = time.perf_counter()
        count += (last + chunk).count(b"\n\n")
        last = chunk[-1:]
    return first, count


async def sse_latency(
    base_url: str, request: Request, streams: int, events: int, timeout: float = 60.0
) -> SSEResult:
    """Stream ``streams`` times, one after another, ``events`` events each (+ ``[DONE]``)."""
    ttfe: list[float] = []
    totals: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=1)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        for _ in range(streams):
            started = time.perf_counter()
            try:
                async with session.request(
                    request.method,
                    base_url + request.path,
                    data=request.body or None,
                    headers=request.header_dict(),
                ) as response:
                    first, count = await read_stream(response)
                    ended = time.perf_counter()
                    if response.status != 200 or first is None or count < events + 1:
                        errors += 1
                        continue
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            ttfe.append((first - started) * 1e6)
            totals.append((ended - started) * 1e6)
    return SSEResult(
        streams=streams,
        events=events,
        ttfe_us=statistics.median(ttfe) if ttfe else 0.0,
        total_us=statistics.median(totals) if totals else 0.0,
        errors=errors,
    )


async def hold_streams(
    base_url: str,
    request: Request,
    control: UpstreamControl,
    rss: Callable[[], int],
    count: int,
    open_timeout: float,
    settle: float = 0.5,
) -> MemoryResult:
    """Hold ``count`` streams open through the target; measure its memory with them open.

    ``settle``: seconds to let the proxy settle, once all are open, before reading.
    """
    started = time.monotonic()
    await control.mode(events=1, hold=True)
    rss_before = rss()
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    opened = 0
    errors = 0
    kinds: collections.Counter[str] = collections.Counter()
    all_open = asyncio.Event()

    def settled() -> None:
        if opened + errors >= count:
            all_open.set()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal opened, errors
        is_open = False
        try:
            async with opening:
                response = await session.request(
                    request.method,
                    base_url + request.path,
                    data=request.body or None,
                    headers=request.header_dict(),
                )
                await response.content.readuntil(b"\n\n")  # the first event
            is_open = True
            opened += 1
            settled()
            async with response:
                _, count_rest = await read_stream(response)
                if response.status != 200 or count_rest < 1:  # [DONE] still to come
                    raise aiohttp.ClientPayloadError(
                        f"stream ended early (status {response.status}, {count_rest} more events)"
                    )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            errors += 1
            kinds[f"{type(exc).__name__}: {exc}"[:120]] += 1
            if not is_open:
                settled()

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=open_timeout + 30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        try:
            async with asyncio.timeout(open_timeout):
                await all_open.wait()
            await asyncio.sleep(settle)
        except TimeoutError:
            pass
        rss_open = rss()
        opened_now = opened
        await control.release()
        _, pending = await asyncio.wait(tasks, timeout=FINISH_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        errors += len(pending)
        if pending:
            kinds["not finished in time"] += len(pending)
    await control.mode(events=1, hold=False)
    return MemoryResult(
        streams=count,
        opened=opened_now,
        errors=errors,
        rss_before=rss_before,
        rss_open=rss_open,
        seconds=time.monotonic() - started,
        error_kinds=dict(kinds.most_common(5)),
    )
