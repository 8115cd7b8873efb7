"""The admin page: the dashboard document (`dashboard`) rendered as one HTML page on the server.

No script and no external resource: the style is inline, allowed by its hash in the
Content-Security-Policy (`CSP`), the charts are inline SVG, and the page refreshes
itself with ``<meta http-equiv="refresh">``.  Every value is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from . import charts
from .dashboard import NO_TEAM, chart_series

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .5em}
table{border-collapse:collapse;background:#fff;margin-bottom:.5em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f0f0}
.muted{color:#777}.state-usable,.state-healthy{color:#08672e}
.state-cooling,.state-cooling_down{color:#8a5a00}.state-set_aside,.state-disabled{color:#b00020}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0;background:#fff;
border:1px solid #ddd;padding:.5em}.legend{list-style:none;padding:0;display:flex;gap:1em}
""".strip()

#: The Content-Security-Policy of every admin answer: nothing but the page's own style.
CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def render_page(document: Mapping[str, Any], *, refresh: int, api_path: str) -> str:
    """The page for ``document``; it reloads itself every ``refresh`` seconds (0: never)."""
    day, week = document["charts"]["day"], document["charts"]["week"]
    teams = sorted(set(week["requests"]) | set(day["requests"]))
    colours = charts.team_colours(teams)
    chart_figures = [
        (day, "requests", "Requests per hour, last 24 hours"),
        (day, "tokens", "Tokens per hour, last 24 hours"),
        (week, "requests", "Requests per hour, last 7 days"),
        (week, "tokens", "Tokens per hour, last 7 days"),
    ]
    figures = "".join(
        f"<figure><figcaption>{escape(title)}</figcaption>"
        + charts.stacked_bars(
            chart_series(data, measure), title=title, unit=measure, colours=colours
        )
        + "</figure>"
        for data, measure, title in chart_figures
    )
    refresh_meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    body = [
        "<h1>Gateway usage</h1>",
        f'<p class="muted">As of <time id="generated-at">{escape(document["generated_at"])}'
        f"</time> UTC{f', refreshed every {refresh} s' if refresh > 0 else ''}. "
        f'The same data as JSON: <a href="{escape(api_path)}">{escape(api_path)}</a>.</p>',
        _overview(document["overview"]),
        "<h2>Keys</h2>",
        _usage_table(document["keys"], "key", with_team=True),
        "<h2>Teams</h2>",
        _usage_table(document["teams"], "team", with_team=False),
        "<h2>Requests and tokens per team</h2>",
        f'<div class="charts" id="charts">{figures}</div>',
        charts.legend(colours),
        "<h2>Upstream credentials</h2>",
        _states(document["credentials"], "credential"),
        "<h2>Outbound proxies</h2>",
        _states(document["proxies"], "proxy"),
        "<h2>Latest errors</h2>",
        _errors(document["errors"]),
        "<h2>Routes</h2>",
        _routes(document["routes"]),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh_meta}<title>Gateway usage</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )


def _table(headers: Sequence[str], rows: Iterable[str], table_id: str, empty: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">{escape(empty)}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any, css: str = "") -> str:
    shown = "" if value is None else str(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    classes = " ".join(c for c in (css, "n" if numeric else "") if c)
    return f'<td class="{classes}">{escape(shown)}</td>' if classes else f"<td>{escape(shown)}</td>"


def _overview(overview: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for period, label in (("last_hour", "Last hour"), ("last_day", "Last 24 hours")):
        o = overview[period]
        rows.append(
            f'<tr data-period="{period}"><th>{label}</th>'
            + _cell(o["requests"], "requests")
            + _cell(o["errors"], "errors")
            + _cell(o["avg_duration_ms"], "avg")
            + _cell(o["p95_duration_ms"], "p95")
            + _cell(o["avg_ttfb_ms"], "ttfb")
            + "</tr>"
        )
    headers = ["", "requests", "errors", "mean ms", "p95 ms", "mean to first byte, ms"]
    return "<h2>Overview</h2>" + _table(headers, rows, "overview", "")


def _usage_table(entries: Sequence[Mapping[str, Any]], kind: str, *, with_team: bool) -> str:
    headers = [kind, *(["team"] if with_team else [])]
    headers += ["requests today", "tokens today", "requests this month", "tokens this month"]
    headers += ["errors this month", "quotas left"]
    rows = []
    for entry in entries:
        team = _cell(entry.get("team", NO_TEAM), "team") if with_team else ""
        rows.append(
            f'<tr data-{kind}="{escape(entry["name"])}"><th>{escape(entry["name"])}</th>{team}'
            + _cell(entry["today"]["requests"], "today-requests")
            + _cell(entry["today"]["tokens"], "today-tokens")
            + _cell(entry["month"]["requests"], "month-requests")
            + _cell(entry["month"]["tokens"], "month-tokens")
            + _cell(entry["month"]["errors"], "month-errors")
            + f'<td class="quotas">{_quotas(entry["quotas"])}</td></tr>'
        )
    return _table(headers, rows, f"{kind}s", f"no {kind} used the gateway this month")


def _quotas(quotas: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for q in quotas:
        unit = q.get("unit", "")
        resets = f", resets {q['resets_at']}" if q.get("resets_at") else ""
        lines.append(
            f'<div data-rule="{escape(str(q.get("rule", "")))}">{escape(str(q.get("rule", "")))}: '
            f"{escape(str(q.get('remaining')))} of {escape(str(q.get('limit')))} {escape(unit)} "
            f"left this {escape(str(q.get('period', '')))}{escape(resets)}</div>"
        )
    return "".join(lines) or '<span class="muted">none</span>'


def _states(entries: Sequence[Mapping[str, Any]], kind: str) -> str:
    headers = ["upstream", kind, "state", "until", "why"]
    rows = []
    for e in entries:
        state = str(e.get("state", ""))
        css = "state-" + "".join(c if c.isalnum() else "_" for c in state)
        rows.append(
            f'<tr data-{kind}="{escape(str(e.get("name", "")))}">'
            + _cell(e.get("upstream"))
            + _cell(e.get("name"))
            + _cell(state, f"state {css}")
            + _cell(e.get("until"))
            + _cell(e.get("reason"))
            + "</tr>"
        )
    return _table(headers, rows, f"{kind}s", f"no {kind} is configured")


def _errors(errors: Sequence[Mapping[str, Any]]) -> str:
    headers = ["time", "request id", "key", "team", "route", "model", "credential", "status"]
    headers.append("error")
    columns = ("time", "request_id", "key_name", "team", "route", "model", "credential", "status")
    rows = (
        "<tr>" + "".join(_cell(e.get(c)) for c in columns) + _cell(e.get("error_code")) + "</tr>"
        for e in errors
    )
    return _table(headers, rows, "errors", "no error recorded")


def _routes(routes: Sequence[Mapping[str, Any]]) -> str:
    headers = ["route", "methods", "path", "goes to", "pipeline"]
    rows = (
        f'<tr data-route="{escape(str(r["name"]))}">'
        + _cell(r["name"])
        + _cell(r["methods"])
        + _cell(r["path"])
        + _cell(r["target"])
        + _cell(r["pipeline"])
        + "</tr>"
        for r in routes
    )
    return _table(headers, rows, "routes", "no route")
