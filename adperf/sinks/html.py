"""The report as one self-contained HTML page (chart embedded base64), for people without Slack."""

from __future__ import annotations

import base64
import html
from typing import Any

import pandas as pd

from adperf.sinks.summary import TotalRow, money, num, odds, ratio

_LOWER_IS_BETTER = frozenset({"cpi"})

_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Noto Sans KR", sans-serif;
       margin: 2em auto; max-width: 1000px; color: #1d1c1d; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #007a5a; } .down { color: #c01343; } .muted { color: #616061; }
img { max-width: 100%; border: 1px solid #eee; }
.scale { color: #007a5a; font-weight: bold; } .pause { color: #c01343; font-weight: bold; }
"""


def build_html_report(
    *,
    day: str,
    currency: str,
    totals: list[TotalRow],
    comparison: tuple[str, str],
    campaigns: pd.DataFrame,
    actions: pd.DataFrame,
    notes: list[str],
    png: bytes,
    accounts_line: str | None = None,
    watch: pd.DataFrame | None = None,
    follow_ups: list[str] | None = None,
) -> str:
    """The day's report page: totals with changes, chart, actions, notes, every campaign;
    `accounts_line` says which ad accounts keep days of another zone."""
    d1, d7 = comparison
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>adperf — {_e(day)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>adperf — {_e(day)}</h1>",
        # Written beside this page by the Dashboard task (adperf.sinks.dashboard).
        '<p><a href="dashboard.html">Interactive dashboard</a>: trends, cohort heatmap, filters '
        "by platform, campaign, country and OS.</p>",
        f'<p class="muted">Amounts in {_e(currency)}. d/d: vs {_e(d1)}; w/w: vs {_e(d7)} '
        "(same weekday). ROAS changes are in percentage points (pp).</p>",
        f'<p class="muted" id="account-days">{_e(accounts_line)}</p>' if accounts_line else "",
        "<h2>Totals</h2>",
        _table(
            ["", "value", "d/d", "w/w"],
            [
                [r.label, r.value, _delta(r.day_change, r.key), _delta(r.week_change, r.key)]
                for r in totals
            ],
            numeric={1, 2, 3},
            raw={2, 3},
        ),
        *([] if watch is None else ["<h2>Watch</h2>", _watch(watch)]),
        "<h2>Chart</h2>",
        f'<img alt="daily spend and ROAS per platform; cohort ROAS curves" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">',
        "<h2>Recommended actions</h2>",
        _actions(actions, currency),
        *(['<h2 id="follow-ups">Did it work?</h2>', _follow_ups(follow_ups)] if follow_ups else []),
        "<h2>Data quality</h2>",
        "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
        if notes
        else "<p>No data-quality notes.</p>",
        f"<h2>All campaigns ({len(campaigns):,})</h2>",
        _campaigns(campaigns, currency),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _watch(watch: pd.DataFrame) -> str:
    """What changed beyond normal day-to-day noise (adperf.transform.watch), one line each."""
    if not len(watch):
        return '<p id="watch">Nothing beyond normal day-to-day noise.</p>'
    items = "".join(
        f'<li data-check="{_e(str(r.check))}">{_e(str(r.message))}</li>' for r in watch.itertuples()
    )
    return f'<ul id="watch">{items}</ul>'


def _actions(actions: pd.DataFrame, currency: str) -> str:
    acted = ["scale", "pause", "unscale", "expand"]
    chosen = actions[actions["action"].isin(acted)] if len(actions) else actions
    held = int((actions["action"] == "hold").sum()) if len(actions) else 0
    if not len(chosen):
        return f"<p>No scale or pause recommendations ({held:,} held).</p>"
    chosen = chosen.sort_values(["action", "spend"], ascending=[False, False], kind="stable")
    rows = [
        [
            f'<span class="{_e(str(r.action))}">{_e(str(r.action))}</span>',
            _e(_text(r.object_name, r.object_id)),
            _e(f"{r.platform} {r.level}"),
            _e(money(r.spend, currency)),
            _e(ratio(r.roas)),
            _e(ratio(r.proas)),
            _e(odds(getattr(r, "p_above", None), getattr(r, "p_below", None))),
            _e(_text(r.reason, "")),
        ]
        for r in chosen.itertuples()
    ]
    table = _table(
        ["action", "object", "level", "spend", "ROAS", "pROAS", "risk", "reason"],
        rows,
        numeric={3, 4, 5},
        raw=set(range(8)),
    )
    return table + f'<p class="muted">{held:,} more held (not enough evidence either way).</p>'


def _follow_ups(lines: list[str]) -> str:
    """One line per applied action followed up today (adperf.transform.outcomes)."""
    return "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _campaigns(campaigns: pd.DataFrame, currency: str) -> str:
    ordered = campaigns.sort_values("spend", ascending=False, kind="stable")
    rows = [
        [
            _text(r.campaign_name, r.campaign_id),
            str(r.platform),
            money(r.spend, currency),
            f"{int(num(r.installs) or 0):,}",
            money(r.cpi, currency),
            money(r.revenue, currency),
            ratio(r.roas),
            ratio(r.proas),
        ]
        for r in ordered.itertuples()
    ]
    return _table(
        ["campaign", "platform", "spend", "installs", "CPI", "revenue", "ROAS", "pROAS"],
        rows,
        numeric={2, 3, 4, 5, 6, 7},
    )


def _table(
    head: list[str], rows: list[list[str]], *, numeric: set[int], raw: set[int] | None = None
) -> str:
    """An HTML table; cells are escaped unless their column is in `raw` (already HTML)."""
    raw = raw or set()

    def cell(tag: str, i: int, value: str) -> str:
        css = ' class="n"' if i in numeric else ""
        return f"<{tag}{css}>{value if i in raw else _e(value)}</{tag}>"

    out = ["<table><thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head))]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _delta(text: str, key: str) -> str:
    """A change, green when it is good news and red when bad (a higher CPI is bad news)."""
    rising = text.startswith("+")
    if not rising and not text.startswith("−"):
        css = "muted"
    else:
        css = "up" if rising != (key in _LOWER_IS_BETTER) else "down"
    return f'<span class="{css}">{_e(text)}</span>'


def _text(value: Any, fallback: Any) -> str:
    for candidate in (value, fallback):
        if candidate is not None and not (isinstance(candidate, float) and pd.isna(candidate)):
            if str(candidate):
                return str(candidate)
    return "?"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
