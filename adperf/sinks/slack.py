"""The daily Slack report: a Block Kit message built from the report tables, posted or written out.

Block Kit limits (https://api.slack.com/reference/block-kit/blocks): 50 blocks per message,
section text 3000 chars, section fields 10 x 2000 chars, header text 150 chars, context 10
elements. Every list here is cut to fit, whatever the number of campaigns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from adperf.errors import SourceError, TransientSourceError
from adperf.sinks.summary import (
    build_total_rows,
    build_totals,
    comparison_days,
)
from adperf.sinks.summary import money as _money
from adperf.sinks.summary import num as _num
from adperf.sinks.summary import ratio as _ratio

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

_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
_TOKEN_FIX = (
    "set ADPERF_SLACK_TOKEN to a valid bot token (xoxb-…) with the chat:write and files:write "
    "scopes"
)


def build_slack_message(
    *,
    day: str,
    currency: str,
    campaigns: pd.DataFrame,
    actions: pd.DataFrame,
    reconciliation: dict[str, float],
    notes: list[str],
    cohorts: pd.DataFrame | None = None,
    day_before: dict[str, Any] | None = None,
    week_before: dict[str, Any] | None = None,
    attachment: str | None = None,
) -> dict[str, Any]:
    """The report of one day as a Slack message: {"text": fallback, "blocks": [...]}.

    `day_before` / `week_before` are `build_totals` of the day before and of the same weekday a
    week before (None: not in the warehouse); `attachment` names the CSV with every campaign.
    """
    cohorts = _empty_cohorts() if cohorts is None else cohorts
    totals = build_totals(campaigns, cohorts, day)
    rows = {r.key: r for r in build_total_rows(totals, day_before, week_before, currency)}
    d1, d7 = comparison_days(day)
    weekday = dt.date.fromisoformat(day).strftime("%a")

    def field(key: str, extra: str = "") -> dict[str, str]:
        r = rows[key]
        return _mrkdwn(
            f"*{r.label}*\n{r.value}{extra}\n{r.day_change} d/d · {r.week_change} w/w",
            MAX_FIELD_TEXT,
        )

    organic = int(totals["organic_installs"])
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"adperf — {day} ({weekday})", MAX_HEADER_TEXT),
            },
        },
        {
            "type": "section",
            "fields": [
                field("spend"),
                field("installs", f" · {organic:,} organic"),
                field("cpi"),
                field("revenue", f" · ROAS {_ratio(totals['roas'])}"),
                field("roas_d0"),
                field("roas_d7"),
                field("proas"),
            ],
        },
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    f"d/d: vs {d1} · w/w: vs {d7} (same weekday) · ROAS D0: the cohort installed "
                    f"on {day}, D7: the cohort of {d7}, as of {day} · pp: percentage points"
                )
            ],
        },
        {"type": "divider"},
    ]

    paid = campaigns[campaigns["platform"] != "organic"]
    ranked = paid[(paid["spend"] > 0) & paid["roas"].notna()].sort_values(
        ["roas", "spend"], ascending=[False, False], kind="stable"
    )
    top = ranked.head(TOP_CAMPAIGNS)
    rest = ranked.iloc[len(top) :]
    bottom = rest.tail(TOP_CAMPAIGNS).iloc[::-1]
    if len(ranked):
        blocks.append(
            _list_section(
                f"*Best campaigns by ROAS* ({len(ranked):,} with spend)",
                [_campaign_line(r, currency) for r in top.itertuples()],
                hidden=0,
            )
        )
    else:
        blocks.append(_text_section("*Campaigns*\nNo campaign had spend and a defined ROAS."))
    if len(bottom):
        blocks.append(
            _list_section(
                "*Worst campaigns by ROAS*",
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

    if attachment:
        shown_campaigns = len(top) + len(bottom)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _mrkdwn(
                        f":page_facing_up: All {len(campaigns):,} campaigns and "
                        f"{len(actions):,} actions ({shown_campaigns:,} shown here): "
                        f"`{_escape(attachment)}` and the chart in this message's thread"
                    )
                ],
            }
        )
    blocks.append(_quality_context(reconciliation, currency, notes, n_hold))

    n_scale = int((actions["action"] == "scale").sum()) if len(actions) else 0
    n_pause = int((actions["action"] == "pause").sum()) if len(actions) else 0
    fallback = (
        f"adperf {day}: spend {_money(totals['spend'], currency)} ({rows['spend'].day_change} "
        f"d/d), {int(totals['installs'] or 0):,} paid installs, "
        f"CPI {_money(totals['cpi'], currency)}, ROAS D0 {_ratio(totals['roas_d0'])}, "
        f"D7 {_ratio(totals['roas_d7'])}, pROAS {_ratio(totals['proas'])}; "
        f"{n_scale} to scale, {n_pause} to pause"
    )
    return {"text": _cut(fallback, MAX_FALLBACK_TEXT), "blocks": blocks[:MAX_BLOCKS]}


def build_campaign_csv(campaigns: pd.DataFrame, actions: pd.DataFrame) -> bytes:
    """Every campaign of the day with its recommended action, as UTF-8 CSV (the long tail)."""
    columns = ["platform", "campaign_id", "action", "action_reason"]
    if len(actions):
        keyed = actions.loc[
            actions["level"] == "campaign", ["platform", "object_id", "action", "reason"]
        ]
        recommended = keyed.set_axis(columns, axis=1)
    else:
        recommended = pd.DataFrame(columns=columns)
    out = campaigns.merge(recommended, on=["platform", "campaign_id"], how="left")
    out = out.sort_values(["platform", "spend"], ascending=[True, False], kind="stable")
    # Ids stay text; utf-8-sig so spreadsheet programs read Korean names right.
    return out.to_csv(index=False).encode("utf-8-sig")


def make_client(token: str, base_url: str | None = None) -> WebClient:
    """A WebClient that retries rate limits and dropped connections, never 5xx answers."""
    return WebClient(
        token=token,
        base_url=base_url or WebClient.BASE_URL,
        # No ServerErrorRetryHandler: chat.postMessage has no idempotency key, and a 5xx may
        # come after Slack has already posted, so a retry could post the report twice. A 429 is
        # answered before anything is done (https://api.slack.com/apis/rate-limits), and the
        # connection handler retries only errors raised before an answer arrived.
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def post_message(
    message: dict[str, Any],
    *,
    token: str,
    channel: str,
    base_url: str | None = None,
    day: str | None = None,
) -> dict[str, str]:
    """Post a built message with slack-sdk; return {"channel", "ts"} of the posted message."""
    client = make_client(token, base_url)
    with _errors("chat.postMessage", channel, day):
        response = client.chat_postMessage(
            channel=channel, text=message["text"], blocks=message["blocks"]
        )
    log.info("slack: posted the report for %s to %s", day or "?", response["channel"])
    return {"channel": str(response["channel"]), "ts": str(response["ts"])}


def update_message(
    message: dict[str, Any],
    *,
    token: str,
    channel: str,
    ts: str,
    base_url: str | None = None,
    day: str | None = None,
) -> dict[str, str]:
    """Replace the text and blocks of the posted message `ts` (https://api.slack.com/methods/chat.update)."""
    client = make_client(token, base_url)
    with _errors("chat.update", channel, day):
        response = client.chat_update(
            channel=channel, ts=ts, text=message["text"], blocks=message["blocks"]
        )
    log.info("slack: updated the report for %s in %s", day or "?", response["channel"])
    return {"channel": str(response["channel"]), "ts": str(response["ts"])}


def upload_files(
    files: list[tuple[str, bytes, str]],
    *,
    token: str,
    channel: str,
    thread_ts: str,
    base_url: str | None = None,
    day: str | None = None,
    comment: str | None = None,
) -> list[str]:
    """Upload (filename, content, title) files into the thread of `thread_ts`; return file ids.

    files_upload_v2 is Slack's external upload flow: files.getUploadURLExternal, a POST of the
    bytes to the returned URL, files.completeUploadExternal to share them in the thread
    (https://api.slack.com/messaging/files#uploading_files).
    """
    client = make_client(token, base_url)
    with _errors("files_upload_v2", channel, day):
        response = client.files_upload_v2(
            file_uploads=[
                {"filename": name, "content": content, "title": title}
                for name, content, title in files
            ],
            channel=channel,
            thread_ts=thread_ts,
            initial_comment=comment,
        )
    return [str(f["id"]) for f in response.get("files") or []]


def publish_report(
    message: dict[str, Any],
    files: list[tuple[str, bytes, str]],
    *,
    token: str,
    channel: str,
    base_url: str | None,
    day: str,
    content_hash: str,
    previous: dict[str, Any] | None,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Deliver the day's report to Slack exactly once; return the marker that `save` stored.

    The marker of the previous run decides: no post yet → chat.postMessage; a post whose
    content hash differs (the day was re-run on restated numbers) → chat.update of the same
    `ts`; the same content → nothing. `save` is called as soon as the post's `ts` is known, so
    a failure after posting (e.g. in the file upload) never leads to a second post; the marker
    says `complete: false` until the chart and CSV are in the thread.
    """
    state: dict[str, Any] | None = None
    if previous and previous.get("delivery") == "slack" and previous.get("ts"):
        state = dict(previous)
    if state is not None and state.get("content_hash") != content_hash:
        try:
            update_message(
                message,
                token=token,
                channel=str(state["channel"]),
                ts=str(state["ts"]),
                base_url=base_url,
                day=day,
            )
            state.update(content_hash=content_hash, complete=False)
            state["updates"] = int(state.get("updates", 0)) + 1
            save(state)
        except MessageGone:
            # Someone deleted the message: the report is posted again, not lost.
            log.warning("slack: the report message of %s is gone; posting it again", day)
            state = None
    if state is None:
        posted = post_message(message, token=token, channel=channel, base_url=base_url, day=day)
        state = {
            "date": day,
            "delivery": "slack",
            **posted,
            "content_hash": content_hash,
            "files_hash": None,
            "complete": False,
            "updates": 0,
        }
        save(state)
    if files and state.get("files_hash") != content_hash:
        comment = (
            None
            if state.get("files_hash") is None
            else f"The numbers of {day} changed (restated data): the message above is updated; "
            "here are the new chart and CSV."
        )
        state["file_ids"] = upload_files(
            files,
            token=token,
            channel=str(state["channel"]),
            thread_ts=str(state["ts"]),
            base_url=base_url,
            day=day,
            comment=comment,
        )
        state["files_hash"] = content_hash
    state["complete"] = True
    save(state)
    return state


def write_outbox(
    message: dict[str, Any],
    outbox_dir: pathlib.Path,
    day: str,
    files: dict[str, bytes] | None = None,
) -> list[pathlib.Path]:
    """Write the day's files, then `slack-<day>.json` last, each atomically; return the paths.

    `files` maps a plain file name (what would be uploaded to the thread) to its content; the
    JSON comes last, so its presence means the day's outbox is complete.
    """
    # The day names the files: refuse anything that is not a plain date (no path tricks).
    dt.date.fromisoformat(day)
    outbox_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in (files or {}).items():
        if pathlib.PurePath(name).name != name or name.startswith("."):
            raise ValueError(f"outbox file name must be a plain name, got {name!r}")
        paths.append(_atomic_write(outbox_dir / name, content))
    text = json.dumps(message, ensure_ascii=False, indent=2) + "\n"
    paths.append(_atomic_write(outbox_dir / f"slack-{day}.json", text.encode("utf-8")))
    return paths


def _atomic_write(target: pathlib.Path, content: bytes) -> pathlib.Path:
    """Write `content` to `target` through a temp file in the same folder and a rename."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        # Same directory, so os.replace is an atomic rename: readers see old or new, never half.
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class MessageGone(SourceError):
    """chat.update found no message at the stored ts (deleted in Slack)."""


@contextlib.contextmanager
def _errors(method: str, channel: str, day: str | None) -> Iterator[None]:
    """slack-sdk's errors as named adperf errors that say what to fix."""
    try:
        yield
    except SlackApiError as exc:
        raise _classify(exc, method=method, channel=channel, day=day) from exc
    except SlackRequestError as exc:
        # files_upload_v2's POST of the bytes answered non-200 (the message holds no token).
        raise TransientSourceError(
            SOURCE, day, f"{method}: the file upload failed", "run the task again"
        ) from exc
    except OSError as exc:
        # urllib's URLError and timeouts, after ConnectionErrorRetryHandler's retries.
        raise TransientSourceError(
            SOURCE,
            day,
            f"could not reach Slack ({type(exc).__name__})",
            "check [slack] base_url and the network, then run the task again",
        ) from exc


def _classify(exc: SlackApiError, *, method: str, channel: str, day: str | None) -> SourceError:
    """A SlackApiError as a named adperf error whose message says what to fix."""
    error = str(exc.response.get("error", "") or f"HTTP {exc.response.status_code}")
    if error == "message_not_found":
        return MessageGone(SOURCE, day, "the message to update is gone", "none: it is reposted")
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
        needed = exc.response.get("needed") or "chat:write, files:write"
        return SourceError(
            SOURCE, day, f"the token lacks a scope ({needed})", f"add the scope: {_TOKEN_FIX}"
        )
    if error == "ratelimited" or exc.response.status_code == 429:
        return TransientSourceError(
            SOURCE, day, "still rate limited after retries", "run the task again later"
        )
    return SourceError(
        SOURCE,
        day,
        f"{method} failed ({error})",
        f"see https://api.slack.com/methods/{method.replace('_v2', '')}#errors",
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
        f"• *{name}* ({row.platform}) — ROAS {_ratio(row.roas)} · pROAS {_proas(row)} · "
        f"spend {_money(row.spend, currency)} · {int(_num(row.installs) or 0):,} installs"
    )


def _proas(row: Any) -> str:
    """pROAS with its interval when the LTV model gives one ('180% [150–210%]')."""
    low, high = getattr(row, "proas_low", None), getattr(row, "proas_high", None)
    if _num(row.proas) is None or _num(low) is None or _num(high) is None:
        return _ratio(row.proas)
    return f"{_ratio(row.proas)} [{_ratio(low)[:-1]}–{_ratio(high)}]"


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


def _empty_cohorts() -> pd.DataFrame:
    return pd.DataFrame(columns=["as_of", "platform", "age_days", "revenue", "spend"])
