"""The daily Slack report: a Block Kit message built from the report tables, posted or written out.

Block Kit limits (https://api.slack.com/reference/block-kit/blocks): 50 blocks per message,
section text 3000 chars, section fields 10 x 2000 chars, header text 150 chars, context 10
elements. Every list here is cut to fit, whatever the number of campaigns.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import pathlib
import tempfile
from typing import Any

import pandas as pd
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from adperf.errors import SourceError, TransientSourceError

log = logging.getLogger(__name__)

SOURCE = "slack"

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
# The fallback `text` shows in notifications; Slack allows 40k but only the first lines matter.
MAX_FALLBACK_TEXT = 1000

TOP_CAMPAIGNS = 5
MAX_ACTIONS_LISTED = 10
MAX_NAME_CHARS = 80
MAX_REASON_CHARS = 300
MAX_NOTE_CHARS = 500

# ISO 4217 currencies without minor units: "1,234,567 KRW", not "1,234,567.00 KRW".
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"}
    | {"RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"}
)

_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
_TOKEN_FIX = "set ADPERF_SLACK_TOKEN to a valid bot token (xoxb-…) with the chat:write scope"


def build_slack_message(
    *,
    day: str,
    currency: str,
    campaigns: pd.DataFrame,
    actions: pd.DataFrame,
    reconciliation: dict[str, float],
    notes: list[str],
) -> dict[str, Any]:
    """The report of one day as a Slack message: {"text": fallback, "blocks": [...]}."""
    paid = campaigns[campaigns["platform"] != "organic"]
    organic = campaigns[campaigns["platform"] == "organic"]
    spend = _sum(paid["spend"])
    paid_installs = int(_sum(paid["installs"]))
    organic_installs = int(_sum(organic["installs"]))
    revenue = _sum(paid["revenue"])
    # No LTV prediction at all (e.g. the model did not converge) is n/a, not a pROAS of 0%.
    has_pltv = bool(pd.to_numeric(paid["pltv"], errors="coerce").notna().any())
    pltv = _sum(paid["pltv"])
    cpi = spend / paid_installs if paid_installs > 0 else None
    roas = revenue / spend if spend > 0 else None
    proas = pltv / spend if spend > 0 and has_pltv else None

    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"adperf — {day}", MAX_HEADER_TEXT)},
        },
        {
            "type": "section",
            "fields": [
                _mrkdwn(text, MAX_FIELD_TEXT)
                for text in (
                    f"*Spend*\n{_money(spend, currency)}",
                    f"*Installs*\n{paid_installs:,} paid · {organic_installs:,} organic",
                    f"*CPI*\n{_money(cpi, currency)}",
                    f"*Revenue (paid cohorts)*\n{_money(revenue, currency)}",
                    f"*ROAS*\n{_ratio(roas)}",
                    f"*pROAS*\n{_ratio(proas)}",
                )
            ],
        },
        {"type": "divider"},
    ]

    ranked = paid[(paid["spend"] > 0) & paid["roas"].notna()].sort_values(
        ["roas", "spend"], ascending=[False, False], kind="stable"
    )
    top = ranked.head(TOP_CAMPAIGNS)
    rest = ranked.iloc[len(top) :]
    bottom = rest.tail(TOP_CAMPAIGNS).iloc[::-1]
    if len(ranked):
        blocks.append(
            _list_section(
                f"*Top campaigns by ROAS* ({len(ranked):,} with spend)",
                [_campaign_line(r, currency) for r in top.itertuples()],
                hidden=0,
            )
        )
    else:
        blocks.append(_text_section("*Campaigns*\nNo campaign had spend and a defined ROAS."))
    if len(bottom):
        blocks.append(
            _list_section(
                "*Bottom campaigns by ROAS*",
                [_campaign_line(r, currency) for r in bottom.itertuples()],
                hidden=0,
            )
        )

    blocks.append({"type": "divider"})
    n_hold = int((actions["action"] == "hold").sum()) if len(actions) else 0
    listed_any = False
    for action, title in (
        ("scale", ":arrow_up: *Scale*"),
        ("pause", ":double_vertical_bar: *Pause*"),
    ):
        chosen = actions[actions["action"] == action] if len(actions) else actions
        if not len(chosen):
            continue
        listed_any = True
        chosen = chosen.sort_values("spend", ascending=False, kind="stable", na_position="last")
        shown = chosen.head(MAX_ACTIONS_LISTED)
        blocks.append(
            _list_section(
                f"{title} ({len(chosen):,})",
                [_action_line(r, currency) for r in shown.itertuples()],
                hidden=len(chosen) - len(shown),
            )
        )
    if not listed_any:
        blocks.append(_text_section("*Recommended actions*\nNo scale or pause recommendations."))

    blocks.append(_quality_context(reconciliation, currency, notes, n_hold))

    n_scale = int((actions["action"] == "scale").sum()) if len(actions) else 0
    n_pause = int((actions["action"] == "pause").sum()) if len(actions) else 0
    fallback = (
        f"adperf {day}: spend {_money(spend, currency)}, {paid_installs:,} paid installs, "
        f"CPI {_money(cpi, currency)}, ROAS {_ratio(roas)}, pROAS {_ratio(proas)}; "
        f"{n_scale} to scale, {n_pause} to pause"
    )
    return {"text": _cut(fallback, MAX_FALLBACK_TEXT), "blocks": blocks[:MAX_BLOCKS]}


def post_message(
    message: dict[str, Any],
    *,
    token: str,
    channel: str,
    base_url: str | None = None,
    day: str | None = None,
) -> dict[str, str]:
    """Post a built message with slack-sdk; return {"channel", "ts"} of the posted message."""
    client = WebClient(
        token=token,
        base_url=base_url or WebClient.BASE_URL,
        # No ServerErrorRetryHandler: chat.postMessage has no idempotency key, and a 5xx may
        # come after Slack has already posted, so a retry could post the report twice.
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
    try:
        response = client.chat_postMessage(
            channel=channel, text=message["text"], blocks=message["blocks"]
        )
    except SlackApiError as exc:
        raise _classify(exc, channel=channel, day=day) from exc
    except OSError as exc:
        # urllib's URLError and timeouts, after ConnectionErrorRetryHandler's retries.
        raise TransientSourceError(
            SOURCE,
            day,
            f"could not reach Slack ({type(exc).__name__})",
            "check [slack] base_url and the network, then run the task again",
        ) from exc
    log.info("slack: posted the report for %s to %s", day or "?", response["channel"])
    return {"channel": str(response["channel"]), "ts": str(response["ts"])}


def write_outbox(message: dict[str, Any], outbox_dir: pathlib.Path, day: str) -> pathlib.Path:
    """Write the message of `day` to `<outbox_dir>/slack-<day>.json` atomically; return the path."""
    # The day names the file: refuse anything that is not a plain date (no path tricks).
    datetime.date.fromisoformat(day)
    outbox_dir.mkdir(parents=True, exist_ok=True)
    target = outbox_dir / f"slack-{day}.json"
    fd, tmp_name = tempfile.mkstemp(dir=outbox_dir, prefix=f".slack-{day}-", suffix=".tmp")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(message, f, ensure_ascii=False, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # Same directory, so os.replace is an atomic rename: readers see old or new, never half.
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _classify(exc: SlackApiError, *, channel: str, day: str | None) -> SourceError:
    """A SlackApiError as a named adperf error whose message says what to fix."""
    error = str(exc.response.get("error", "") or f"HTTP {exc.response.status_code}")
    if error in _AUTH_ERRORS:
        return SourceError(SOURCE, day, f"Slack refused the token ({error})", _TOKEN_FIX)
    if error == "channel_not_found":
        return SourceError(
            SOURCE,
            day,
            f"channel {channel!r} not found",
            "set [slack] channel to an existing channel (its id, e.g. C0123456789, is safest)",
        )
    if error == "not_in_channel":
        return SourceError(
            SOURCE,
            day,
            f"the bot is not a member of channel {channel!r}",
            f"invite the app to the channel (/invite @<app> in {channel})",
        )
    if error == "missing_scope":
        return SourceError(SOURCE, day, "the token lacks a scope", _TOKEN_FIX)
    if error == "ratelimited" or exc.response.status_code == 429:
        return TransientSourceError(
            SOURCE, day, "still rate limited after retries", "run the task again later"
        )
    return SourceError(
        SOURCE,
        day,
        f"chat.postMessage failed ({error})",
        "see https://api.slack.com/methods/chat.postMessage#errors",
    )


def _quality_context(
    reconciliation: dict[str, float], currency: str, notes: list[str], n_hold: int
) -> dict[str, Any]:
    """The data-quality footnote: unattributed revenue share, held actions, the notes."""
    total = float(reconciliation.get("total_payments", 0.0) or 0.0)
    unattributed = float(reconciliation.get("unattributed", 0.0) or 0.0)
    organic = float(reconciliation.get("organic", 0.0) or 0.0)
    share = f"{unattributed / total:.1%}" if total else "n/a"
    elements = [
        _mrkdwn(
            f"Unattributed revenue: {share} of payments ({_money(unattributed, currency)} "
            f"of {_money(total, currency)}); organic {_money(organic, currency)}"
            + (f" · {n_hold:,} held" if n_hold else "")
        )
    ]
    room = MAX_CONTEXT_ELEMENTS - len(elements)
    shown = notes if len(notes) <= room else notes[: room - 1]
    elements += [_mrkdwn(_cut(_escape(n), MAX_NOTE_CHARS)) for n in shown]
    if len(shown) < len(notes):
        elements.append(_mrkdwn(f"… and {len(notes) - len(shown):,} more notes"))
    return {"type": "context", "elements": elements}


def _list_section(title: str, lines: list[str], *, hidden: int) -> dict[str, Any]:
    """A section with a title and bullet lines, cut to Slack's section limit."""
    text = title
    for i, line in enumerate(lines):
        left = len(lines) - i + hidden
        # Keep room for the "… and N more" line that would follow a cut here.
        if len(text) + 1 + len(line) + len(_more(left)) + 1 > MAX_SECTION_TEXT:
            return _text_section(f"{text}\n{_more(left)}")
        text = f"{text}\n{line}"
    if hidden:
        text = f"{text}\n{_more(hidden)}"
    return _text_section(text)


def _more(n: int) -> str:
    return f"… and {n:,} more"


def _campaign_line(row: Any, currency: str) -> str:
    name = _escape(_cut(_label(row.campaign_name, row.campaign_id), MAX_NAME_CHARS))
    return (
        f"• *{name}* ({row.platform}) — ROAS {_ratio(row.roas)} · pROAS {_ratio(row.proas)} · "
        f"spend {_money(row.spend, currency)} · {int(_num(row.installs) or 0):,} installs"
    )


def _action_line(row: Any, currency: str) -> str:
    name = _escape(_cut(_label(row.object_name, row.object_id), MAX_NAME_CHARS))
    reason = _escape(_cut(_label(row.reason, "no reason given"), MAX_REASON_CHARS))
    return (
        f"• *{name}* ({row.platform} {row.level}, spend {_money(row.spend, currency)}, "
        f"ROAS {_ratio(row.roas)}) — {reason}"
    )


def _label(value: Any, fallback: Any) -> str:
    """A display name: the value, else the fallback (NaN is truthy, so test it explicitly)."""
    for candidate in (value, fallback):
        if _num_or_text(candidate):
            return str(candidate)
    return "?"


def _num_or_text(value: Any) -> bool:
    """Whether a cell holds something to show (not None, NaN or the empty string)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value) != ""


def _text_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(_cut(text, MAX_SECTION_TEXT))}


def _mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> float | None:
    """A number, or None when missing/NaN (an undefined ratio, not zero)."""
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _sum(column: pd.Series) -> float:
    return float(pd.to_numeric(column, errors="coerce").sum(skipna=True))


def _money(amount: Any, currency: str) -> str:
    number = _num(amount)
    if number is None:
        return "n/a"
    decimals = 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2
    return f"{number:,.{decimals}f} {currency}"


def _ratio(value: Any) -> str:
    """ROAS-style ratio as a percentage (1.52 -> 152%)."""
    number = _num(value)
    return "n/a" if number is None else f"{number:.0%}"
