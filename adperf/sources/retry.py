"""The sources' one retry loop: bounded tries, capped exponential backoff or the wait a vendor
asks for, and each vendor's own classification of what is worth another try.

A source passes `retry` the call, the exceptions it knows (`catch`), and a classifier that turns
one of them into a `Transient` (try again) or the named error to raise at once (permanent). The
loop, the waits, the give-up and the retry log line live here; which errors are which, and what
the messages say, stay with the vendor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Transient:
    """A failure worth another try: what went wrong (no secret in it: it is logged and quoted
    in the give-up error), the wait the vendor asked for in seconds if it did, and the vendor's
    own name for the kind of failure, for its give-up error."""

    failure: str
    wait_s: float | None = None
    kind: str = "transient"


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the n-th retry (0-based): `base_s * 2**n`, at most `cap_s`.

    A wait the vendor asked for (Retry-After, a usage header, a retry delay) replaces it, at
    most `asked_cap_s` (`cap_s` when not given); with `asked_is_floor` it only lengthens it.
    """

    base_s: float
    cap_s: float
    asked_cap_s: float | None = None
    asked_is_floor: bool = False

    def wait_s(self, retry: int, asked_s: float | None = None) -> float:
        backoff = float(min(self.cap_s, self.base_s * 2**retry))
        if asked_s is None:
            return backoff
        if self.asked_is_floor:
            asked_s = max(backoff, asked_s)
        return float(min(self.cap_s if self.asked_cap_s is None else self.asked_cap_s, asked_s))


#: No wait between tries (a database read started again from scratch).
NO_WAIT = Backoff(base_s=0.0, cap_s=0.0)


def retry(
    call: Callable[[], T],
    classify: Callable[[Exception], Transient | Exception],
    *,
    catch: tuple[type[Exception], ...],
    max_retries: int,
    sleep: Callable[[float], None],
    backoff: Backoff,
    on_retry: Callable[[Transient, int, float], None],
    give_up: Callable[[Transient, int], Exception] | None = None,
) -> T:
    """`call()`, tried at most 1 + `max_retries` times.

    An exception of `catch` goes to `classify`: an exception it returns is raised at once
    (permanent); a `Transient` is tried again after `backoff` (or the wait it asks for), told
    to `on_retry(transient, tries so far, wait)` first; past `max_retries`, the exception
    `give_up(last transient, tries)` is raised (without `give_up`, the last exception caught,
    for a source whose own errors are named already). Raised `from None`: the vendor's
    exception may quote a request (and so a token); the named error says what it needs to.
    Exceptions outside `catch` (StopIteration from a cursor, a bug) pass through untouched.
    """
    tries = 0
    while True:
        try:
            return call()
        except catch as exc:
            verdict, failed = classify(exc), exc
        tries += 1
        if not isinstance(verdict, Transient):
            raise verdict from None
        if tries > max_retries:
            raise (failed if give_up is None else give_up(verdict, tries)) from None
        wait = backoff.wait_s(tries - 1, verdict.wait_s)
        on_retry(verdict, tries, wait)
        sleep(wait)


def log_retry(
    log: logging.Logger, who: str, what: str, max_retries: int
) -> Callable[[Transient, int, float], None]:
    """An `on_retry` that logs 'who: could not what (failure); try n of N in s s' to `log`."""

    def on_retry(transient: Transient, tries: int, wait: float) -> None:
        log.warning(
            "%s: could not %s (%s); try %d of %d in %.0f s",
            who,
            what,
            transient.failure,
            tries + 1,
            max_retries + 1,
            wait,
        )

    return on_retry
