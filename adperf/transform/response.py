"""How installs answer a budget change, learned from adperf's own follow-ups, and what the next
budget step returns per dollar (docs/model.md, section 3).

A bigger budget reaches past the audience that converts best: installs grow slower than spend.
With CPI ∝ spend ** b (b: the CPI's elasticity to spend), a campaign's value grows as
spend ** (1 - b), and the *next* dollar returns less than the average dollar does: a budget
step by `factor` returns average ROAS × (factor ** (1 - b) - 1) / (factor - 1) per dollar added.
A campaign whose average pROAS clears `scale_roas` can still lose money on its next +20%: in the
closed-loop bench the rule that scaled on the average took campaigns worth 1.3-1.6 at their base
budget to 4× and more, where they returned under a dollar per dollar (bench/README.md,
session 12).

b is estimated from the follow-ups (`action_outcomes`) of applied budget changes: each gives
the object's spend and CPI over the days since the change against the days before it. A
weighted least-squares slope of log CPI change on log spend change, through the origin (a
budget left alone changes neither), each follow-up weighted by its Poisson install noise, with a
normal prior centred on 0 (no diminishing returns until the follow-ups show them): without
follow-ups the rule is the one on the average.

Pure: frames in, a dataclass out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from adperf.transform import metrics
from adperf.transform.outcomes import BUDGET_ACTIONS

# Follow-ups of this many report days to the day's are read: a quarter of a year of budget
# changes, recent enough to describe the accounts' audiences as they are.
HISTORY_DAYS = 90
# The prior's sd of b: one follow-up of a +20% step on 200 installs each side carries a
# precision of ~3.3, so ~10 follow-ups weigh as much as the prior (precision 4).
PRIOR_SD = 0.5
# b at or over 1 would mean a bigger budget buys no more installs at all; the follow-ups' noise
# must not take the rule there.
MAX_ELASTICITY = 0.9


@dataclass(frozen=True)
class BudgetResponse:
    """CPI ∝ spend ** elasticity: the posterior mean of the elasticity, its sd, and the number of
    follow-ups it rests on."""

    elasticity: float = 0.0
    sd: float = PRIOR_SD
    follow_ups: int = 0

    def step_up(self, factor: float) -> float:
        """Per dollar added by a budget × `factor`: its return over the average dollar's."""
        grown = float(factor ** (1.0 - self.elasticity))
        return (grown - 1.0) / (factor - 1.0)

    def step_down(self, factor: float) -> float:
        """Per dollar saved by a budget ÷ `factor`: the return lost over the average dollar's."""
        kept = float(factor ** -(1.0 - self.elasticity))
        return (1.0 - kept) / (1.0 - 1.0 / factor)

    def describe(self) -> str:
        """'CPI ∝ spend^0.35 from 23 follow-ups', or the prior's 'CPI flat with spend …'."""
        if self.follow_ups == 0:
            return "CPI flat with spend until follow-ups show otherwise"
        many = "s" if self.follow_ups != 1 else ""
        return f"CPI ∝ spend^{self.elasticity:.2f} from {self.follow_ups} follow-up{many}"


def build_budget_response(outcomes: pd.DataFrame) -> BudgetResponse:
    """The elasticity of CPI to spend from follow-ups (`action_outcomes` rows, any days) of
    budget changes: the posterior of the slope through the origin of log(CPI since / before) on
    log(spend since / before), each weighted by 1 / (1/installs before + 1/installs since).

    Follow-ups without spend or installs on either side (a paused object, a copy) carry no
    slope and are left out. Overlapping follow-ups of one object (two scales within a week)
    each count: their spend ratios say how much the budget changed over each.
    """
    x, y, w = [], [], []
    if len(outcomes):
        rows = outcomes.loc[outcomes["action"].isin(BUDGET_ACTIONS)]
        for r in rows.to_dict("records"):
            spend = metrics.ratio_of(r["spend_since_micros"], r["spend_before_micros"])
            cpi = metrics.ratio_of(r["cpi_since_micros"], r["cpi_before_micros"])
            before, since = _count(r["installs_before"]), _count(r["installs_since"])
            if spend is None or cpi is None or spend <= 0 or cpi <= 0 or not before or not since:
                continue
            if math.isclose(spend, 1.0):
                continue  # the change did not reach the spend: no slope to read
            x.append(math.log(spend))
            y.append(math.log(cpi))
            w.append(1.0 / (1.0 / before + 1.0 / since))
    if not x:
        return BudgetResponse()
    xs, ys, ws = np.array(x), np.array(y), np.array(w)
    precision = float((ws * xs * xs).sum()) + 1.0 / PRIOR_SD**2
    mean = float((ws * xs * ys).sum()) / precision
    return BudgetResponse(
        elasticity=min(max(mean, 0.0), MAX_ELASTICITY),
        sd=1.0 / math.sqrt(precision),
        follow_ups=len(x),
    )


def _count(value: Any) -> int:
    """An installs count as int; 0 where absent."""
    if value is None or pd.isna(value):
        return 0
    return int(value)
