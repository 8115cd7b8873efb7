"""Reading what the login pages say: the ``state`` field, the ``#prompt-alert``, a reason.

Auth0's pages are read with the standard library's `html.parser`, which copes
with attribute order, quoting and unclosed tags; no new dependency is needed.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

#: The longest upstream reason quoted back to the client.
MAX_REASON = 300
# Elements without an end tag: they must not count as nesting.
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_SPACES = re.compile(r"\s+")


class _PageReader(HTMLParser):
    """Collects the first ``<input name="state">`` value and the ``#prompt-alert`` text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.state: str | None = None
        self.alert: list[str] | None = None
        self._alert_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "input" and fields.get("name") == "state" and self.state is None:
            self.state = fields.get("value") or None
        if self._alert_depth:
            if tag not in _VOID:
                self._alert_depth += 1
        elif fields.get("id") == "prompt-alert" and self.alert is None:
            self.alert = []
            self._alert_depth = 0 if tag in _VOID else 1

    def handle_endtag(self, tag: str) -> None:
        if self._alert_depth and tag not in _VOID:
            self._alert_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._alert_depth and self.alert is not None:
            self.alert.append(data)


def _read(page: str) -> _PageReader:
    reader = _PageReader()
    reader.feed(page)
    reader.close()
    return reader


def form_state(page: str) -> str | None:
    """The value of the page's ``<input name="state">``, if it has one."""
    return _read(page).state


def prompt_alert(page: str) -> str | None:
    """The text of the page's ``#prompt-alert`` element, whitespace collapsed."""
    alert = _read(page).alert
    return tidy("".join(alert)) if alert else None


def tidy(text: str) -> str | None:
    """``text`` on one line and at most `MAX_REASON` characters; ``None`` when empty."""
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1] + "…"
    return text or None


def upstream_reason(body: bytes, content_type: str) -> str | None:
    """Why the upstream refused, as it said it: a JSON ``detail``/``error``/``message``,
    a page's ``#prompt-alert``, or a short plain-text body."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return _json_reason(data)
    if "html" in content_type:
        return prompt_alert(text)
    if content_type.startswith("text/plain"):
        return tidy(text)
    return None


def _json_reason(data: object) -> str | None:
    if isinstance(data, str):
        return tidy(data)
    if not isinstance(data, dict):
        return None
    for key in ("detail", "error_description", "error", "message"):
        value = data.get(key)
        reason = _json_reason(value) if isinstance(value, dict | str) else None
        if reason:
            return reason
    return None
