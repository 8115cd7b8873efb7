"""The types config fields are declared with: durations, sizes, URLs, ranges.

A field's type says how its TOML value is read (`gateway.config_converter`):
``Seconds`` from ``"30s"``, ``Bytes`` from ``"8MiB"``, ``HttpUrl`` and
``ProxyUrl`` checked for their schemes, ``Annotated[int, Range(1, 65535)]``
checked against its range.  Plugins declare their own ``Config`` with them.
"""

from __future__ import annotations

from typing import Annotated, Any, NewType, get_origin

import attrs

Seconds = NewType("Seconds", float)
Bytes = NewType("Bytes", int)
HttpUrl = NewType("HttpUrl", str)
ProxyUrl = NewType("ProxyUrl", str)
Methods = NewType("Methods", tuple[str, ...])


@attrs.frozen
class Range:
    """The values a numeric setting may take, declared on its type and checked on load.

    ::

        port: Annotated[int, Range(1, 65535)] = 8080
        idle_timeout: Annotated[Seconds, Range(0, above=True)] = Seconds(300.0)

    The converter checks the value once it is structured, so a problem names its
    key path like any other: ``$.server.port: must be between 1 and 65535 (0)``.
    """

    min: float | None = None
    max: float | None = None
    #: ``min`` itself is excluded (a timeout of zero makes no sense).
    above: bool = False

    def check(self, value: float) -> None:
        """Raise `ValueError` when ``value`` is outside the range."""
        low, high = self.min, self.max
        if self.above and low is not None and value <= low:
            raise ValueError(f"must be above {low!r} ({value!r})")
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                raise ValueError(f"must be between {low!r} and {high!r} ({value!r})")
            if low is not None:
                raise ValueError(f"must be at least {low!r} ({value!r})")
            raise ValueError(f"must be at most {high!r} ({value!r})")


#: Common ranges: whole numbers from zero or one, durations above zero.
NonNegativeInt = Annotated[int, Range(0)]
PositiveInt = Annotated[int, Range(1)]
PositiveSeconds = Annotated[Seconds, Range(0, above=True)]


def range_of(type_: Any) -> Range | None:
    """The `Range` an ``Annotated`` type declares, if any."""
    if get_origin(type_) is Annotated:
        for extra in type_.__metadata__:
            if isinstance(extra, Range):
                return extra
    return None


PROXY_SCHEMES = frozenset({"http", "https", "socks4", "socks5", "socks5h"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
