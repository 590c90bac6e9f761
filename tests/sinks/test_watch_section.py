"""The watch section of the Slack message and the HTML page: every finding's line, escaped,
cut to Slack's limits, and a plain 'nothing' line on a quiet day."""

from __future__ import annotations

from typing import Any

import pandas as pd

from adperf.sinks.html import build_html_report
from adperf.sinks.slack import MAX_SECTION_TEXT, MAX_WATCH_LISTED, build_slack_message
from adperf.transform.watch import WATCH_COLUMNS

DAY = "2026-11-27"
RECON = {"total_payments": 100.0, "attributed": 80.0, "organic": 10.0, "unattributed": 10.0}
CAMPAIGNS = pd.DataFrame(
    [{"date": DAY, "platform": "facebook", "campaign_id": "1", "campaign_name": "One",
      "spend": 100.0, "impressions": 10, "clicks": 1, "installs": 10, "cpi": 10.0, "payers": 1,
      "revenue": 50.0, "roas": 0.5, "assisted_revenue": 0.0, "pltv": 0.0, "proas": 0.0}]
)  # fmt: skip
ACTIONS = pd.DataFrame(columns=["action", "spend"])


def _findings(n: int) -> pd.DataFrame:
    rows = [
        {"date": DAY, "check": "cpi", "platform": "facebook", "campaign_id": str(k),
         "campaign_name": f"C{k}", "value": 8.0, "baseline": 4.0, "spread": 0.4, "z": 10.0,
         "change": 1.0, "message": f"<C{k}> (facebook): CPI 8.00 USD vs 4.00 USD usual"}
        for k in range(n)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=WATCH_COLUMNS)


def _message(watch: pd.DataFrame | None) -> dict[str, Any]:
    return build_slack_message(
        day=DAY, currency="USD", campaigns=CAMPAIGNS, actions=ACTIONS, reconciliation=RECON,
        notes=[], watch=watch,
    )  # fmt: skip


def _watch_blocks(message: dict[str, Any]) -> list[str]:
    texts = [b.get("text", {}).get("text", "") for b in message["blocks"]]
    return [t for t in texts if "*Watch*" in t]


def test_each_finding_is_a_line_escaped_and_cut_to_the_limits() -> None:
    (text,) = _watch_blocks(_message(_findings(25)))
    assert text.startswith(":eyes: *Watch* (25 beyond normal noise)")
    assert "• &lt;C0&gt; (facebook): CPI 8.00 USD vs 4.00 USD usual" in text
    assert text.count("•") == MAX_WATCH_LISTED and text.endswith("… and 15 more")
    assert len(text) <= MAX_SECTION_TEXT


def test_a_quiet_day_says_so_and_no_watch_leaves_the_section_out() -> None:
    assert _watch_blocks(_message(_findings(0))) == [
        ":eyes: *Watch*\nNothing beyond normal day-to-day noise."
    ]
    assert _watch_blocks(_message(None)) == []


def test_the_page_lists_every_finding() -> None:
    page = build_html_report(
        day=DAY, currency="USD", totals=[], comparison=("2026-11-26", "2026-11-20"),
        campaigns=CAMPAIGNS, actions=ACTIONS, notes=[], png=b"", watch=_findings(12),
    )  # fmt: skip
    assert page.count('<li data-check="cpi">') == 12
    assert "&lt;C11&gt; (facebook)" in page and "<C11>" not in page
    quiet = build_html_report(
        day=DAY, currency="USD", totals=[], comparison=("2026-11-26", "2026-11-20"),
        campaigns=CAMPAIGNS, actions=ACTIONS, notes=[], png=b"", watch=_findings(0),
    )  # fmt: skip
    assert "Nothing beyond normal day-to-day noise." in quiet
