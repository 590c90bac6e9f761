"""The Luigi tasks of adperf: `luigi --module tasks DailyReport --date YYYY-MM-DD`."""

import luigi.tools.range  # noqa: F401 - registers RangeDaily for `luigi --module tasks RangeDaily`

from tasks.config import (  # noqa: F401 - registers the config sections
    adperf,
    contribution,
    facebook,
    fx,
    logs,
    ltv,
    mmp,
    payments,
    rules,
    sandbox,
    slack,
)
from tasks.pipeline import (
    AdSpend,
    Attribution,
    CampaignReport,
    CohortRoas,
    Contribution,
    DailyReport,
    EventLogs,
    InstallHistory,
    Installs,
    InstallsMonth,
    LoadReport,
    Ltv,
    PaymentHistory,
    Payments,
    PaymentsMonth,
    SlackReport,
    Spend,
)

__all__ = [
    "AdSpend",
    "Attribution",
    "CampaignReport",
    "CohortRoas",
    "Contribution",
    "DailyReport",
    "EventLogs",
    "InstallHistory",
    "Installs",
    "InstallsMonth",
    "LoadReport",
    "Ltv",
    "Payments",
    "PaymentHistory",
    "PaymentsMonth",
    "SlackReport",
    "Spend",
]
