"""How fast a distillation run learns at each step, and how many steps fit a time budget.

The learning rate warms up linearly and then decays over the run's total steps. A time budget
(``DistillOptions.max_seconds``) makes that total a measurement: every few steps the trainer fits it to the
time left at the pace so far, and the schedule follows, so a run cut by time still ends with its learning rate
decayed (a run stopped mid-schedule would end at a high rate, on a worse student).
"""

from __future__ import annotations

import math
from collections.abc import Callable

BUDGET_EVERY = 10  # steps between fits of the step count to the time left


def lr_factor(total: int, warmup: int, schedule: str, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine or linear decay to ``min_ratio`` (or constant)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1.0 - (1.0 - min_ratio) * progress
        return 1.0

    return factor


def steps_in_budget(step: int, seconds_per_step: float, seconds_left: float, planned: int) -> int:
    """The total steps a run can reach at this pace in the time left: at least ``step``, at most ``planned``."""
    if seconds_per_step <= 0:
        return planned
    more = math.floor(max(0.0, seconds_left) / seconds_per_step)
    return max(step, min(planned, step + more))
