"""The Luigi graph of DESIGN.md, by stage: tasks/extract.py, tasks/transform.py, tasks/load.py.

Kept so `from tasks.pipeline import DailyReport` in scripts and notebooks still works; new code
imports the stage module. Task family names are the class names, so moving a class between
modules changes nothing luigid, its task history or `luigi --module tasks ...` sees.
"""

from tasks.base import COHORT_WINDOW_DAYS, PLATFORMS, LakeTask
from tasks.extract import (
    AdSpend,
    DayFiles,
    EventLogs,
    EventLogsShard,
    EventLogsSpark,
    Installs,
    InstallsMonth,
    LogFiles,
    MmpReady,
    Payments,
    PaymentsMonth,
)
from tasks.load import (
    DailyReport,
    Dashboard,
    LoadReport,
    RenderReport,
    SlackReport,
)
from tasks.transform import (
    ActionOutcomes,
    Attribution,
    CampaignReport,
    CohortRoas,
    CohortRoasSegments,
    Contribution,
    InstallHistory,
    Ltv,
    LtvModel,
    PaymentHistory,
    Restatements,
    Spend,
    SpendLatest,
    Watch,
)

__all__ = [
    "ActionOutcomes",
    "AdSpend",
    "Attribution",
    "COHORT_WINDOW_DAYS",
    "CampaignReport",
    "CohortRoas",
    "CohortRoasSegments",
    "Contribution",
    "DailyReport",
    "Dashboard",
    "DayFiles",
    "EventLogs",
    "EventLogsShard",
    "EventLogsSpark",
    "InstallHistory",
    "Installs",
    "InstallsMonth",
    "LakeTask",
    "LoadReport",
    "LogFiles",
    "Ltv",
    "LtvModel",
    "MmpReady",
    "PLATFORMS",
    "PaymentHistory",
    "Payments",
    "PaymentsMonth",
    "RenderReport",
    "Restatements",
    "SlackReport",
    "Spend",
    "SpendLatest",
    "Watch",
]
