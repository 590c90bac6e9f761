"""Named exceptions: each message says which source, which day and what to fix."""

from __future__ import annotations

import datetime


class AdperfError(Exception):
    """Base class of every error adperf raises on purpose."""


class ConfigError(AdperfError):
    """The configuration is missing or wrong; the message names the key to set."""


class SourceError(AdperfError):
    """A permanent error at a source boundary (bad token, bad query, bad data)."""

    def __init__(self, source: str, day: str | None, problem: str, fix: str) -> None:
        self.source = source
        self.day = day
        self.problem = problem
        self.fix = fix
        where = f"{source}" + (f" for {day}" if day else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class TransientSourceError(SourceError):
    """A transient error that survived the client's bounded retries."""


class DataNotReady(SourceError):
    """The source has no data for the day yet; try again later (not a failure of the data)."""


class QuotaExhausted(DataNotReady):
    """The source's quota of calls is used up until `retry_at` (aware): ask again after it."""

    def __init__(
        self, source: str, day: str | None, problem: str, fix: str, retry_at: datetime.datetime
    ) -> None:
        super().__init__(source, day, problem, fix)
        self.retry_at = retry_at


class MissingFxRate(AdperfError):
    """No FX rate for a (currency, day): never silently 1.0."""

    def __init__(self, currency: str, day: str, rates_path: str = "[fx] rates_path") -> None:
        super().__init__(
            f"fx: no rate for {currency} on {day}. Fix: add a row '{day},{currency},<rate>' "
            f"to {rates_path} (rate = units of report currency per 1 {currency})"
        )
        self.currency = currency
        self.day = day


class ReconciliationError(AdperfError):
    """Attributed + organic + unattributed + restricted revenue does not equal the day's
    payments."""


class SchemaError(AdperfError):
    """A dataset does not match its declared schema when written."""
