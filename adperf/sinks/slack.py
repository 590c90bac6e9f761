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
import pathlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler

from adperf import atomic
from adperf.errors import SourceError, TransientSourceError
from adperf.sinks.summary import (
    build_total_rows,
    build_totals,
    comparison_days,
    odds,
    restricted_note,
)
from adperf.sinks.summary import money as _money
from adperf.sinks.summary import num as _num
from adperf.sinks.summary import ratio as _ratio
from adperf.vocabulary import INSTALL_BUCKETS

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
MAX_WATCH_LISTED = 10
MAX_NAME_CHARS = 80
MAX_REASON_CHARS = 300
MAX_NOTE_CHARS = 500

_AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
# Looking a pending post up: conversations.history, and conversations.list to turn a channel
# name into its id (https://api.slack.com/methods/conversations.history#scopes).
_HISTORY_SCOPES = (
    "channels:history and channels:read (groups:history and groups:read for a private channel)"
)
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")
METADATA_EVENT_TYPE = "adperf_report"
# conversations.history pages (Slack allows up to 999, recommends no more than 200).
HISTORY_PAGE_SIZE = 200
MAX_HISTORY_PAGES = 50
LOOKUP_MARGIN_SECONDS = 600.0
POST_TIMEOUT_SECONDS = 30

_TOKEN_FIX = (
    "set ADPERF_SLACK_TOKEN to a valid bot token (xoxb-…) with the chat:write, files:write, "
    "channels:history and channels:read scopes (groups:* for a private channel)"
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
    accounts_line: str | None = None,
    watch: pd.DataFrame | None = None,
    follow_ups: list[str] | None = None,
) -> dict[str, Any]:
    """The report of one day as a Slack message: {"text": fallback, "blocks": [...]}.

    `day_before` / `week_before` are `build_totals` of the day before and of the same weekday a
    week before (None: not in the warehouse); `attachment` names the CSV with every campaign;
    `accounts_line` says which ad accounts keep days of another zone (adperf.account_days).
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
    ]
    if accounts_line:
        clock = ":clock3: " + _escape(accounts_line)
        blocks.append({"type": "context", "elements": [_mrkdwn(_cut(clock, MAX_NOTE_CHARS))]})
    blocks.append({"type": "divider"})
    if watch is not None:
        blocks += [_watch_section(watch), {"type": "divider"}]

    paid = campaigns[~campaigns["platform"].isin(INSTALL_BUCKETS)]
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
        ("unscale", ":arrow_down: *Scale back*"),
        ("expand", ":heavy_plus_sign: *Expand* (copy the adset)"),
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
    if follow_ups:
        blocks.append(_follow_up_section(follow_ups))

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
    restricted = restricted_note(totals, reconciliation, currency)
    blocks.append(_quality_context(reconciliation, currency, notes, n_hold, restricted))

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


def with_dashboard_link(message: dict[str, Any], link: str) -> dict[str, Any]:
    """`message` with a line linking the day's dashboard (a URL, or a file path shown as is),
    after the headline numbers; the message stays within Slack's block limit."""
    if link.startswith(("https://", "http://")):
        text = f":bar_chart: <{_escape(link)}|Dashboard>: trends, cohort heatmap, filters"
    else:
        text = (
            f":bar_chart: Dashboard (trends, cohort heatmap, filters): `{_escape(link)}` in the "
            "data root"
        )
    block = {"type": "context", "elements": [_mrkdwn(_cut(text, MAX_NOTE_CHARS))]}
    blocks = list(message["blocks"])[: MAX_BLOCKS - 1]
    at = 3 if len(blocks) >= 3 else len(blocks)  # header, totals, their legend, then the link
    return {**message, "blocks": [*blocks[:at], block, *blocks[at:]]}


def build_campaign_csv(campaigns: pd.DataFrame, actions: pd.DataFrame) -> bytes:
    """Every campaign of the day with its recommended action, as UTF-8 CSV (the long tail)."""
    columns = [
        "platform",
        "campaign_id",
        "action",
        "action_reason",
        "action_p_above",
        "action_p_below",
    ]
    if len(actions):
        # Actions of days before issue 18 have no probabilities: empty cells.
        actions = actions.copy()
        for column in ("p_above", "p_below"):
            if column not in actions.columns:
                actions[column] = pd.NA
        keyed = actions.loc[
            actions["level"] == "campaign",
            ["platform", "object_id", "action", "reason", "p_above", "p_below"],
        ]
        recommended = keyed.set_axis(columns, axis=1)
    else:
        recommended = pd.DataFrame(columns=columns)
    out = campaigns.merge(recommended, on=["platform", "campaign_id"], how="left")
    out = out.sort_values(["platform", "spend"], ascending=[True, False], kind="stable")
    # Ids stay text; utf-8-sig so spreadsheet programs read Korean names right.
    return out.to_csv(index=False).encode("utf-8-sig")


def make_client(
    token: str, base_url: str | None = None, *, retry_connections: bool = True
) -> WebClient:
    """A WebClient that retries rate limits and (for idempotent calls) dropped connections.

    Never 5xx answers, and never a dropped connection of chat.postMessage (`retry_connections`
    False): a post has no idempotency key, and a 5xx or a connection closed before the answer
    may come after Slack has posted, so slack-sdk's ConnectionErrorRetryHandler re-sending it
    is exactly the double post. `publish_report` looks such a post up instead. A 429 is
    answered before anything is done (https://api.slack.com/apis/rate-limits): always retried.
    """
    handlers: list[RetryHandler] = [RateLimitErrorRetryHandler(max_retry_count=3)]
    if retry_connections:
        handlers.insert(0, ConnectionErrorRetryHandler(max_retry_count=2))
    return WebClient(
        token=token,
        base_url=base_url or WebClient.BASE_URL,
        timeout=POST_TIMEOUT_SECONDS,
        retry_handlers=handlers,
    )


def report_key(day: str) -> str:
    """The idempotency key of a day's report, carried in the message's metadata."""
    return f"adperf-report-{day}"


def report_metadata(day: str) -> dict[str, Any]:
    """Message metadata (https://api.slack.com/metadata/using) that finds the post again."""
    return {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {"date": day, "key": report_key(day)},
    }


def post_message(
    message: dict[str, Any],
    *,
    token: str,
    channel: str,
    base_url: str | None = None,
    day: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Post a built message with slack-sdk, sent once; return {"channel", "ts"} of the post.

    Raises PostOutcomeUnknown when the request may have reached Slack without an answer (a
    dropped connection, a timeout, a 5xx): only a look-up can tell whether it was posted.
    """
    client = make_client(token, base_url, retry_connections=False)
    try:
        response = client.chat_postMessage(
            channel=channel, text=message["text"], blocks=message["blocks"], metadata=metadata
        )
    except SlackApiError as exc:
        if exc.response.status_code < 500:
            # An answer with ok false (or a 429 past the retries): Slack did not post.
            raise _classify(exc, method="chat.postMessage", channel=channel, day=day) from exc
        raise PostOutcomeUnknown(day, f"HTTP {exc.response.status_code}", repost_now=False) from exc
    except OSError as exc:
        # urllib's URLError, RemoteDisconnected (the connection closed before the answer),
        # ConnectionResetError, timeouts. A timed-out request may still be running in Slack:
        # it is not posted again in this run (see PostOutcomeUnknown).
        raise PostOutcomeUnknown(day, type(exc).__name__, repost_now=not _is_timeout(exc)) from exc
    log.info("slack: posted the report for %s to %s", day or "?", response["channel"])
    return {"channel": str(response["channel"]), "ts": str(response["ts"])}


def find_posted_report(
    *,
    token: str,
    channel: str,
    day: str,
    oldest: float,
    base_url: str | None = None,
) -> dict[str, str] | None:
    """The {"channel", "ts"} of the day's report posted since `oldest` (epoch s), or None.

    Reads conversations.history newest first with the messages' metadata
    (https://api.slack.com/methods/conversations.history, `include_all_metadata`), page by page
    through `response_metadata.next_cursor`; the report is the message whose metadata carries
    the day's key. Needs channels:history (groups:history for a private channel).
    """
    client = make_client(token, base_url)
    channel_id = resolve_channel_id(client, channel, day)
    key = report_key(day)
    found: list[str] = []
    cursor: str | None = None
    for _page in range(MAX_HISTORY_PAGES):
        with _errors("conversations.history", channel, day, history=True):
            response = client.conversations_history(
                channel=channel_id,
                oldest=f"{oldest:.6f}",
                include_all_metadata=True,
                limit=HISTORY_PAGE_SIZE,
                cursor=cursor,
            )
        for item in response.get("messages") or []:
            meta = item.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == METADATA_EVENT_TYPE and payload.get("key") == key:
                found.append(str(item["ts"]))
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not response.get("has_more") or not cursor:
            break
    else:
        raise SourceError(
            SOURCE,
            day,
            f"more than {MAX_HISTORY_PAGES * HISTORY_PAGE_SIZE:,} messages in {channel!r} since "
            "the pending post; gave up looking for it (not posting, to avoid a duplicate)",
            "check the channel for the report; delete <data_root>/slack_posts/<day>.json to post "
            "anyway",
        )
    if not found:
        return None
    if len(found) > 1:
        log.warning("slack: %d posts of the report of %s; keeping the first", len(found), day)
    # Slack ts strings order as numbers ("1732700000.000200"); the first post is the smallest.
    return {"channel": channel_id, "ts": min(found, key=float)}


def resolve_channel_id(client: WebClient, channel: str, day: str | None) -> str:
    """The channel's id: itself when it is one, else looked up by name in conversations.list.

    conversations.history takes a channel id only (a '#name' answers channel_not_found);
    chat.postMessage also takes a name. Resolving a name needs channels:read (groups:read for
    a private channel); configuring the id in [slack] channel skips this call.
    """
    name = channel.lstrip("#")
    if _CHANNEL_ID.fullmatch(name):
        return name
    cursor: str | None = None
    for _page in range(MAX_HISTORY_PAGES):
        with _errors("conversations.list", channel, day, history=True):
            response = client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=HISTORY_PAGE_SIZE,
                cursor=cursor,
            )
        for item in response.get("channels") or []:
            if item.get("name") == name:
                return str(item["id"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            break
    raise SourceError(
        SOURCE,
        day,
        f"channel {channel!r} is not in conversations.list: cannot look the pending post up",
        "set [slack] channel to the channel id (e.g. C0123456789), then run the task again",
    )


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
    forget: Callable[[], None] | None = None,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Deliver the day's report to Slack exactly once; return the marker that `save` stored.

    Before chat.postMessage, `save` stores a *pending* marker (channel, the day's key, the
    time); the post carries the key in its metadata. A run that finds a pending marker, or a
    post that got no answer, looks the message up in conversations.history and adopts its ts;
    it posts only when the message is not there. So a kill or a dropped connection between
    Slack posting and the marker holding the ts never leads to a second post. A post Slack
    refused (an answer with ok false) puts the previous marker back (`forget` when none).

    Then the marker of the previous run decides: a post whose content hash differs (the day
    was re-run on restated numbers) → chat.update of the same `ts`; the same content →
    nothing. The marker says `complete: false` until the chart and CSV are in the thread.
    """
    state: dict[str, Any] | None = None
    if previous and previous.get("delivery") == "slack" and previous.get("ts"):
        state = dict(previous)
    elif previous and previous.get("delivery") == "slack" and previous.get("pending_since"):
        found = _look_up(previous, token=token, base_url=base_url, day=day)
        if found is not None:
            log.info("slack: the report of %s was posted before its marker; adopting it", day)
            state = _posted_state(day, found, str(previous.get("content_hash")))
            save(state)
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
        posted = _post_once(
            message,
            token=token,
            channel=channel,
            base_url=base_url,
            day=day,
            content_hash=content_hash,
            previous=previous,
            save=save,
            forget=forget,
            now=now,
        )
        state = _posted_state(day, posted, content_hash)
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


def _post_once(
    message: dict[str, Any],
    *,
    token: str,
    channel: str,
    base_url: str | None,
    day: str,
    content_hash: str,
    previous: dict[str, Any] | None,
    save: Callable[[dict[str, Any]], None],
    forget: Callable[[], None] | None,
    now: Callable[[], float],
) -> dict[str, str]:
    """Post behind a pending marker; a post without an answer is looked up, not re-sent blindly."""
    pending = {
        "date": day,
        "delivery": "slack",
        "channel": channel,
        "key": report_key(day),
        "pending_since": now(),
        "content_hash": content_hash,
        "complete": False,
    }
    save(pending)
    for attempt in (1, 2):
        try:
            return post_message(
                message,
                token=token,
                channel=channel,
                base_url=base_url,
                day=day,
                metadata=report_metadata(day),
            )
        except PostOutcomeUnknown as exc:
            log.warning("slack: %s; looking the post up", exc.problem)
            found = _look_up(pending, token=token, base_url=base_url, day=day)
            if found is not None:
                return found
            if not exc.repost_now or attempt == 2:
                # The pending marker stays: the next run looks again before it posts.
                raise
        except SourceError:
            # Slack answered and did not post: the pending marker must not outlive this run.
            if previous is not None:
                save(previous)
            elif forget is not None:
                forget()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _look_up(
    pending: dict[str, Any], *, token: str, base_url: str | None, day: str
) -> dict[str, str] | None:
    """The post a pending marker announced, if Slack has it (see find_posted_report)."""
    return find_posted_report(
        token=token,
        channel=str(pending["channel"]),
        day=day,
        # Slack's clock and ours differ a little; the key, not the time, identifies the post.
        oldest=float(pending["pending_since"]) - LOOKUP_MARGIN_SECONDS,
        base_url=base_url,
    )


def _posted_state(day: str, posted: dict[str, str], content_hash: str) -> dict[str, Any]:
    return {
        "date": day,
        "delivery": "slack",
        "channel": posted["channel"],
        "ts": posted["ts"],
        "key": report_key(day),
        "content_hash": content_hash,
        "files_hash": None,
        "complete": False,
        "updates": 0,
    }


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
    """Write `content` to `target` atomically: readers see the old file or the new, never half."""
    return atomic.write_bytes(target, content)


class MessageGone(SourceError):
    """chat.update found no message at the stored ts (deleted in Slack)."""


class PostOutcomeUnknown(TransientSourceError):
    """chat.postMessage got no answer: Slack may have posted; only a look-up can tell.

    `repost_now`: a look-up that finds nothing allows one more post in the same run. False after
    a timeout or a 5xx, when the first request may still be at work inside Slack.
    """

    def __init__(self, day: str | None, what: str, *, repost_now: bool) -> None:
        super().__init__(
            SOURCE,
            day,
            f"chat.postMessage got no answer ({what}); the report may or may not be posted",
            "run the task again: it looks the post up in the channel before posting",
        )
        self.repost_now = repost_now


def _is_timeout(exc: BaseException) -> bool:
    """Whether a urllib error is a timeout (raw, or wrapped in URLError's `reason`)."""
    reason = getattr(exc, "reason", None)
    return isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError)


@contextlib.contextmanager
def _errors(method: str, channel: str, day: str | None, *, history: bool = False) -> Iterator[None]:
    """slack-sdk's errors as named adperf errors that say what to fix.

    `history`: the call looks for a post whose marker is pending, so a refusal means "cannot
    tell whether the report is posted", and the task fails rather than risk a second post.
    """
    try:
        yield
    except SlackApiError as exc:
        if history and exc.response.get("error") == "missing_scope":
            raise SourceError(
                SOURCE,
                day,
                f"{method} refused (missing_scope, needs "
                f"{exc.response.get('needed') or 'a history scope'}): cannot check whether the "
                f"report was already posted to {channel!r}, so it is not posted again",
                f"add the bot scopes {_HISTORY_SCOPES} to the Slack app, reinstall it to the "
                "workspace, then run the task again (or check the channel and delete "
                "<data_root>/slack_posts/<day>.json to post anyway)",
            ) from exc
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
    reconciliation: dict[str, float],
    currency: str,
    notes: list[str],
    n_hold: int,
    restricted: str | None = None,
) -> dict[str, Any]:
    """The data-quality footnote: unattributed revenue share, held actions, the restricted
    installs' line, the notes."""
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
    if restricted:
        elements.append(_mrkdwn(_cut(_escape(restricted), MAX_NOTE_CHARS)))
    room = MAX_CONTEXT_ELEMENTS - len(elements)
    shown = notes if len(notes) <= room else notes[: room - 1]
    elements += [_mrkdwn(_cut(_escape(n), MAX_NOTE_CHARS)) for n in shown]
    if len(shown) < len(notes):
        elements.append(_mrkdwn(f"… and {len(notes) - len(shown):,} more notes"))
    return {"type": "context", "elements": elements}


def _watch_section(watch: pd.DataFrame) -> dict[str, Any]:
    """The watch: what changed beyond normal day-to-day noise, each with its baseline."""
    if not len(watch):
        return _text_section(":eyes: *Watch*\nNothing beyond normal day-to-day noise.")
    shown = watch.head(MAX_WATCH_LISTED)
    return _list_section(
        f":eyes: *Watch* ({len(watch):,} beyond normal noise)",
        [f"• {_escape(_cut(str(m), MAX_REASON_CHARS))}" for m in shown["message"]],
        hidden=len(watch) - len(shown),
    )


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


def _follow_up_section(lines: list[str]) -> dict[str, Any]:
    """'Did it work?': one line per applied action followed up today (transform.outcomes)."""
    shown = lines[:MAX_ACTIONS_LISTED]
    return _list_section(
        f":mag: *Did it work?* ({len(lines):,} followed up)",
        [f"• {_escape(_cut(line, MAX_REASON_CHARS))}" for line in shown],
        hidden=len(lines) - len(shown),
    )


def _action_line(row: Any, currency: str) -> str:
    name = _escape(_cut(_label(row.object_name, row.object_id), MAX_NAME_CHARS))
    reason = _escape(_cut(_label(row.reason, "no reason given"), MAX_REASON_CHARS))
    risk = odds(getattr(row, "p_above", None), getattr(row, "p_below", None))
    return (
        f"• *{name}* ({row.platform} {row.level}, spend {_money(row.spend, currency)}, "
        f"ROAS {_ratio(row.roas)}{', ' + risk if risk else ''}) — {reason}"
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
