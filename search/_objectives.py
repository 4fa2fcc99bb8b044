"""Objective and constraint names, and their values from cost reports.

A metric is written ``metric`` or ``metric@target``: ``latency_s@jetson-orin``
is the latency on the hardware target named "jetson-orin"; without ``@`` the
primary (first) target is meant. ``params`` and ``macs`` do not depend on the
target; ``mac_bytes`` and ``peak_activation_bytes`` depend on its precision
and batch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from costmodel import CostReport

# metric -> attribute of ``CostReport.total``
COST_METRICS: dict[str, str] = {
    "latency_s": "latency_s",
    "params": "params",
    "macs": "macs",  # multiply-accumulates (what many slides call "FLOPs"); FLOPs = 2 * MACs
    "mac_bytes": "mac_bytes",
    "peak_activation_bytes": "peak_activation_bytes",
}
OBJECTIVE_METRICS = (
    "accuracy",
    "latency_s",
    "params",
    "macs",
    "mac_bytes",
    "peak_activation_bytes",
)
CONSTRAINT_METRICS = ("latency_s", "params", "macs", "mac_bytes", "peak_activation_bytes")


@dataclass(frozen=True)
class MetricRef:
    metric: str
    target: str | None = None  # None: the primary hardware target

    @property
    def name(self) -> str:
        return self.metric if self.target is None else f"{self.metric}@{self.target}"

    @property
    def mlflow_key(self) -> str:
        # MLflow keys may not contain "@"
        return self.metric if self.target is None else f"{self.target}/{self.metric}"


def parse_metric(text: str, allowed: Sequence[str]) -> MetricRef:
    metric, _, target = text.partition("@")
    if metric not in allowed:
        hint = difflib.get_close_matches(metric, list(allowed), n=1)
        raise ValueError(
            f"unknown name {text!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; known: {list(allowed)}, optionally with '@<hardware target>'"
        )
    if "@" in text and not target:
        raise ValueError(f"{text!r}: empty hardware target after '@'")
    if metric == "accuracy" and target:
        raise ValueError(f"{text!r}: accuracy does not depend on a hardware target")
    return MetricRef(metric, target or None)


def cost_value(ref: MetricRef, reports: Mapping[str, CostReport], primary: str) -> float:
    """The value of a cost metric from the per-target reports."""
    report = reports[ref.target or primary]
    return float(getattr(report.total, COST_METRICS[ref.metric]))


def constraint_value(value: float, limit: float) -> float:
    """What Optuna sees: <= 0 feasible; 0.25 reads "25 % over the limit"."""
    return value / limit - 1.0


def cost_summary(report: CostReport) -> dict[str, float]:
    """The costs logged for every trial on every target."""
    t = report.total
    return {
        "latency_s": t.latency_s,
        "params": t.params,
        "macs": t.macs,
        "mac_bytes": t.mac_bytes,
        "peak_activation_bytes": t.peak_activation_bytes,
    }


def normalise(
    values: Sequence[float], names: Sequence[str], bounds: Mapping[str, tuple[float, float]]
) -> tuple[float, ...]:
    """Objective values as losses in [0, 1] inside the box: (v - best) / (worst - best).

    Works for both directions (a maximised accuracy has best > worst). The
    hypervolume reference point is (1, ..., 1), fixed by the config, so
    numbers are comparable across runs and samplers.
    """
    out = []
    for v, n in zip(values, names, strict=True):
        best, worst = bounds[n]
        out.append((v - best) / (worst - best))
    return tuple(out)
