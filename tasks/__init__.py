"""The Luigi tasks of adperf: `luigi --module tasks DailyReport --date YYYY-MM-DD`."""

import luigi.tools.range  # noqa: F401 - registers RangeDaily for `luigi --module tasks RangeDaily`

from tasks import ops  # noqa: F401 - registers the monitoring and alert event handlers
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
    EventLogsShard,
    InstallHistory,
    Installs,
    InstallsMonth,
    LoadReport,
    LogFiles,
    Ltv,
    MmpReady,
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
    "EventLogsShard",
    "InstallHistory",
    "Installs",
    "InstallsMonth",
    "LoadReport",
    "LogFiles",
    "Ltv",
    "MmpReady",
    "Payments",
    "PaymentHistory",
    "PaymentsMonth",
    "SlackReport",
    "Spend",
]
