"""How config problems are worded: one line each, at the key path of what is wrong.

``$.upstreams.chatgpt.url: not a URL ("htp:/x")``, ``$.server.prot: unknown key (did
you mean 'port'?)``.  cattrs' errors are flattened here, a plugin's own problems are
put under its key path, and a variable that cannot be interpolated is reported once.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from gateway.interpolate import InterpolationProblem

# cattrs writes table keys as ``['key']``; the config's own paths read ``.key``.
_TABLE_KEY = re.compile(r"\['([^']*)'\]")
# How `describe_errors` carries unknown keys through cattrs' flattening, one line each.
_UNKNOWN_KEYS = "\0unknown keys\0"
# A problem that starts with its own key path, maybe with a note: ``keys.a.sha256: bad``,
# ``rules[0] ('fast'): bad``.
_RELATIVE_PATH = re.compile(
    r"([A-Za-z_][\w-]*(?:\.[^\s:.\[]+|\[\d+\])*(?: \([^)]*\))?): (.*)", re.S
)


def unknown_key(path: str, key: str, known: list[str]) -> str:
    """The problem line for an unknown ``key`` of the table at ``path``, with a suggestion."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or 'none'}"
    return f"{path}.{key}: unknown key ({hint})"


def join_path(path: str, problem: str) -> str:
    """``problem`` under ``path``: ``"keys.a: bad"`` becomes ``"$.plugins.auth.keys.a: bad"``."""
    relative = _RELATIVE_PATH.fullmatch(problem)
    if relative is None:
        return f"{path}: {problem}"
    return f"{path}.{relative.group(1)}: {relative.group(2)}"


def drop_consequences(problems: list[str]) -> list[str]:
    """``problems`` less those at the key path of a variable that could not be interpolated.

    The raw ``${...}`` text left there fails every later check too: one line is enough.
    """
    unresolved = [p.partition(": ")[0] for p in problems if isinstance(p, InterpolationProblem)]

    def consequence(problem: str) -> bool:
        where = problem.partition(": ")[0]
        return not isinstance(problem, InterpolationProblem) and any(
            where == path or where.startswith((path + ".", path + "[")) for path in unresolved
        )

    return [p for p in problems if not consequence(p)]


def describe_errors(exc: BaseException, path: str = "$") -> list[str]:
    """Flatten a cattrs error into ``"$.key.path: problem"`` lines, one per problem."""

    def format_exception(error: BaseException, type_: Any) -> str:
        if isinstance(error, ForbiddenExtraKeysError):
            known = [field.name for field in attrs.fields(error.cl)]
            lines = [unknown_key("", key, known) for key in sorted(error.extra_fields)]
            return _UNKNOWN_KEYS + "\n".join(lines)
        if isinstance(error, KeyError):
            return "required key is missing"
        if getattr(type_, "__origin__", None) is Literal:
            return f"must be one of {', '.join(repr(a) for a in type_.__args__)}"
        if isinstance(error, ValueError | TypeError) and str(error):
            return str(error)
        return f"invalid value for {getattr(type_, '__name__', type_)}"

    if not isinstance(exc, ClassValidationError | IterableValidationError):
        return [join_path(path, str(exc))]
    lines = []
    for line in cattrs.transform_error(exc, path=path, format_exception=format_exception):
        message, _, where = line.rpartition(" @ ")
        where = _TABLE_KEY.sub(r".\1", where)
        if message.startswith(_UNKNOWN_KEYS):
            lines += [where + unknown for unknown in message[len(_UNKNOWN_KEYS) :].split("\n")]
        else:
            lines.append(f"{where}: {message}")
    return lines


def faulty_keys(exc: ClassValidationError) -> set[str]:
    """The keys of a table that made its structuring fail: the invalid and the unknown."""
    with_notes, others = exc.group_exceptions()
    faulty = {note.name for _, note in with_notes}
    for error in others:
        if isinstance(error, ForbiddenExtraKeysError):
            faulty |= set(error.extra_fields)
    return faulty
