"""Reading TOML into config classes: the cattrs converter and its problems.

Strict: unknown keys are errors, whole numbers and strings are not guessed
from other types, and every problem comes back with its key path
(``$.upstreams.x.url: not a URL ("htp:/x")``) rather than as an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args

import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from yarl import URL

from gateway.config_problems import describe_errors, faulty_keys, join_path
from gateway.config_types import (
    HTTP_METHODS,
    PROXY_SCHEMES,
    Bytes,
    HttpUrl,
    Methods,
    ProxyUrl,
    Seconds,
    range_of,
)
from gateway.redaction import redact_url
from gateway.units import parse_duration, parse_size


def _structure_url(value: object, _: object) -> HttpUrl:
    url = _parse_url(value, {"http", "https"})
    return HttpUrl(str(url))


def _structure_proxy(value: object, _: object) -> ProxyUrl:
    _parse_url(value, PROXY_SCHEMES)
    return ProxyUrl(str(value))


def _parse_url(value: object, schemes: set[str] | frozenset[str]) -> URL:
    try:
        url = URL(str(value))
    except ValueError:
        url = None
    if not isinstance(value, str) or url is None or url.scheme not in schemes or not url.host:
        raise ValueError(f'not a URL ("{redact_url(str(value))}")')
    return url


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean ({value!r})")


def _structure_methods(value: object, _: object) -> Methods:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
        raise ValueError(f"not a list of HTTP methods ({value!r})")
    methods = tuple(m.upper() for m in items)
    unknown = [m for m in methods if m != "*" and m not in HTTP_METHODS]
    if unknown:
        raise ValueError(f"unknown HTTP method {unknown[0]!r}")
    return Methods(methods)


def _structure_proxies(value: object, _: object) -> tuple[ProxyUrl, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"not a proxy URL or list of them ({type(value).__name__})")
    # An empty string (``${GO_CHATGPT_API_PROXY:-}`` unset) means no proxy.
    return tuple(_structure_proxy(item, None) for item in items if item != "")


def make_converter() -> cattrs.Converter:
    """The cattrs converter for config classes: strict keys, readable units."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(Seconds, lambda v, _: Seconds(parse_duration(v)))
    converter.register_structure_hook(Bytes, lambda v, _: Bytes(parse_size(v)))
    converter.register_structure_hook(HttpUrl, _structure_url)
    converter.register_structure_hook(ProxyUrl, _structure_proxy)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Methods, _structure_methods)
    # Generic aliases cannot be registered by type; match them by equality instead.
    generic_hooks: dict[Any, Callable[[object, object], Any]] = {
        tuple[ProxyUrl, ...]: _structure_proxies,
        Mapping[str, Any]: _structure_table,
        Mapping[str, Mapping[str, Any]]: _structure_tables,
        Mapping[str, str]: _structure_strings,
    }
    converter.register_structure_hook_func(
        lambda t: t in generic_hooks, lambda v, t: generic_hooks[t](v, t)
    )

    def structure_int(value: object, _: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"not a whole number ({value!r})")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"not a whole number ({value!r})") from None

    converter.register_structure_hook(int, structure_int)

    def structure_str(value: object, _: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"not a string ({value!r})")
        return value

    converter.register_structure_hook(str, structure_str)

    def structure_in_range(type_: Any) -> Callable[[object, object], Any]:
        bounds = range_of(type_)
        assert bounds is not None
        base = get_args(type_)[0]
        structure_base = converter.get_structure_hook(base)

        def structure(value: object, _: object) -> Any:
            number = structure_base(value, base)
            bounds.check(number)
            return number

        return structure

    converter.register_structure_hook_factory(lambda t: range_of(t) is not None, structure_in_range)
    return converter


def _structure_table(value: object, _: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"not a table ({type(value).__name__})")
    return value


def _structure_tables(value: object, _: object) -> Mapping[str, Mapping[str, Any]]:
    table = _structure_table(value, None)
    for key, item in table.items():
        if not isinstance(item, dict):
            raise ValueError(f"{key}: not a table ({type(item).__name__})")
    return table


def _structure_strings(value: object, _: object) -> Mapping[str, str]:
    table = _structure_table(value, None)
    for key, item in table.items():
        if not isinstance(item, str):
            raise ValueError(f"{key}: not a string ({item!r})")
    return dict(table)


CONVERTER = make_converter()


def structure(data: Any, cls: type[Any], path: str) -> tuple[Any, list[str]]:
    """Structure ``data`` into ``cls``; return the result (or ``None``) and the problems."""
    if not isinstance(data, dict):
        return None, [f"{path}: not a table ({type(data).__name__})"]
    try:
        return CONVERTER.structure(data, cls), []
    except (ClassValidationError, IterableValidationError) as exc:
        return None, describe_errors(exc, path)
    except (ValueError, TypeError) as exc:
        return None, [join_path(path, str(exc))]


def structure_partly(data: Any, cls: type[Any], path: str) -> tuple[Any, list[str]]:
    """`structure`, but when keys are at fault, the rest structured without them.

    The result stands in for the table in the checks that need it (a route's
    upstream, its plugins), so that every problem of the table is reported at once.
    """
    if not isinstance(data, dict):
        return structure(data, cls, path)
    try:
        return CONVERTER.structure(data, cls), []
    except ClassValidationError as exc:
        rest = {key: value for key, value in data.items() if key not in faulty_keys(exc)}
        return structure(rest, cls, path)[0], describe_errors(exc, path)
    except (IterableValidationError, ValueError, TypeError):
        return structure(data, cls, path)
