"""luigi.cfg sections, one lowercase Config class each; secrets come from the environment only."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from adperf.errors import ConfigError

if TYPE_CHECKING:
    from adperf.objstore import S3Bucket
    from adperf.sources.google_ads import GoogleAdsCredentials

# Only for the sandbox's fake endpoints: a production config never falls back to these.
SANDBOX_HMAC_KEY = "adperf-sandbox-demo-key-not-secret"
SANDBOX_FACEBOOK_TOKEN = "EAAsandboxDemoTokenNotSecret"
SANDBOX_MMP_TOKEN = "sandbox-mmp-token-not-secret"
SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN = "sandbox-google-ads-developer-token-not-secret"


class adperf(luigi.Config):  # noqa: N801 - section names are lowercase
    sandbox = luigi.BoolParameter(
        default=False, description="run on the built-in simulated ad world (fake endpoints)"
    )
    data_root = luigi.Parameter(
        default="var/lake",
        description="root of the lake: a folder, or s3://bucket/prefix (endpoint: [s3])",
    )
    files_root = luigi.Parameter(
        default="",
        description="folder of the run's files besides the lake (report pages, Slack post "
        "markers, MMP wait markers); empty: data_root, or var/files when data_root is s3://",
    )
    warehouse_url = luigi.Parameter(
        default="sqlite:///var/warehouse.db", description="SQLAlchemy URL of the report tables"
    )
    report_timezone = luigi.Parameter(
        default="Asia/Seoul", description="IANA time zone that defines a report day"
    )
    report_currency = luigi.Parameter(default="USD", description="currency of every amount")
    account_days = luigi.ChoiceParameter(
        default="account",
        choices=["account", "report"],
        description="days of an ad account in another zone than report_timezone: 'account' = "
        "its own calendar days (as the platforms and MMP dashboards show them), 'report' = "
        "spend re-cut into report_timezone days from hourly rows",
    )


class sandbox(luigi.Config):  # noqa: N801
    root = luigi.Parameter(default="var/sandbox", description="folder of the simulated world")
    profile = luigi.Parameter(default="small", description="scale: tiny, small, medium, large")
    seed = luigi.IntParameter(default=7, description="random seed of the world")


class facebook(luigi.Config):  # noqa: N801
    graph_url = luigi.Parameter(
        default="https://graph.facebook.com", description="Graph API base URL"
    )
    api_version = luigi.Parameter(default="v21.0", description="Marketing API version")
    ad_account_ids = luigi.Parameter(
        default="", description="comma-separated ad account ids (without act_)"
    )
    lookback_days = luigi.IntParameter(
        default=28, description="recent days re-pulled each run (Facebook restates them)"
    )
    use_async = luigi.BoolParameter(
        default=True, description="read Insights through async report runs (big accounts)"
    )


class google_ads(luigi.Config):  # noqa: N801
    endpoint = luigi.Parameter(
        default="googleads.googleapis.com", description="Google Ads API gRPC endpoint"
    )
    customer_ids = luigi.Parameter(
        default="", description="comma-separated customer ids (10 digits, dashes allowed)"
    )
    login_customer_id = luigi.Parameter(
        default="", description="manager (MCC) account the access goes through, if any"
    )
    lookback_days = luigi.IntParameter(
        default=14, description="recent days re-pulled each run (Google Ads restates them)"
    )
    timeout_s = luigi.FloatParameter(
        default=600.0, description="deadline of one SearchStream call, so a hung stream fails"
    )


class mmp(luigi.Config):  # noqa: N801
    base_url = luigi.Parameter(
        default="https://hq1.appsflyer.com", description="MMP Pull API base URL"
    )
    app_ids = luigi.Parameter(default="", description="comma-separated app ids")
    timeout_s = luigi.FloatParameter(
        default=60.0,
        description="timeout of one Pull API request (connect, and each wait for bytes), so a "
        "hung answer fails and is retried",
    )
    recheck_s = luigi.FloatParameter(
        default=300.0,
        description="after the MMP answered 'not ready' for a day, ask it again at most this "
        "often (seconds); meanwhile the run ends as missing data",
    )


class payments(luigi.Config):  # noqa: N801
    url = luigi.Parameter(
        default="", description="SQLAlchemy URL of the payments DB (env ADPERF_PAYMENTS_URL wins)"
    )
    table = luigi.Parameter(default="payments", description="payments table name")
    query = luigi.Parameter(
        default="", description="replaces the default SELECT; named parameters :start and :end"
    )


class logs(luigi.Config):  # noqa: N801
    path = luigi.Parameter(default="", description="glob of a day's log files; {date} = YYYY-MM-DD")
    max_bad_fraction = luigi.FloatParameter(
        default=0.01, description="share of malformed lines above which the day fails"
    )
    shards = luigi.IntParameter(
        default=1, description="EventLogs split by a hash of the user id, one task per shard"
    )


class fx(luigi.Config):  # noqa: N801
    rates_path = luigi.Parameter(default="", description="CSV date,currency,rate")


class slack(luigi.Config):  # noqa: N801
    base_url = luigi.Parameter(
        default="https://slack.com/api/", description="Slack Web API base URL"
    )
    channel = luigi.Parameter(default="#marketing-daily", description="channel of the report")
    outbox = luigi.Parameter(
        default="var/outbox", description="folder for the report when there is no token"
    )


class rules(luigi.Config):  # noqa: N801
    target_roas = luigi.FloatParameter(default=1.0, description="ROAS a campaign should reach")
    scale_roas = luigi.FloatParameter(default=1.3, description="true ROAS likely above this: scale")
    pause_roas = luigi.FloatParameter(default=0.5, description="true ROAS likely below this: pause")
    min_spend = luigi.FloatParameter(
        default=100.0, description="minimum spend of the window's days to act on an object"
    )
    min_installs = luigi.IntParameter(
        default=50, description="minimum installs of the window's cohorts to act on an object"
    )
    min_age_days = luigi.IntParameter(default=7, description="minimum days since first spend")
    window_days = luigi.IntParameter(
        default=14,
        description="install cohorts of this many days to the report day are pooled, each "
        "valued at its age, into the evidence of a decision",
    )
    confidence = luigi.FloatParameter(
        default=0.8,
        description="scale when P(true ROAS > scale_roas) is at least this, pause when "
        "P(true ROAS < pause_roas) is; else hold",
    )


class actions(luigi.Config):  # noqa: N801
    scale_factor = luigi.FloatParameter(
        default=1.2, description="`adperf actions apply`: a scale multiplies the budget by this"
    )
    max_budget_increase = luigi.FloatParameter(
        default=0.5,
        description="largest share one scale may raise a budget by (scale_factor above "
        "1 + this is refused)",
    )


class ltv(luigi.Config):  # noqa: N801
    history_days = luigi.IntParameter(default=365, description="payment history for the fit")
    horizon_days = luigi.IntParameter(default=365, description="horizon of predicted LTV")
    discount_rate = luigi.FloatParameter(default=0.0, description="annual discount rate")


class contribution(luigi.Config):  # noqa: N801
    window_days = luigi.IntParameter(default=28, description="days of the match graph")
    partner_share = luigi.FloatParameter(
        default=0.2, description="share of payers' revenue credited to their partners"
    )


class s3(luigi.Config):  # noqa: N801
    """Where an s3:// data_root is served. Credentials are never here: boto3's chain gives
    them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role)."""

    endpoint_url = luigi.Parameter(
        default="",
        description="S3 endpoint, e.g. http://127.0.0.1:8333 for SeaweedFS; empty: AWS "
        "(or AWS_ENDPOINT_URL)",
    )
    region = luigi.Parameter(default="", description="region; empty: AWS_REGION or the profile's")
    profile = luigi.Parameter(
        default="", description="profile of ~/.aws/credentials to use; empty: the default chain"
    )


@dataclass(frozen=True)
class Secrets:
    """Secrets from the environment; never luigi parameters, never logged."""

    hmac_key: bytes
    facebook_token: str
    mmp_token: str
    slack_token: str
    payments_url: str
    hmac_key_version: str = "1"  # a label recorded with the data, not a secret


def secrets() -> Secrets:
    """Read the secrets; a production config without ADPERF_HMAC_KEY refuses to start."""
    is_sandbox = adperf().sandbox
    key = os.environ.get("ADPERF_HMAC_KEY", "")
    if not key:
        if not is_sandbox:
            raise ConfigError(
                "ADPERF_HMAC_KEY is not set. Fix: export ADPERF_HMAC_KEY=<a long random secret>; "
                "user ids are pseudonymized with it at extraction (keep it stable; on rotation "
                "set ADPERF_HMAC_KEY_VERSION to a new label: older days are then re-extracted)"
            )
        key = SANDBOX_HMAC_KEY
    version = hmac_key_version(key.encode("utf-8"))
    fb = os.environ.get("ADPERF_FACEBOOK_TOKEN", "")
    mm = os.environ.get("ADPERF_MMP_TOKEN", "")
    if is_sandbox:
        fb, mm = fb or SANDBOX_FACEBOOK_TOKEN, mm or SANDBOX_MMP_TOKEN
    return Secrets(
        hmac_key=key.encode("utf-8"),
        facebook_token=fb,
        mmp_token=mm,
        slack_token=os.environ.get("ADPERF_SLACK_TOKEN", ""),
        payments_url=os.environ.get("ADPERF_PAYMENTS_URL", "") or payments().url,
        hmac_key_version=version,
    )


def hmac_key_version(key: bytes | None = None) -> str:
    """ADPERF_HMAC_KEY_VERSION: the label of ADPERF_HMAC_KEY, recorded with pseudonymized data.

    Unset: "1" (the documented default: bump it whenever the key is rotated), or "demo" for the
    sandbox's built-in key. Partitions of another version are extracted again, never joined.
    """
    from adperf.pseudonym import check_key_version

    version = os.environ.get("ADPERF_HMAC_KEY_VERSION", "").strip()
    if not version:
        demo = adperf().sandbox and not os.environ.get("ADPERF_HMAC_KEY", "")
        return "demo" if demo else "1"
    try:
        return check_key_version(version, key)
    except ValueError as exc:
        raise ConfigError(
            f"ADPERF_HMAC_KEY_VERSION is not a valid key version: {exc}. Fix: set it to a short "
            "label of the current ADPERF_HMAC_KEY (e.g. 2 after the second rotation)"
        ) from None


def google_ads_credentials() -> GoogleAdsCredentials:
    """Google Ads secrets from the environment (ADPERF_GOOGLE_ADS_*); never logged."""
    from adperf.sources.google_ads import GoogleAdsCredentials

    env = os.environ.get
    token = env("ADPERF_GOOGLE_ADS_DEVELOPER_TOKEN", "")
    if adperf().sandbox:
        return GoogleAdsCredentials(developer_token=token or SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN)
    return GoogleAdsCredentials(
        developer_token=token,
        client_id=env("ADPERF_GOOGLE_ADS_CLIENT_ID", ""),
        client_secret=env("ADPERF_GOOGLE_ADS_CLIENT_SECRET", ""),
        refresh_token=env("ADPERF_GOOGLE_ADS_REFRESH_TOKEN", ""),
        json_key_file_path=env("ADPERF_GOOGLE_ADS_JSON_KEY_PATH", ""),
        impersonated_email=env("ADPERF_GOOGLE_ADS_IMPERSONATED_EMAIL", ""),
    )


def csv_list(value: str) -> list[str]:
    """'a, b,c' → ['a', 'b', 'c']."""
    return [v.strip() for v in value.split(",") if v.strip()]


def data_root() -> Path | S3Bucket:
    """The lake root: a folder, or the bucket of an s3:// data_root (one client per process)."""
    url = adperf().data_root
    if not url.startswith("s3://"):
        return Path(url)
    where = s3()
    return _bucket(url, where.endpoint_url, where.region, where.profile, os.getpid())


@functools.lru_cache(maxsize=4)
def _bucket(url: str, endpoint: str, region: str, profile: str, pid: int) -> S3Bucket:
    # Per pid: luigi forks workers, and a boto3 client's connections must not cross a fork.
    from adperf.objstore import S3Bucket

    return S3Bucket.connect(url, endpoint_url=endpoint, region=region, profile=profile)


def files_root() -> Path:
    """The folder of the run's files besides the lake ([adperf] files_root)."""
    conf = adperf()
    if conf.files_root:
        return Path(conf.files_root)
    return Path("var/files") if conf.data_root.startswith("s3://") else Path(conf.data_root)
