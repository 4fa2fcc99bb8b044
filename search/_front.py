"""The feasible Pareto front and its hypervolume, by one rule.

The front: COMPLETE trials that meet every constraint, one per architecture, that no other
such trial beats. Identical architectures (same ``Architecture.to_string()``) collapse to the
earliest trial: a sampler that proposes a known network again adds no new choice. "Beats":
dominates (at least as good in every objective, better in one), or has the same objective
vector and fewer params (then the earlier trial): a user is never shown two rows that differ
only in trial number. ``pareto_trials`` reads it from a study; ``FrontTracker`` keeps the
same front trial by trial for the progress bar, the summary and the MLflow metrics, and its
hypervolume. Both use ``_Candidate`` and ``_beats``, so they cannot disagree.

Hypervolume: objective values become losses in [0, 1] inside the config's fixed box,
``(v - best) / (worst - best)`` (``search._objectives.normalise``), and the reference point
is (1, ..., 1), so numbers are comparable across runs and samplers. Optuna 5.0 has no public
hypervolume function, so ``hypervolume`` computes it exactly here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from search._budget import is_done
from search._config import ExperimentConfig
from search._objectives import normalise
from search._record import TrialRecord, is_feasible


@dataclass(frozen=True)
class _Candidate:
    """What the front rule compares: losses (every objective minimised), params, trial number."""

    loss: tuple[float, ...]
    params: float  # tie-break for equal losses; inf when the trial recorded no costs
    number: int

    @classmethod
    def of(cls, t: FrozenTrial, signs: Sequence[float]) -> _Candidate:
        rec = TrialRecord.of(t)
        costs = next(iter(rec.costs.values()), {}) if rec is not None else {}
        # Exact signed values, so dominance is decided to the last bit.
        loss = tuple(s * v for s, v in zip(signs, t.values, strict=True))
        return cls(loss, float(costs.get("params", math.inf)), t.number)


def _beats(a: _Candidate, b: _Candidate) -> bool:
    """``a`` pushes ``b`` off the front: dominates it, or ties it with fewer params (earlier)."""
    if a.loss == b.loss:
        return (a.params, a.number) < (b.params, b.number)
    return all(x <= y for x, y in zip(a.loss, b.loss, strict=True))


def _signs(directions: Sequence[optuna.study.StudyDirection]) -> list[float]:
    return [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions]


def _arch_key(t: FrozenTrial) -> str:
    rec = TrialRecord.of(t)
    return rec.arch if rec is not None and rec.arch else f"trial:{t.number}"


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front by the module's rule, one trial per architecture, by number."""
    signs = _signs(study.directions)
    seen: set[str] = set()
    cands: dict[int, tuple[_Candidate, FrozenTrial]] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not is_feasible(t) or t.values is None or _arch_key(t) in seen:
            continue
        seen.add(_arch_key(t))
        cands[t.number] = (_Candidate.of(t, signs), t)
    pool = [c for c, _ in cands.values()]
    return [t for c, t in cands.values() if not any(_beats(o, c) for o in pool if o is not c)]


def hypervolume(points: Iterable[Sequence[float]]) -> float:
    """Hypervolume of normalised losses against the fixed reference point (1, ..., 1).

    Exact: a sweep for two objectives; for more, slices along the last objective, each slice
    the hypervolume of the points below it in one dimension fewer (Knowles' HSO; fine for
    fronts of a few hundred points). Points not inside the box count for nothing.
    """
    pts = {tuple(float(x) for x in p) for p in points}
    pts = {p for p in pts if all(x < 1.0 for x in p)}
    if not pts:
        return 0.0
    dims = {len(p) for p in pts}
    if len(dims) != 1:
        raise ValueError(f"points have different numbers of objectives: {sorted(dims)}")
    return _hv(sorted(pts), (1.0,) * dims.pop())


def _hv(pts: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume of minimised ``pts`` (sorted, all below ``ref``) up to ``ref``."""
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        return _hv2(pts, ref[0], ref[1])
    by_last = sorted(pts, key=lambda p: p[-1])
    total = 0.0
    below: list[tuple[float, ...]] = []  # projections of the points under the current slice
    for i, p in enumerate(by_last):
        bisect.insort(below, p[:-1])
        top = by_last[i + 1][-1] if i + 1 < len(by_last) else ref[-1]
        if top > p[-1]:
            total += _hv(below, ref[:-1]) * (top - p[-1])
    return total


def _hv2(pts: list[tuple[float, ...]], ref_x: float, ref_y: float) -> float:
    """Area dominated by 2-D points sorted by x: one rectangle per new lowest y."""
    area, low_y = 0.0, ref_y
    for x, y in pts:
        if y < low_y:
            area += (ref_x - x) * (low_y - y)
            low_y = y
    return area


@dataclass
class RejectStats:
    """Which constraint rejected how many candidates, and the closest value seen."""

    count: dict[str, int] = field(default_factory=dict)
    closest: dict[str, float] = field(default_factory=dict)  # smallest value / limit - 1


class FrontTracker:
    """The front of the trials added so far, its hypervolume, and counts of rejections."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.names = [o.name for o in cfg.objectives]
        self.bounds = cfg.hv_bounds
        self._signs = [-1.0 if d == "maximize" else 1.0 for d in cfg.directions]
        self.front: dict[int, tuple[float, ...]] = {}  # trial number -> normalised losses
        self._cands: dict[int, _Candidate] = {}  # trial number -> what the rule compares
        self._archs: set[str] = set()  # architectures of feasible trials seen so far
        self.n_finished = 0
        self.n_stopped = 0  # done trials stopped at a rung budget (PRUNED, not surplus)
        self.n_feasible = 0
        self.hv = 0.0
        self.rejects = RejectStats()

    @classmethod
    def of_trials(cls, cfg: ExperimentConfig, trials: Iterable[FrozenTrial]) -> FrontTracker:
        tracker = cls(cfg)
        for t in trials:
            tracker.add(t)
        return tracker

    def add(self, t: FrozenTrial) -> bool:
        """Count a trial; True when the front changed."""
        if not is_done(t):
            return False
        self.n_finished += 1
        if t.state == optuna.trial.TrialState.PRUNED:
            self.n_stopped += 1
        for k, v in t.constraints.items():
            if v > 0:
                self.rejects.count[k] = self.rejects.count.get(k, 0) + 1
            self.rejects.closest[k] = min(self.rejects.closest.get(k, math.inf), v)
        if not is_feasible(t) or t.values is None:
            return False
        self.n_feasible += 1
        arch = _arch_key(t)
        if arch in self._archs:  # a repeat: the earliest trial of an architecture stands for it
            return False
        self._archs.add(arch)
        cand = _Candidate.of(t, self._signs)
        if any(_beats(q, cand) for q in self._cands.values()):
            return False
        for n in [n for n, q in self._cands.items() if _beats(cand, q)]:
            del self._cands[n], self.front[n]
        self._cands[t.number] = cand
        self.front[t.number] = normalise(t.values, self.names, self.bounds)
        self.hv = hypervolume(self.front.values())
        return True
