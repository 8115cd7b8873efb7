"""How long large JSON request bodies take to parse, and how long they stall the loop.

``python -m bench.json_bodies`` parses 7 MiB bodies of two shapes (one long text,
as a conversation with a pasted document; many small objects, as a long chat
history or a batch) with:

- ``strict``: `gateway.jsonbody.loads` (no duplicate keys, NaN, infinities or
  unbounded nesting), as ``Exchange.json`` uses it;
- ``stdlib``: plain ``json.loads``, for the cost of strictness;
- ``orjson``, when installed: the fastest parser, which cannot tell duplicate keys;

then measures the longest stall of the event loop (a 1 ms ticker's worst gap, which
is what ``/healthz`` would have waited) while four such bodies are parsed at once,
on the loop and in a worker thread, as `gateway.jsonbody.loads_async` does.  Figures vary with the
machine: compare them within one run.  ``bench/README.md`` has the last one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import jsonbody

SIZE = 7 * 1024 * 1024


def bodies() -> dict[str, bytes]:
    text = {"model": "gpt-4", "messages": [{"role": "user", "content": "lorem ipsum " * 611_000}]}
    item = {"role": "assistant", "content": "a short reply", "n": 12, "score": 0.5, "tags": ["x"]}
    count = SIZE // len(json.dumps(item))
    objects = {"model": "gpt-4", "messages": [dict(item, n=i) for i in range(count)]}
    return {
        "one-long-text": json.dumps(text).encode(),
        "many-objects": json.dumps(objects).encode(),
    }


def parsers() -> dict[str, Callable[[bytes], Any]]:
    found: dict[str, Callable[[bytes], Any]] = {"strict": jsonbody.loads, "stdlib": json.loads}
    try:
        import orjson

        found["orjson"] = orjson.loads
    except ImportError:
        pass
    return found


def parse_seconds(parse: Callable[[bytes], Any], body: bytes, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        parse(body)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def worst_stall(work: Callable[[], Awaitable[Any]]) -> float:
    """The longest the loop went without running a 1 ms ticker while ``work`` ran."""
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    await work()
    done = True
    await ticker
    return worst


async def stalls(body: bytes) -> dict[str, float]:
    # The parsed bodies are kept until the ticker has stopped: freeing millions of
    # objects takes a while too, wherever the last reference goes (at a request's end).
    kept: list[Any] = []

    async def inline() -> None:
        for _ in range(4):
            kept.append(jsonbody.loads(body))
            await asyncio.sleep(0)

    async def off_loop() -> None:
        kept.extend(await asyncio.gather(*(jsonbody.loads_async(body) for _ in range(4))))

    async def free() -> None:
        kept.clear()

    on_loop = await worst_stall(inline)
    kept.clear()
    off = await worst_stall(off_loop)
    return {"on the loop": on_loop, "in a thread": off, "freeing them": await worst_stall(free)}


def main() -> None:
    print(f"{'body':<14} {'parser':<8} {'ms per 7 MiB':>13}")
    for name, body in bodies().items():
        for parser, parse in parsers().items():
            print(f"{name:<14} {parser:<8} {parse_seconds(parse, body) * 1000:>13.0f}")
    print(f"\n{'body':<14} {'4 bodies at once':<16} {'worst loop stall, ms':>21}")
    for name, body in bodies().items():
        for where, seconds in asyncio.run(stalls(body)).items():
            print(f"{name:<14} {where:<16} {seconds * 1000:>21.0f}")


if __name__ == "__main__":
    main()
