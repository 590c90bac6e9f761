"""Apple Ads spend: OAuth client credentials with an ES256 client secret, org context, paged
reports, against the loopback fake."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import jwt
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.sandbox.fake_apple_ads import FakeAppleAds
from adperf.schema import AD_SPEND
from adperf.sources import apple_ads
from adperf.sources.apple_ads import AppleAdsCredentials, fetch_apple_ads_spend

ORG = "4000001"
FIRST, LAST = dt.date(2026, 11, 2), dt.date(2026, 11, 8)


def keypair() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


PRIVATE, PUBLIC = keypair()
CREDS = AppleAdsCredentials("SEARCHADS.client", "SEARCHADS.team", "key1", PRIVATE)


def rows() -> pd.DataFrame:
    out = []
    for d in range(1, 10):
        for c in range(3):
            for g in range(2):
                group = str(910000 + c * 10 + g)
                out.append(
                    {
                        "date": f"2026-11-{d:02d}",
                        "account_id": ORG,
                        "campaign_id": str(900000 + c),
                        "campaign_name": f"ASA_{c}",
                        "adset_id": group,
                        "adset_name": f"grp{g}",
                        "ad_id": group,
                        "ad_name": f"grp{g}",
                        "impressions": 100,
                        "clicks": 7,
                        "installs_reported": 2,
                        "purchases_reported": 0,
                        "purchase_value": "0",
                        "spend": f"{d}.{c}{g}",
                    }
                )
    return pd.DataFrame(out)


@pytest.fixture()
def fake() -> Iterator[tuple[FakeAppleAds, str]]:
    f = FakeAppleAds(
        orgs=[{"orgId": int(ORG), "orgName": "o", "currency": "USD", "timeZone": "Asia/Seoul"}],
        ad_rows=rows(),
        client_id=CREDS.client_id,
        team_id=CREDS.team_id,
        key_id=CREDS.key_id,
        public_key=PUBLIC,
    )
    url = f.start()
    try:
        yield f, url
    finally:
        f.stop()


def fetch(url: str, **kw: Any) -> pd.DataFrame:
    args: dict[str, Any] = {
        "api_url": url,
        "token_url": f"{url}/auth/oauth2/token",
        "credentials": CREDS,
        "org_ids": [ORG],
        "first_day": FIRST,
        "day": LAST,
        "sleep": lambda s: None,
    }
    return fetch_apple_ads_spend(**{**args, **kw})


def test_ad_group_rows_of_the_window_over_pages_to_the_cent(
    fake: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    f, url = fake
    monkeypatch.setattr(apple_ads, "PAGE_LIMIT", 2)
    df = fetch(url)
    assert list(df.columns) == AD_SPEND.columns
    assert len(df) == 7 * 3 * 2 and (df["ad_id"] == df["adset_id"]).all()
    expected = sum(
        int(f"{d}{c}{g}") * 10_000 for d in range(2, 9) for c in range(3) for g in (0, 1)
    )
    assert df["spend_original_micros"].sum() == expected
    assert set(df["currency_original"]) == {"USD"} and set(df["account_timezone"]) == {"Asia/Seoul"}
    assert df["installs_reported"].sum() == 42 * 2 and df["clicks"].sum() == 42 * 7
    seen = f.requests_seen
    assert all(r["org"] == ORG for r in seen if r["path"] != "/api/v5/acls")
    campaign_pages = [r for r in seen if r["path"] == "/api/v5/reports/campaigns"]
    assert len(campaign_pages) == 2  # 3 campaigns, 2 a page


def test_the_client_secret_is_an_es256_jwt_apple_can_verify() -> None:
    secret = CREDS.client_secret(now=1_700_000_000)
    assert jwt.get_unverified_header(secret) == {"alg": "ES256", "kid": "key1", "typ": "JWT"}
    claims = jwt.decode(
        secret,
        PUBLIC,
        algorithms=["ES256"],
        audience="https://appleid.apple.com",
        options={"verify_exp": False},
    )
    assert claims["iss"] == "SEARCHADS.team" and claims["sub"] == "SEARCHADS.client"
    assert PRIVATE not in repr(CREDS)


def test_rate_limits_and_server_errors_are_retried_with_the_asked_wait(fake: tuple) -> None:
    f, url = fake
    f.inject_errors([{"status": 429, "retry_after": 9}, {"status": 503}])
    waits: list[float] = []
    assert len(fetch(url, sleep=waits.append)) == 42
    assert waits == [9.0, 4.0]


def test_an_expired_token_is_renewed_once(fake: tuple) -> None:
    f, url = fake
    fetch(url)
    f.expire_tokens()
    assert len(fetch(url)) == 42


def test_retries_are_bounded(fake: tuple) -> None:
    f, url = fake
    f.inject_errors([{"status": 500}] * 3)
    with pytest.raises(TransientSourceError, match="server error 500"):
        fetch(url, max_retries=2)


@pytest.mark.parametrize(("status", "fix"), [(403, "org_ids"), (400, "Apple Ads API docs")])
def test_client_errors_are_permanent_and_named(fake: tuple, status: int, fix: str) -> None:
    f, url = fake
    f.inject_errors([{"status": status}])
    with pytest.raises(SourceError) as info:
        fetch(url)
    assert not isinstance(info.value, TransientSourceError) and fix in str(info.value)


def test_a_wrong_key_is_refused_without_quoting_it(
    fake: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = fake
    other, _ = keypair()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError, match="invalid_client") as info:
        fetch(
            url,
            credentials=AppleAdsCredentials("SEARCHADS.client", "SEARCHADS.team", "key1", other),
        )
    assert "PRIVATE KEY" not in str(info.value) and "PRIVATE KEY" not in caplog.text
    with pytest.raises(ConfigError, match="not an ES256"):
        fetch(url, credentials=AppleAdsCredentials("c", "t", "k", "not a key"))
    with pytest.raises(ConfigError, match="private_key not set"):
        fetch(url, credentials=AppleAdsCredentials("c", "t", "k", ""))


def test_an_org_the_user_cannot_see_is_named(fake: tuple) -> None:
    _, url = fake
    with pytest.raises(SourceError, match="no access to org 999"):
        fetch(url, org_ids=["999"])
