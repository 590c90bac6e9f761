"""Operating helpers without luigi: scrubbed alert messages, the status table."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_ALERT_MESSAGE_CHARS = 600

_SECRET_PATTERNS = (
    # Slack tokens (https://api.slack.com/authentication/token-types), Facebook tokens, Bearer.
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"\bEAA[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    # key=value / key: value where the key says it is a secret.
    re.compile(r"(?i)\b([\w-]*(?:token|key|secret|password|passwd|pwd))(\s*[=:]\s*)[^\s)]+"),
    # Credentials inside URLs: scheme://user:password@host.
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail addresses
    re.compile(r"\b[0-9a-fA-F]{16,}\b"),  # hex digests, keys, pseudonyms
    re.compile(r"\b\d{6,}\b"),  # raw numeric ids (user, device, order)
)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values, token-like strings, credentials or raw ids."""
    out = text
    for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        out = out.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 2:
            out = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", out)
        else:
            out = pattern.sub("***", out)
    return out


def build_alert_message(
    *,
    kind: str,
    task: str,
    day: str | None,
    error_class: str,
    message: str,
    attempts: int = 1,
) -> dict[str, Any]:
    """A Slack message for one task that ended a run failed (kind 'failed') or waiting for data
    (kind 'not_ready'); `message` must already be scrubbed."""
    if kind not in ("failed", "not_ready"):
        raise ValueError(f"unknown alert kind {kind!r}")
    short = message.strip().splitlines()[0] if message.strip() else "(no message)"
    if len(short) > MAX_ALERT_MESSAGE_CHARS:
        short = short[: MAX_ALERT_MESSAGE_CHARS - 1] + "…"
    when = day or "-"
    if kind == "failed":
        head = f":x: adperf: {task} failed for {when}"
        tail = f"{error_class} after {attempts} attempt{'s' if attempts != 1 else ''}"
    else:
        head = f":hourglass: adperf: {task} is waiting for data for {when}"
        tail = f"{error_class}: not ready yet; the next run retries (not a failure)"
    text = f"{head}: {short}"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*\n{_escape(short)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(tail)}]},
    ]
    return {"text": text, "blocks": blocks}


STATUS_MARKS = {"complete": "ok", "failed": "FAIL", "missing": "-", "running": "run"}
_COLOURS = {"complete": "\033[32m", "failed": "\033[31;1m", "missing": "\033[33m"}
_RESET = "\033[0m"


def render_status(
    grid: Mapping[str, Mapping[dt.date, str]], days: Sequence[dt.date], *, colour: bool
) -> str:
    """A table: one row per task family, one column per day, cells complete/failed/missing."""
    width = max([len("task")] + [len(f) for f in grid])
    cell = 6
    head = f"{'task':<{width}} " + " ".join(f"{d.strftime('%m-%d'):>{cell}}" for d in days)
    lines = [head, "-" * len(head)]
    for family, by_day in grid.items():
        cells = []
        for d in days:
            state = by_day.get(d, "missing")
            text = f"{STATUS_MARKS.get(state, state):>{cell}}"
            if colour and state in _COLOURS:
                text = f"{_COLOURS[state]}{text}{_RESET}"
            cells.append(text)
        lines.append(f"{family:<{width}} " + " ".join(cells))
    states = [s for by_day in grid.values() for s in by_day.values()]
    lines.append("")
    lines.append(
        f"{states.count('complete')} complete, {states.count('failed')} failed, "
        f"{len(grid) * len(days) - states.count('complete') - states.count('failed')} missing"
    )
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Slack mrkdwn escaping (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
