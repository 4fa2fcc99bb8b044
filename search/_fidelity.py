"""Multi-fidelity: budgets, rungs, and the ``report`` callable an estimator trains under.

An estimator that trains (the built-in ``train`` kind, or a user function that takes
``budget`` and ``report``) is given the largest budget and reports its accuracy as it goes;
at each rung budget the trial either goes on or is stopped. Budgets are in the estimator's
own unit (epochs for ``train``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["FidelityConfig", "Reporter"]


class Reporter(Protocol):
    """Called by an estimator with its objective value after ``step`` units of budget.

    Raises ``optuna.TrialPruned`` when the trial should stop there.
    """

    max_budget: float

    def __call__(self, value: float, step: float) -> None: ...


@dataclass(frozen=True)
class FidelityConfig:
    """The ``[fidelity]`` table: rungs ``min_budget * eta**k`` up to ``max_budget``."""

    min_budget: float
    max_budget: float
    eta: int = 3  # reduction factor: about 1 in eta trials goes on at each rung

    def __post_init__(self) -> None:
        for key in ("min_budget", "max_budget"):
            v = getattr(self, key)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"fidelity.{key}={v!r} must be a positive number")
        if self.max_budget < self.min_budget:
            raise ValueError(
                f"fidelity.max_budget={self.max_budget!r} must be >= "
                f"fidelity.min_budget={self.min_budget!r}"
            )
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise ValueError(f"fidelity.eta={self.eta!r} must be an integer >= 2")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FidelityConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"fidelity={d!r} must be a table")
        known = ("min_budget", "max_budget", "eta")
        for key in d:
            if key not in known:
                raise ValueError(
                    f"unknown fidelity key {key!r}={d[key]!r}; known keys: {list(known)}"
                )
        for key in ("min_budget", "max_budget"):
            if key not in d:
                raise ValueError(f"fidelity.{key} is required")
        return cls(**dict(d))

    def rungs(self) -> tuple[float, ...]:
        """Rung budgets ``min_budget * eta**k`` below ``max_budget``, then ``max_budget``."""
        out: list[float] = []
        b = float(self.min_budget)
        while b < self.max_budget * (1 - 1e-9):
            out.append(b)
            b *= self.eta
        out.append(float(self.max_budget))
        return tuple(out)
