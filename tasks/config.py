"""luigi.cfg sections, one lowercase Config class each; secrets come from the environment only."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from adperf.errors import ConfigError

if TYPE_CHECKING:
    from adperf.files import Files
    from adperf.objstore import S3Bucket
    from adperf.sources.apple_ads import AppleAdsCredentials
    from adperf.sources.google_ads import GoogleAdsCredentials
    from adperf.transform.watch import BudgetPlan, WatchSettings

# Only for the sandbox's fake endpoints: a production config never falls back to these.
SANDBOX_HMAC_KEY = "adperf-sandbox-demo-key-not-secret"
SANDBOX_FACEBOOK_TOKEN = "EAAsandboxDemoTokenNotSecret"
SANDBOX_MMP_TOKEN = "sandbox-mmp-token-not-secret"
SANDBOX_GOOGLE_ADS_DEVELOPER_TOKEN = "sandbox-google-ads-developer-token-not-secret"
SANDBOX_TIKTOK_TOKEN = "sandbox-tiktok-access-token-not-secret"
# The sandbox's Apple Ads API user: a P-256 key made for the demo, public in this repository.
SANDBOX_APPLE_ADS_CLIENT = ("SEARCHADS.sandbox-client", "SEARCHADS.sandbox-team", "sandbox-key")
SANDBOX_APPLE_ADS_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgqq7cVN4tJxzk5m4y
PhFX8E71Jyl79+axHtErQbcjIZShRANCAASisth2m4PeIB3AR6biJ40MyYeKG59I
bQs15nNwN5M3ymZDaMy/XQ3EIr9H31FMO0oASPcZqaAoSY266rqSznZX
-----END PRIVATE KEY-----
"""


class _Section(Register):
    """luigi's task metaclass, keeping a section's instance (`config.adperf()`) while what it
    is read from stays the same.

    luigi reads every parameter of a Config from the config parser at each instantiation
    (~0.6 ms for [adperf]), then finds the instance in its cache; the lake's targets, the
    event handlers and the sandbox's endpoints ask for [adperf] and [slack] thousands of times
    a pipeline day (2 s of a closed loop's warm day). The kept instance is the one luigi's
    cache would return: it is used while the section's raw values and [DEFAULT] are equal, and
    the config parser, the command line and luigi's instance cache (Register.
    clear_instance_cache) are the same objects. A section with ${ENV} values is read each time.
    """

    _kept: dict[type, tuple[Any, Any]] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        key = None if args or kwargs else _section_key(cls)
        if key is None:
            return super().__call__(*args, **kwargs)
        kept = _Section._kept.get(cls)
        if kept is not None and kept[0] == key:
            return kept[1]
        instance = super().__call__()
        _Section._kept[cls] = (key, instance)
        return instance


def _section_key(cls: Any) -> tuple[Any, ...] | None:
    """What a section's instance is read from (None: cannot tell, read it again)."""
    conf = luigi.configuration.get_config()
    sections, defaults = getattr(conf, "_sections", None), getattr(conf, "_defaults", None)
    if not isinstance(sections, dict) or not isinstance(defaults, dict):
        return None  # another parser (toml): no memo
    raw = tuple(sections.get(cls.get_task_family(), {}).items())
    if any("$" in str(v) for _, v in raw) or any("$" in str(v) for v in defaults.values()):
        return None
    cache = getattr(cls, "_Register__instance_cache", None)
    if cache is None:
        return None  # luigi's instance cache is disabled
    return (id(conf), raw, tuple(defaults.items()), id(CmdlineParser.get_instance()), id(cache))


class adperf(luigi.Config, metaclass=_Section):  # noqa: N801 - section names are lowercase
    sandbox = luigi.BoolParameter(
        default=False, description="run on the built-in simulated ad world (fake endpoints)"
    )
    data_root = luigi.Parameter(
        default="var/lake",
        description="root of the lake: a folder, or s3://bucket/prefix (endpoint: [s3])",
    )
    files_root = luigi.Parameter(
        default="",
        description="folder of the run's files besides the lake (report pages and Slack post "
        "markers unless data_root is s3://, then they are in the bucket; MMP wait markers); "
        "empty: data_root, or var/files when data_root is s3://",
    )
    warehouse_url = luigi.Parameter(
        default="sqlite:///var/warehouse.db", description="SQLAlchemy URL of the report tables"
    )
    report_timezone = luigi.Parameter(
        default="Asia/Seoul", description="IANA time zone that defines a report day"
    )
    report_currency = luigi.Parameter(default="USD", description="currency of every amount")
    load_comparison_days = luigi.BoolParameter(
        default=False,
        description="a report first builds the warehouse tables of the day before and the week "
        "before when they are missing, so its d/d and w/w columns are filled on a first run "
        "(adperf demo turns it on); off: a day whose d-7 predates the sources still renders",
    )
    account_days = luigi.ChoiceParameter(
        default="account",
        choices=["account", "report"],
        description="days of an ad account in another zone than report_timezone: 'account' = "
        "its own calendar days (as the platforms and MMP dashboards show them), 'report' = "
        "spend re-cut into report_timezone days from hourly rows",
    )


class sandbox(luigi.Config, metaclass=_Section):  # noqa: N801
    root = luigi.Parameter(default="var/sandbox", description="folder of the simulated world")
    profile = luigi.Parameter(default="small", description="scale: tiny, small, medium, large")
    seed = luigi.IntParameter(default=7, description="random seed of the world")
    drift = luigi.BoolParameter(
        default=False,
        description="the world drifts: some campaigns fade (creative fatigue), some start late",
    )
    days = luigi.IntParameter(
        default=0,
        description="days of history a first build of the world has (0: the profile's own); "
        "an existing world keeps its start",
    )


class facebook(luigi.Config, metaclass=_Section):  # noqa: N801
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

    def spend_settings(self) -> dict[str, Any]:
        """The settings and secret of its spend fetch (adperf.platforms entry `fetch`)."""
        return {
            "api_version": self.api_version,
            "access_token": secrets().facebook_token,
            "use_async": self.use_async,
        }

    def action_settings(self) -> dict[str, Any]:
        """The settings and secret of its action client (adperf.platforms entry `actions`)."""
        token = os.environ.get("ADPERF_FACEBOOK_TOKEN", "")
        if adperf().sandbox:
            token = token or SANDBOX_FACEBOOK_TOKEN
        return {
            "api_version": self.api_version,
            "access_token": token,
            "expand_active": actions().expand_active,
        }


class google_ads(luigi.Config, metaclass=_Section):  # noqa: N801
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

    def spend_settings(self) -> dict[str, Any]:
        """The settings and credentials of its spend fetch (adperf.platforms entry `fetch`)."""
        return {"credentials": google_ads_credentials(), "timeout": self.timeout_s}

    def action_settings(self) -> dict[str, Any]:
        """The credentials of its action client (adperf.platforms entry `actions`)."""
        return {"credentials": google_ads_credentials()}


class tiktok(luigi.Config, metaclass=_Section):  # noqa: N801
    base_url = luigi.Parameter(
        default="https://business-api.tiktok.com", description="TikTok Business API base URL"
    )
    advertiser_ids = luigi.Parameter(default="", description="comma-separated advertiser ids")
    lookback_days = luigi.IntParameter(
        default=7, description="recent days re-pulled each run (TikTok restates them)"
    )
    timeout_s = luigi.FloatParameter(default=60.0, description="timeout of one API request")

    def spend_settings(self) -> dict[str, Any]:
        """The settings and token of its spend fetch (adperf.platforms entry `fetch`)."""
        return {"access_token": tiktok_token(), "timeout": self.timeout_s}

    def action_settings(self) -> dict[str, Any]:
        """The token of its action client (adperf.platforms entry `actions`)."""
        return {"access_token": tiktok_token()}


class apple_ads(luigi.Config, metaclass=_Section):  # noqa: N801
    api_url = luigi.Parameter(
        default="https://api.searchads.apple.com", description="Apple Ads Campaign Management API"
    )
    # Not "token_url": no parameter name may suggest a secret (tests/faults/test_secrets.py).
    oauth_url = luigi.Parameter(
        default="https://appleid.apple.com/auth/oauth2/token",
        description="OAuth 2 token endpoint (client credentials)",
    )
    org_ids = luigi.Parameter(default="", description="comma-separated org ids (X-AP-Context)")
    client_id = luigi.Parameter(default="", description="the API user's client id (SEARCHADS.…)")
    team_id = luigi.Parameter(default="", description="the API user's team id (SEARCHADS.…)")
    key_id = luigi.Parameter(
        default="",
        description="id of the API user's public key; the private key only in the "
        "environment (ADPERF_APPLE_ADS_PRIVATE_KEY, PEM)",
    )
    lookback_days = luigi.IntParameter(
        default=7, description="recent days re-pulled each run (Apple Ads restates them)"
    )
    timeout_s = luigi.FloatParameter(default=60.0, description="timeout of one API request")

    def spend_settings(self) -> dict[str, Any]:
        """The settings and credentials of its spend fetch (adperf.platforms entry `fetch`)."""
        return {"credentials": apple_ads_credentials(), "timeout": self.timeout_s}

    def action_settings(self) -> dict[str, Any]:
        """The credentials of its action client (adperf.platforms entry `actions`)."""
        return {"credentials": apple_ads_credentials()}


class mmp(luigi.Config, metaclass=_Section):  # noqa: N801
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


class payments(luigi.Config, metaclass=_Section):  # noqa: N801
    url = luigi.Parameter(
        default="", description="SQLAlchemy URL of the payments DB (env ADPERF_PAYMENTS_URL wins)"
    )
    table = luigi.Parameter(default="payments", description="payments table name")
    query = luigi.Parameter(
        default="", description="replaces the default SELECT; named parameters :start and :end"
    )


class logs(luigi.Config, metaclass=_Section):  # noqa: N801
    path = luigi.Parameter(default="", description="glob of a day's log files; {date} = YYYY-MM-DD")
    max_bad_fraction = luigi.FloatParameter(
        default=0.01, description="share of malformed lines above which the day fails"
    )
    shards = luigi.IntParameter(
        default=1,
        description="EventLogs split into shards, each reading its share of the day's bytes "
        "(whole gzips, line-aligned ranges of plain files), one task per shard",
    )
    engine = luigi.ChoiceParameter(
        default="duckdb",
        choices=["duckdb", "spark"],
        description="duckdb: in the worker (sharded by [logs] shards); spark: a luigi "
        "PySparkTask for days too big for one machine ([spark] section; pip install adperf[spark])",
    )


class fx(luigi.Config, metaclass=_Section):  # noqa: N801
    rates_path = luigi.Parameter(default="", description="CSV date,currency,rate")


class slack(luigi.Config, metaclass=_Section):  # noqa: N801
    base_url = luigi.Parameter(
        default="https://slack.com/api/", description="Slack Web API base URL"
    )
    channel = luigi.Parameter(default="#marketing-daily", description="channel of the report")
    outbox = luigi.Parameter(
        default="var/outbox", description="folder for the report when there is no token"
    )
    dashboard_base_url = luigi.Parameter(
        default="",
        description="URL of a static host serving <data_root>/reports/ (the message links "
        "<url>/date=<day>/dashboard.html); empty: the message names its path under data_root",
    )


class rules(luigi.Config, metaclass=_Section):  # noqa: N801
    target_roas = luigi.FloatParameter(
        default=1.0,
        description="ROAS a campaign should reach (break-even: 1.0); true ROAS likely below "
        "it: scale back (at most scale_roas)",
    )
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
        default=0.6,
        description="scale when P(true ROAS > scale_roas) and P(the next budget step returns "
        "more than target_roas per dollar) are at least this, pause when P(true ROAS < "
        "pause_roas) is, scale back when P(the last step returned less than target_roas) is; "
        "else hold",
    )
    cpi_days = luigi.IntParameter(
        default=3,
        description="the window's value per install is valued at the CPI of this many last days "
        "(a budget changed since buys dearer or cheaper installs); 0: the window's own CPI",
    )
    pooled = luigi.BoolParameter(
        default=True,
        description="decide on the window's pooled cohorts (false: on the report day's cohort "
        "alone, the rule before issue 18, kept so the decision bench can compare)",
    )
    follow_up_days = luigi.IntParameter(
        default=7,
        description="an applied action is followed up this many days after its report day: "
        "spend, installs, CPI and pROAS of as many days since the change against before it "
        "(1 to 15)",
    )


class actions(luigi.Config, metaclass=_Section):  # noqa: N801
    scale_factor = luigi.FloatParameter(
        default=1.2, description="`adperf actions apply`: a scale multiplies the budget by this"
    )
    max_budget_increase = luigi.FloatParameter(
        default=0.5,
        description="largest share one scale may raise a budget by (scale_factor above "
        "1 + this is refused)",
    )
    expand_active = luigi.BoolParameter(
        default=False,
        description="`adperf actions apply --expand`: copies of a winning adset start ACTIVE "
        "(default: PAUSED, for a person to switch on)",
    )


class ltv(luigi.Config, metaclass=_Section):  # noqa: N801
    history_days = luigi.IntParameter(default=365, description="payment history for the fit")
    horizon_days = luigi.IntParameter(default=365, description="horizon of predicted LTV")
    discount_rate = luigi.FloatParameter(default=0.0, description="annual discount rate")


class contribution(luigi.Config, metaclass=_Section):  # noqa: N801
    window_days = luigi.IntParameter(default=28, description="days of the match graph")
    partner_share = luigi.FloatParameter(
        default=0.2, description="share of payers' revenue credited to their partners"
    )


class watch(luigi.Config, metaclass=_Section):  # noqa: N801
    """Thresholds of the report's watch section (adperf.transform.watch)."""

    baseline_weeks = luigi.IntParameter(
        default=8,
        description="a campaign's CPI, ROAS D0 and installs are compared with the same "
        "weekday of this many weeks before (median and MAD)",
    )
    min_baseline_weeks = luigi.IntParameter(
        default=4, description="fewer same-weekday days with delivery than this: no check yet"
    )
    z = luigi.FloatParameter(
        default=3.5,
        description="robust z (distance from the median in spreads) that flags a "
        "change; the spread is at least the sampling noise of the day's counts",
    )
    min_change = luigi.FloatParameter(
        default=0.4, description="and the change must be at least this share of the median"
    )
    min_installs = luigi.IntParameter(
        default=20, description="campaigns with a median of fewer installs are not watched"
    )
    min_spend = luigi.FloatParameter(
        default=50.0,
        description="CPI and ROAS D0 are watched on days with this much spend (report currency)",
    )
    min_payers = luigi.FloatParameter(
        default=5.0,
        description="ROAS D0 is watched on campaigns with a median of this many D0 "
        "payers (with fewer, one purchase moves it by its whole amount)",
    )
    overdispersion = luigi.FloatParameter(
        default=0.15,
        description="installs vary with spend beyond Poisson: their spread is at "
        "least sqrt(m + (overdispersion x m)^2) around a median of m",
    )
    max_install_gap = luigi.FloatParameter(
        default=0.6,
        description="platform-reported installs more than this share above (or "
        "below) the MMP's attributed installs of a campaign are flagged",
    )
    min_gap_installs = luigi.IntParameter(
        default=50, description="... when the larger of the two counts is at least this"
    )
    pace_tolerance = luigi.FloatParameter(
        default=0.2,
        description="month-to-date spend more than this share ahead of or behind "
        "the [budgets] plan (pro rata by days) is flagged",
    )
    pace_min_days = luigi.IntParameter(
        default=5, description="pacing is watched from this day of the month on"
    )
    share_days = luigi.IntParameter(
        default=28, description="days of the baseline of the restricted / unattributed shares"
    )
    share_rise = luigi.FloatParameter(
        default=0.05,
        description="a share this much (0.05 = 5 points) above its median, and "
        "beyond z spreads, is flagged",
    )


class budgets(luigi.Config, metaclass=_Section):  # noqa: N801
    """Monthly budget plan in report currency, for the watch's pacing check."""

    platforms = luigi.DictParameter(
        default={}, description='monthly budget per platform, e.g. {"facebook": 90000}'
    )
    campaigns = luigi.DictParameter(
        default={},
        description='monthly budget per campaign, keyed "platform:campaign_id", e.g. '
        '{"facebook:120210000000000001": 15000}',
    )


class s3(luigi.Config, metaclass=_Section):  # noqa: N801
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


def tiktok_token() -> str:
    """ADPERF_TIKTOK_TOKEN (the sandbox's own token when unset there); never logged."""
    token = os.environ.get("ADPERF_TIKTOK_TOKEN", "")
    return token or (SANDBOX_TIKTOK_TOKEN if adperf().sandbox else "")


def apple_ads_credentials() -> AppleAdsCredentials:
    """The Apple Ads API user: ids from [apple_ads], the private key from the environment
    (ADPERF_APPLE_ADS_PRIVATE_KEY, PEM); the sandbox's demo user when unset there."""
    from adperf.sources.apple_ads import AppleAdsCredentials

    key = os.environ.get("ADPERF_APPLE_ADS_PRIVATE_KEY", "")
    cfg = apple_ads()
    if adperf().sandbox and not key:
        client_id, team_id, key_id = SANDBOX_APPLE_ADS_CLIENT
        return AppleAdsCredentials(client_id, team_id, key_id, SANDBOX_APPLE_ADS_PRIVATE_KEY)
    return AppleAdsCredentials(cfg.client_id, cfg.team_id, cfg.key_id, key)


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


def shared_files() -> Files:
    """Where the files every worker host must see are (report pages, Slack post markers): the
    lake's bucket for an s3:// data_root, else files_root (docs/lake.md)."""
    from adperf.files import LocalFiles, S3Files

    root = data_root()
    return LocalFiles(files_root()) if isinstance(root, Path) else S3Files(root)


def watch_settings() -> WatchSettings:
    """[watch] as the plain settings adperf.transform.watch takes."""
    from adperf.transform.watch import WatchSettings

    w = watch()
    return WatchSettings(**{k: getattr(w, k) for k in WatchSettings.__dataclass_fields__})


def budget_plan() -> BudgetPlan:
    """[budgets] as a BudgetPlan; a campaign key without its platform is a ConfigError."""
    from adperf.transform.watch import BudgetPlan

    b, campaigns = budgets(), {}
    for key, value in b.campaigns.items():
        platform, sep, campaign_id = str(key).partition(":")
        if not sep or not platform or not campaign_id:
            raise ConfigError(
                f"[budgets] campaigns key {key!r} is not platform:campaign_id. Fix: e.g. "
                '"facebook:120210000000000001"'
            )
        campaigns[(platform, campaign_id)] = float(value)
    return BudgetPlan({str(k): float(v) for k, v in b.platforms.items()}, campaigns)
