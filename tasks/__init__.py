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
from tasks.extract import (
    AdSpend,
    EventLogs,
    EventLogsShard,
    Installs,
    InstallsMonth,
    LogFiles,
    MmpReady,
    Payments,
    PaymentsMonth,
)
from tasks.load import DailyReport, LoadReport, SlackReport
from tasks.transform import (
    Attribution,
    CampaignReport,
    CohortRoas,
    Contribution,
    InstallHistory,
    Ltv,
    PaymentHistory,
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
