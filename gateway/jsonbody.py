"""Strict JSON for request bodies: what a plugin checks is what the upstream reads.

Python's ``json`` is lenient where gateways must not be: it accepts ``NaN``
and ``Infinity`` (not JSON), turns ``1e400`` into infinity, keeps the last of
duplicate keys (while another parser may keep the first: a key restricted to
one ``model`` could smuggle another), and recurses without a bound.  Every
such body is refused here, as a ``ValueError``.

Large bodies are parsed in a worker thread (`loads_async`): parsing 7 MiB of
small objects takes about 0.3 s, which would stall every other request on the
loop.  The thread lets the loop run because the parser calls back into Python
(``_object``) for every object; ``orjson``, a C parser with no such calls, is only
twice as fast on such bodies and cannot see duplicate keys, so it is not used
(``bench/json_bodies.py`` measures both).

What upstreams send is read leniently (`loads_upstream`), but nothing a third
party sends may escape as anything other than a ``ValueError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import math
from typing import Any

#: Bodies larger than this are parsed in a worker thread (about 10 ms of parsing).
OFF_LOOP_SIZE = 256 * 1024


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # (in C: a third faster than checking key by key)
    if len(result) != len(pairs):  # a key came twice: name it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range ({text[:20]}...)")
    return value


def _strict_decoder() -> json.JSONDecoder:
    return json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)


# Codecs made once, not per call: ``json.loads``/``json.dumps`` with any option build a
# new decoder or encoder each time, 17k and 9k of the 106k instructions per request
# that model routing cost (bench/instructions.sh only:routing). A decoder keeps a memo
# of keys while it parses, so the parser thread of `loads_async` has one of its own.
_DECODER_ON_LOOP = _strict_decoder()
_DECODER_IN_THREAD = _strict_decoder()
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _decode(raw: bytes, decoder: json.JSONDecoder) -> Any:
    try:
        text = raw.decode("utf-8")  # strict: no surrogates smuggled in as bytes
        if text.startswith("\ufeff"):  # as json.loads: a byte-order mark is not JSON
            raise ValueError("unexpected byte-order mark")
        return decoder.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads(raw: bytes) -> Any:
    """Parse a body strictly; ``ValueError`` for anything a strict parser would refuse."""
    return _decode(raw, _DECODER_ON_LOOP)


async def loads_async(raw: bytes) -> Any:
    """`loads`; a body over `OFF_LOOP_SIZE` is parsed in a worker thread, so that the
    loop serves other requests meanwhile.

    One thread for all: several parsing at once would take turns at the GIL with the
    loop, which then waits longer for its own turn (four 7 MiB bodies at once stalled
    it 180 ms in four threads, 30 ms in one).
    """
    if len(raw) <= OFF_LOOP_SIZE:
        return loads(raw)
    return await asyncio.get_running_loop().run_in_executor(
        _parser(), _decode, raw, _DECODER_IN_THREAD
    )


@functools.cache
def _parser() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="json-body")


def loads_upstream(raw: bytes | bytearray | str) -> Any:
    """Parse JSON an upstream sent, as ``json.loads`` does; ``ValueError`` for anything
    unreadable, nesting too deep for the parser (a ``RecursionError``) included."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Serialise a body; ``ValueError`` for what is not valid JSON in UTF-8."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except (UnicodeEncodeError, RecursionError) as exc:
        raise ValueError(f"cannot be sent as JSON: {type(exc).__name__}") from None
