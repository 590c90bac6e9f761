"""LTV inputs encoded once per report day: payments per (user, day), RFM per user, installs.

Strings (user ids, segment ids) become integer codes here, once: every later group-by (the
fit's RFM, the priors' user table, the backtest's windows) runs on sorted integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf.schema import MICROS
from adperf.vocabulary import INSTALL_BUCKETS, UNATTRIBUTED

RFM_COLUMNS = ["frequency", "recency", "T", "monetary_value", "first_purchase_date"]
LEVELS = ("campaign", "adset")
_LEVEL_KEYS = {
    "campaign": ["platform", "campaign_id"],
    "adset": ["platform", "campaign_id", "adset_id"],
}


def _day_number(dates: pd.Series | pd.Index) -> np.ndarray:
    """'YYYY-MM-DD' strings -> int64 days since 1970-01-01.

    Arrow parses the strings in C++ (pandas' arrow-backed strings pass without a copy); going
    through Python str objects cost seconds per million payments.
    """
    try:
        parsed = pa.array(dates, from_pandas=True).cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"dates are not 'YYYY-MM-DD' strings: {exc}") from exc
    if parsed.null_count:
        raise ValueError("dates are not 'YYYY-MM-DD' strings: a date is missing")
    return np.asarray(parsed.cast(pa.int32()).to_numpy(), dtype=np.int64)


def _day_of(day: str) -> int:
    return int(_day_number(pd.Index([day]))[0])


@dataclass
class _Payments:
    """Payments as arrays sorted by (user, day): user code, day, micros."""

    user: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    ids: _UserCodes  # user code <-> user_pid, payments' rows then `extra_ids`'
    extra: np.ndarray  # the codes of `extra_ids` given to _encode (-1: null)
    # _net_days by (first_day, last_day): the day's RFM, segments and backtest ask for the same
    # windows again (read-only arrays, so a caller cannot change what the next one gets).
    net_memo: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )


@dataclass
class _UserCodes:
    """Integer codes of string user ids, in order of first appearance (pd.factorize's codes)."""

    codes: np.ndarray  # int64 per id, -1 for null
    n_codes: int
    source: pa.ChunkedArray  # the ids that were encoded

    def names(self, codes: np.ndarray) -> np.ndarray:
        """The user_pid strings of `codes` (object array)."""
        some_row = np.zeros(self.n_codes, dtype=np.int64)
        valid = np.flatnonzero(self.codes >= 0)
        # Any row of a code will do: every row of a code holds the same string.
        some_row[self.codes[valid]] = valid
        return np.asarray(self.source.take(some_row[codes]).to_pylist(), dtype=object)


def _strided_words(buffer: pa.Buffer, offset: int, stride: int, n: int) -> np.ndarray:
    """n little-endian uint64 read from buffer at offset, offset + stride, ... (a copy)."""
    view = np.ndarray((n,), dtype="<u8", buffer=buffer, offset=offset, strides=(stride,))
    return view.astype(np.uint64)


def _fixed_width_words(ids: pa.ChunkedArray) -> list[np.ndarray] | None:
    """Each id as uint64 words that together determine it (equal words <=> equal ids), or None
    unless every id has the same byte length (>= 8) and none is null.

    Pseudonyms are fixed-width hex, so this reads the Arrow buffers in place: no Python str,
    no string hash table.
    """
    if ids.null_count or len(ids) == 0:
        return None
    parts: list[list[np.ndarray]] = []
    width = -1
    for chunk in ids.chunks:
        if len(chunk) == 0:
            continue
        large = pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type)
        if not (large or pa.types.is_string(chunk.type) or pa.types.is_binary(chunk.type)):
            return None
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if large else np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1].astype(np.int64)
        lengths = np.diff(offsets)
        size = int(lengths[0])
        if size < 8 or (width >= 0 and size != width) or np.any(lengths != size):
            return None
        width = size
        data = chunk.buffers()[2]
        base = int(offsets[0])
        words = []
        # Whole words aligned to the end of each id, then the bytes left at its front (masked
        # out of a word read from the id's start: little-endian, so the low bytes).
        for start in range(size - 8, -1, -8):
            words.append(_strided_words(data, base + start, size, len(chunk)))
        if size % 8:
            front = _strided_words(data, base, size, len(chunk))
            words.append(front & np.uint64((1 << (8 * (size % 8))) - 1))
        parts.append(words)
    if not parts:
        return None
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def _mix_words(words: list[np.ndarray]) -> np.ndarray:
    """One uint64 per row from several (a multiplicative mix; may join two rows: check)."""
    key = words[0].copy()
    for w in words[1:]:
        key *= np.uint64(0x9E3779B97F4A7C15)
        key ^= w
    return key


def _user_codes(ids: pa.ChunkedArray) -> _UserCodes:
    """Codes of user ids in order of first appearance, nulls -1 (what pd.factorize gives).

    A string hash table over millions of ids was a third of the 1M-customer LTV run (pandas
    3's Arrow strings hash slowly, and the table is far larger than the caches). Fixed-width
    ids (pseudonyms: 32 hex digits) become one uint64 key each, a mix of their 8-byte words,
    hashed as integers; a check that every word agrees within each code catches a mix that
    joined two ids (then the string path runs).
    """
    words = _fixed_width_words(ids)
    if words is not None:
        words = [w for w in words if np.any(w != w[0])] or words[:1]  # drop common prefixes
        codes, uniques = pd.factorize(_mix_words(words))
        codes = codes.astype(np.int64)
        # The mix of several words may join two ids: every word must agree within a code.
        some_row = np.zeros(len(uniques), dtype=np.int64)
        some_row[codes] = np.arange(len(codes))
        if len(words) == 1 or all(np.array_equal(w[some_row][codes], w) for w in words):
            return _UserCodes(codes, len(uniques), ids)
    slow_codes, slow_uniques = pd.factorize(pd.Series(ids.to_pandas()))
    return _UserCodes(slow_codes.astype(np.int64), len(slow_uniques), ids)


def _id_chunks(values: pd.Series) -> pa.ChunkedArray:
    """A string Series as Arrow (zero-copy for pandas' Arrow-backed strings)."""
    arr = pa.array(values, from_pandas=True)
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])


def _encode(payments: pd.DataFrame, extra_ids: pd.Series | None = None) -> _Payments:
    """Payments with integer user codes, sorted once; `extra_ids` (installs') share the codes.

    Strings are encoded once here: every later group-by runs on sorted integers, which at a
    million customers is the difference between seconds and minutes.
    """
    chunks = list(_id_chunks(payments["user_pid"]).chunks)
    if extra_ids is not None:
        chunks += list(_id_chunks(extra_ids).chunks)
    types = {c.type for c in chunks}
    target = pa.large_string() if pa.large_string() in types else pa.string()
    ids = pa.chunked_array([c.cast(target) for c in chunks], type=target)
    enc = _user_codes(ids)
    codes = enc.codes
    n = len(payments)
    user = codes[:n]
    day = _day_number(payments["date"]) if n else np.zeros(0, dtype=np.int64)
    # One int64 key sorts faster than a two-key lexsort; stable, so reruns order alike.
    lo = int(day.min()) if n else 0
    span = int(day.max()) - lo + 1 if n else 1
    order = np.argsort(user * span + (day - lo), kind="stable")
    return _Payments(
        user=user[order],
        day=day[order],
        amount=payments["amount_micros"].to_numpy(dtype=np.int64)[order],
        ids=enc,
        extra=codes[n:],
    )


def _net_days(
    enc: _Payments, first_day: int, last_day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, day, net micros) per user and day with first_day <= day <= last_day, sorted."""
    if (first_day, last_day) in enc.net_memo:
        return enc.net_memo[(first_day, last_day)]
    keep = (enc.day >= first_day) & (enc.day <= last_day)
    user, day, amount = enc.user[keep], enc.day[keep], enc.amount[keep]
    if len(user) == 0:
        empty = np.zeros(0, dtype=np.int64)
        out = (empty, empty.copy(), empty.copy())
    else:
        starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (day[1:] != day[:-1])])
        out = (user[starts], day[starts], np.add.reduceat(amount, starts))
    for arr in out:
        arr.flags.writeable = False
    enc.net_memo[(first_day, last_day)] = out
    return out


def _rfm_codes(
    user: np.ndarray, day: np.ndarray, net: np.ndarray, as_of_day: int, unit_days: int = 1
) -> pd.DataFrame:
    """RFM per user code (index) from sorted net days: frequency, recency, T, monetary_value,
    first_day. A purchase day is a day with positive net revenue (refunds net on their day)."""
    bought = net > 0
    user, day, net = user[bought], day[bought], net[bought]
    if len(user) == 0:
        frame = pd.DataFrame(
            {
                "frequency": pd.Series(dtype="int64"),
                "recency": pd.Series(dtype="float64"),
                "T": pd.Series(dtype="float64"),
                "monetary_value": pd.Series(dtype="float64"),
                "first_day": pd.Series(dtype="int64"),
            }
        )
        frame.index = pd.Index([], dtype="int64", name="user")
        return frame
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)] - 1
    n = ends - starts + 1
    first, last = day[starts], day[ends]
    total = np.add.reduceat(net, starts)
    frequency = (n - 1).astype(np.int64)
    # The first purchase is excluded from monetary value, as in lifetimes: Gamma-Gamma models
    # the spend of repeat transactions only.
    repeat_total = (total - net[starts]).astype("float64")
    monetary = np.where(frequency > 0, repeat_total / np.maximum(frequency, 1) / MICROS, 0.0)
    frame = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (last - first) / unit_days,
            "T": (as_of_day - first) / unit_days,
            "monetary_value": monetary.astype("float64"),
            "first_day": first,
        },
        index=pd.Index(user[starts], name="user"),
    )
    return frame


def build_rfm(
    payments: pd.DataFrame, as_of: str, history_days: int = 365, unit_days: int = 1
) -> pd.DataFrame:
    """Per user_pid (index): frequency, recency, T, monetary_value, first_purchase_date at as_of.

    Uses PAYMENTS rows with `date` in (as_of - history_days, as_of]. A purchase day is a date with
    positive net revenue; frequency = purchase days - 1, recency = last - first purchase day,
    T = as_of - first purchase day (recency and T in units of `unit_days` days, fractional if
    need be), monetary_value = mean net revenue of the repeat purchase days in report-currency
    units (0 when frequency is 0) -- the conventions of lifetimes'
    `summary_data_from_transaction_data(freq='D', observation_period_end=as_of)`.
    """
    as_of_day = _day_of(as_of)
    enc = _encode(payments[["user_pid", "date", "amount_micros"]])
    rfm = _rfm_codes(*_net_days(enc, as_of_day - history_days + 1, as_of_day), as_of_day, unit_days)
    first = rfm.pop("first_day").to_numpy().astype("datetime64[D]")
    rfm["first_purchase_date"] = pd.Series(np.datetime_as_string(first), index=rfm.index).astype(
        "str"
    )
    rfm.index = pd.Index(enc.ids.names(rfm.index.to_numpy()), dtype="str", name="user_pid")
    return rfm.sort_index()


def _segment_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """platform / campaign_id / adset_id; organic and restricted ids are their bucket's name,
    missing ids 'unattributed'."""
    out = pd.DataFrame({"platform": frame["platform"].astype("str")}, index=frame.index)
    bucket = out["platform"].isin(INSTALL_BUCKETS)
    for col in ("campaign_id", "adset_id"):
        ids = frame[col] if col in frame.columns else pd.Series(None, index=frame.index)
        ids = ids.astype("object").where(ids.notna(), UNATTRIBUTED)
        out[col] = ids.where(~bucket, out["platform"]).astype("str")
    return out


@dataclass
class _Prepared:
    """Payments and installs with integer user codes and day numbers, encoded once per day."""

    pay: _Payments
    installs: pd.DataFrame
    user: np.ndarray  # installs' user codes (-1: no user id)
    day: np.ndarray  # installs' day numbers
    time: np.ndarray  # installs' install_time (int64, for ordering)
    adset: np.ndarray  # installs' row of `adsets`
    adsets: pd.DataFrame  # _segment_ids' distinct (platform, campaign_id, adset_id), sorted
    by_time: np.ndarray  # install rows sorted by (day, install_time), stable


def _prepare(payments: pd.DataFrame, installs: pd.DataFrame) -> _Prepared:
    pay = _encode(payments[["user_pid", "date", "amount_micros"]], installs["user_pid"])
    if "install_time" in installs.columns:
        times = pd.to_datetime(installs["install_time"], utc=True)
        time = times.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)
    else:
        time = np.zeros(len(installs), dtype=np.int64)
    installs = installs.reset_index(drop=True)
    day = _day_number(installs["date"]) if len(installs) else np.zeros(0, dtype=np.int64)
    adset, adsets = _adset_codes(installs)
    return _Prepared(
        pay=pay,
        installs=installs,
        user=pay.extra,
        day=day,
        time=time,
        adset=adset,
        adsets=adsets,
        # Install rows by (day, time): each as-of day's first install per user reads it.
        by_time=np.lexsort((time, day)),
    )


def _column_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Codes of a column's distinct values (nulls one more value) and how many there are."""
    try:
        arr = pa.array(values, from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            # One array: Arrow cannot unify chunked dictionaries that encode nulls.
            arr = arr.combine_chunks()
        encoded = pc.dictionary_encode(arr, "encode")
        return encoded.indices.to_numpy(zero_copy_only=False), len(encoded.dictionary)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        codes, uniques = pd.factorize(values.astype("object"), use_na_sentinel=False)
        return codes, len(uniques)


def _adset_codes(installs: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Per install: its row of the sorted distinct _segment_ids (platform, campaign_id,
    adset_id), and those rows.

    Segment ids are strings: encoded once here, so every as-of day (today, the backtest's)
    groups integers. The few distinct raw id combinations are found by dictionary-encoding
    each column in Arrow (a hash table of a few hundred strings) and _segment_ids applied to
    them only, not to a million rows.
    """
    raw_cols = [c for c in ("platform", "campaign_id", "adset_id") if c in installs.columns]
    combo, bound = np.zeros(len(installs), dtype=np.int64), 1
    for col in raw_cols:
        idx, size = _column_codes(installs[col])
        if bound * max(size, 1) >= 2**62:  # keep the packed key inside int64
            codes, uniques = pd.factorize(combo)
            combo, bound = codes.astype(np.int64), max(len(uniques), 1)
        combo = combo * max(size, 1) + idx.astype(np.int64)
        bound *= max(size, 1)
    combo_code, combos = pd.factorize(combo)
    some_row = np.zeros(len(combos), dtype=np.int64)
    some_row[combo_code] = np.arange(len(combo_code))  # any row: all rows of a combo agree
    ids = _segment_ids(installs.iloc[some_row].reset_index(drop=True))
    cols = _LEVEL_KEYS["adset"]
    group = ids.groupby(cols, sort=True).ngroup().to_numpy(dtype=np.int64)
    first = np.unique(group, return_index=True)[1]
    return group[combo_code], ids.iloc[first][cols].reset_index(drop=True)


def _user_table(
    prep: _Prepared, as_of_day: int, net: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> pd.DataFrame:
    """Per installed user (index: user code): adset (row of prep.adsets), install day, first
    paid day, revenue.

    A user belongs to the first install on record (up to as_of). Revenue counts from the install
    day on: a payment before it is a returning customer's, not this install's. A purchase day
    is a day with positive net revenue; first_paid_day is NaN for users who have not paid.
    repeat_days / repeat_micros: the purchase days after the first and their revenue.
    `net` is _net_days over the history window up to as_of.
    """
    order = prep.by_time
    order = order[(prep.user[order] >= 0) & (prep.day[order] <= as_of_day)]
    first = np.sort(order[~pd.Series(prep.user[order]).duplicated().to_numpy()])
    code, install_day = prep.user[first], prep.day[first]
    users = pd.DataFrame({"adset": prep.adset[first]}, index=pd.Index(code, name="user"))
    users["install_day"] = install_day
    n_codes = prep.pay.ids.n_codes
    installed = np.full(n_codes, np.iinfo(np.int64).max, dtype=np.int64)
    installed[code] = install_day
    p_user, p_day, p_net = net
    mine = p_day >= installed[p_user]
    p_user, p_day, p_net = p_user[mine], p_day[mine], p_net[mine]
    # Float sums of int64 micros are exact below 2**53 micros (9 billion currency units).
    realized = np.rint(np.bincount(p_user, weights=p_net, minlength=n_codes)).astype(np.int64)
    users["realized_micros"] = realized[code]
    bought = p_net > 0
    b_user, b_day, b_net = p_user[bought], p_day[bought], p_net[bought]
    first_paid = np.full(n_codes, np.nan)
    first_micros = np.zeros(n_codes, dtype=np.int64)
    repeat_days = np.zeros(n_codes, dtype=np.int64)
    repeat_micros = np.zeros(n_codes, dtype=np.int64)
    if len(b_user):
        # Sorted by (user, day): each user's first purchase day opens its run.
        starts = np.flatnonzero(np.r_[True, b_user[1:] != b_user[:-1]])
        who = b_user[starts]
        first_paid[who] = b_day[starts]
        first_micros[who] = b_net[starts]
        repeat_days[who] = np.diff(np.r_[starts, len(b_user)]) - 1
        repeat_micros[who] = np.add.reduceat(b_net, starts) - b_net[starts]
    users["first_paid_day"] = first_paid[code]
    users["first_day_micros"] = first_micros[code]
    users["repeat_days"] = repeat_days[code]
    users["repeat_micros"] = repeat_micros[code]
    return users
