"""The sources' one retry loop (adperf.sources.retry), with an injected sleep: no I/O, no clock."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest

from adperf.errors import SourceError, TransientSourceError
from adperf.sources.retry import NO_WAIT, Backoff, Transient, log_retry, retry

SECRET = "tok-3f9a-never-logged"
# Facebook's and Google Ads' shape: 2 s doubling up to 2 min; a vendor's wait up to 15 min.
EXPONENTIAL = Backoff(2.0, 120.0, asked_cap_s=900.0)


class Flaky(Exception):
    """A vendor's exception; its text quotes the request, secret included."""

    def __init__(self, wait_s: float | None = None, permanent: bool = False) -> None:
        super().__init__(f"GET /insights?access_token={SECRET} failed")
        self.wait_s = wait_s
        self.permanent = permanent


def classify(exc: Exception) -> Transient | Exception:
    assert isinstance(exc, Flaky)
    if exc.permanent:
        return SourceError("vendor", "2026-11-27", "the token was refused", "set a new token")
    return Transient("HTTP 503", exc.wait_s, "server")


def give_up(last: Transient, tries: int) -> Exception:
    return TransientSourceError(
        "vendor", "2026-11-27", f"{last.failure} ({last.kind}) after {tries} tries", "later"
    )


class Script:
    """A call that raises the given exceptions in turn, then returns 'rows'."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "rows"


def run(
    script: Script,
    *,
    backoff: Backoff = EXPONENTIAL,
    max_retries: int = 3,
    with_give_up: bool = True,
    on_retry: Callable[[Transient, int, float], None] = lambda t, n, w: None,
) -> tuple[str, list[float]]:
    waits: list[float] = []
    result = retry(
        script,
        classify,
        catch=(Flaky,),
        max_retries=max_retries,
        sleep=waits.append,
        backoff=backoff,
        on_retry=on_retry,
        give_up=give_up if with_give_up else None,
    )
    return result, waits


@pytest.mark.parametrize(
    ("backoff", "retry_no", "asked", "expected"),
    [
        (Backoff(2.0, 120.0), 0, None, 2.0),
        (Backoff(2.0, 120.0), 3, None, 16.0),
        (Backoff(2.0, 120.0), 6, None, 120.0),  # 128 s, capped
        (Backoff(2.0, 120.0, asked_cap_s=900.0), 0, 180.0, 180.0),  # the vendor's wait wins
        (Backoff(2.0, 120.0, asked_cap_s=900.0), 5, 1.0, 1.0),  # ... even when shorter
        (Backoff(2.0, 120.0, asked_cap_s=900.0), 0, 3600.0, 900.0),  # capped at its own cap
        (Backoff(2.0, 120.0), 0, 3600.0, 120.0),  # no own cap: the backoff's
        (Backoff(1.0, 60.0, asked_is_floor=True), 2, 7.0, 7.0),  # a floor: longer wins
        (Backoff(1.0, 60.0, asked_is_floor=True), 2, 0.0, 4.0),  # ... shorter does not
        (Backoff(1.0, 60.0, asked_is_floor=True), 0, 600.0, 60.0),
        (NO_WAIT, 4, None, 0.0),
    ],
)
def test_backoff_waits(
    backoff: Backoff, retry_no: int, asked: float | None, expected: float
) -> None:
    assert backoff.wait_s(retry_no, asked) == expected


@pytest.mark.parametrize(
    ("failures", "backoff", "max_retries", "waits"),
    [
        ([], Backoff(2.0, 120.0), 3, []),
        ([Flaky()], Backoff(2.0, 120.0), 3, [2.0]),
        ([Flaky()] * 3, Backoff(2.0, 120.0), 3, [2.0, 4.0, 8.0]),
        ([Flaky()] * 9, Backoff(1.0, 60.0), 9, [1, 2, 4, 8, 16, 32, 60, 60, 60]),
        ([Flaky(), Flaky(wait_s=180.0), Flaky()], Backoff(2.0, 120.0, 900.0), 3, [2, 180, 8]),
        ([Flaky(wait_s=5000.0)], Backoff(2.0, 120.0, 900.0), 3, [900.0]),
    ],
)
def test_transient_failures_are_tried_again_after_the_backoff(
    failures: list[Exception], backoff: Backoff, max_retries: int, waits: list[float]
) -> None:
    script = Script(*failures)
    assert run(script, backoff=backoff, max_retries=max_retries) == ("rows", waits)
    assert script.calls == len(failures) + 1


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_gives_up_after_max_retries_with_the_vendors_error(max_retries: int) -> None:
    script = Script(*[Flaky()] * 10)
    seen: list[tuple[int, float]] = []
    with pytest.raises(TransientSourceError) as caught:
        run(script, max_retries=max_retries, on_retry=lambda t, n, w: seen.append((n, w)))
    assert script.calls == max_retries + 1
    assert str(caught.value) == (
        f"vendor for 2026-11-27: HTTP 503 (server) after {max_retries + 1} tries. Fix: later"
    )
    assert seen == [(n, 2.0 * 2 ** (n - 1)) for n in range(1, max_retries + 1)]


def test_without_give_up_the_last_exception_is_raised_as_it_is() -> None:
    last = Flaky()
    script = Script(Flaky(), last)
    with pytest.raises(Flaky) as caught:
        run(script, max_retries=1, with_give_up=False)
    assert caught.value is last and script.calls == 2


def test_a_permanent_error_is_raised_at_once() -> None:
    script = Script(Flaky(permanent=True))
    with pytest.raises(SourceError) as caught:
        run(script)
    assert not isinstance(caught.value, TransientSourceError)
    assert "the token was refused" in str(caught.value)
    assert script.calls == 1


@pytest.mark.parametrize("error", [StopIteration(), KeyError("ad_id")])
def test_exceptions_outside_catch_pass_through_untried(error: Exception) -> None:
    script = Script(Flaky(), error)
    with pytest.raises(type(error)):
        run(script)
    assert script.calls == 2  # one transient, then the foreign one: not classified, not retried


def test_each_retry_is_logged_and_no_message_or_traceback_holds_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("adperf.sources.vendor")
    script = Script(*[Flaky()] * 3)
    with pytest.raises(TransientSourceError) as caught:
        run(
            script,
            max_retries=2,
            on_retry=log_retry(log, "vendor act_1", "read the next page", 2),
        )
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "adperf.sources.vendor",
            "WARNING",
            f"vendor act_1: could not read the next page (HTTP 503); try {n} of 3 in {w} s",
        )
        for n, w in ((2, 2), (3, 4))
    ]
    shown = "".join(traceback.format_exception(caught.value))
    assert "HTTP 503" in shown
    # The named error is not chained to the vendor's exception, which quotes the request.
    assert SECRET not in caplog.text and SECRET not in shown


def test_a_permanent_errors_traceback_does_not_quote_the_vendors_exception() -> None:
    with pytest.raises(SourceError) as caught:
        run(Script(Flaky(permanent=True)))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert SECRET not in "".join(traceback.format_exception(caught.value))
