"""Conditions on a metric, written ``METRIC OP NUMBER`` (``in_support>=0.9``, ``eval/mmd_bw1<1e-3``): the
quality bar of ``benchmarks/toy_quality.py`` and the constraints of a Tune search space (``tune/space.py``)."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w./]*)\s*(>=|<=|>|<)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")
EXPECTED = "METRIC>=NUMBER, <=, > or <"


@dataclass(frozen=True)
class MetricCondition:
    """One condition, e.g. ``in_support >= 0.9``."""

    metric: str
    op: str
    threshold: float

    def holds(self, metrics: Mapping[str, Any]) -> bool:
        """True when the metric is present, finite and on the right side of the threshold."""
        value = metrics.get(self.metric)
        return value is not None and math.isfinite(value) and COMPARISONS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_condition(text: Any) -> MetricCondition | None:
    """``"balance<=0.03"`` → its condition; None when ``text`` is not of the form METRIC OP NUMBER."""
    match = _CONDITION.match(str(text))
    return MetricCondition(match[1], match[2], float(match[3])) if match else None
