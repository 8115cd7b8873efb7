"""What a simulated upstream received: every request, in order, for tests to assert on."""

from __future__ import annotations

import json
from typing import Any

import attrs
from aiohttp import web
from multidict import CIMultiDict


@attrs.frozen
class RecordedRequest:
    """One request as the simulator saw it, copied so later requests cannot change it."""

    method: str
    path: str  # the raw path, percent-encoding kept, without the query
    query: dict[str, str]  # the first value of each query parameter
    headers: CIMultiDict[str]
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON

    @property
    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object; raises ``ValueError`` when it is not one."""
        if not isinstance(self.json, dict):
            raise ValueError(f"{self.method} {self.path}: body is not a JSON object")
        return self.json


async def capture(request: web.Request) -> RecordedRequest:
    """Read ``request`` (its body stays readable by the handler) into a `RecordedRequest`."""
    body = await request.read()
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            parsed = None
    return RecordedRequest(
        method=request.method,
        path=request.raw_path.partition("?")[0],
        query={key: request.query.getone(key) for key in request.query},
        headers=CIMultiDict(request.headers),
        body=body,
        json=parsed,
    )


@attrs.define
class Recorder:
    """The requests a simulator received, oldest first; shared by the apps it is given to."""

    requests: list[RecordedRequest] = attrs.field(factory=list)

    @property
    def last(self) -> RecordedRequest:
        """The most recent request; raises ``LookupError`` when none was received."""
        if not self.requests:
            raise LookupError("the simulator has received no request")
        return self.requests[-1]

    def add(self, request: RecordedRequest) -> None:
        """Append one request (the apps call this for every request they receive)."""
        self.requests.append(request)

    def clear(self) -> None:
        """Forget every request received so far."""
        self.requests.clear()

    def to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The requests whose raw path is ``path`` (and whose method is ``method``, if given)."""
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def __len__(self) -> int:
        return len(self.requests)
