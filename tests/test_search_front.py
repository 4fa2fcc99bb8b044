"""The Pareto front, its hypervolume, and the trial record (search._front, search._record)."""

from __future__ import annotations

import itertools
import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from search import (
    ExperimentConfig,
    FrontTracker,
    TrialRecord,
    hypervolume,
    load_config,
    pareto_trials,
)
from search._record import ATTR_RECORD

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_hypervolume_known_values() -> None:
    assert hypervolume([]) == 0.0
    assert hypervolume([(0.5, 0.5)]) == pytest.approx(0.25)  # 0.5 * 0.5
    # a staircase: 0.8 * 0.2 + 0.5 * 0.3 + 0.2 * 0.3 = 0.16 + 0.15 + 0.06 = 0.37
    assert hypervolume([(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)]) == pytest.approx(0.37)
    # a dominated point and a duplicate add nothing
    assert hypervolume([(0.2, 0.8), (0.5, 0.5), (0.8, 0.2), (0.9, 0.9), (0.5, 0.5)]) == (
        pytest.approx(0.37)
    )
    # a point outside the box (a loss >= 1) counts for nothing
    assert hypervolume([(0.5, 0.5), (0.1, 1.0), (1.2, 0.0)]) == pytest.approx(0.25)
    assert hypervolume([(0.5, 0.5, 0.5)]) == pytest.approx(0.125)  # 0.5 ** 3
    # two boxes 1 * 0.5 * 0.5 + 0.5 * 1 * 0.5 = 0.5, overlapping in 0.5 ** 3 = 0.125: 0.375
    assert hypervolume([(0.0, 0.5, 0.5), (0.5, 0.0, 0.5)]) == pytest.approx(0.375)
    assert hypervolume([(0.5, 0.5, 0.5, 0.5)]) == pytest.approx(0.0625)  # 0.5 ** 4
    # 1 * 0.5 ** 3 + 0.5 * 1 * 0.5 ** 2 = 0.25, overlapping in 0.5 ** 4 = 0.0625: 0.1875
    assert hypervolume([(0.0, 0.5, 0.5, 0.5), (0.5, 0.0, 0.5, 0.5)]) == pytest.approx(0.1875)


def test_hypervolume_refuses_mixed_dimensions() -> None:
    with pytest.raises(ValueError, match=r"different numbers of objectives: \[2, 3\]"):
        hypervolume([(0.1, 0.2), (0.1, 0.2, 0.3)])


def _inclusion_exclusion(points: list[tuple[float, ...]]) -> float:
    """The union of the boxes [p, 1] by inclusion-exclusion: exact, exponential, independent."""
    pts = [p for p in points if all(x < 1.0 for x in p)]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = [max(c) for c in zip(*subset, strict=True)]
            total += (-1) ** (k + 1) * math.prod(1.0 - c for c in corner)
    return total


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=2, max_value=4).flatmap(
        lambda d: st.lists(
            st.tuples(*[st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.9, 1.0, 1.3])] * d),
            max_size=7,
        )
    )
)
def test_hypervolume_equals_inclusion_exclusion(points: list[tuple[float, ...]]) -> None:
    assert hypervolume(points) == pytest.approx(_inclusion_exclusion(points), abs=1e-12)


def _trial(values: list[float] | None, state: TrialState = TrialState.COMPLETE,
           arch: str | None = None, n_params: float | None = None,
           **constraints: float) -> optuna.trial.FrozenTrial:  # fmt: skip
    attrs = {}
    if arch is not None:
        costs = {} if n_params is None else {"t4": {"params": n_params}}
        attrs = {ATTR_RECORD: TrialRecord(arch=arch, costs=costs).to_dict()}
    t = optuna.trial.create_trial(state=state, values=values, user_attrs=attrs)
    for k, v in constraints.items():
        t.set_constraint(k, v)
    return t


def _front_both_ways(cfg: ExperimentConfig, trials: list[optuna.trial.FrozenTrial]
                     ) -> tuple[FrontTracker, list[int]]:  # fmt: skip
    """The tracker's front and ``pareto_trials``' front of the same trials: they must agree."""
    study = optuna.create_study(directions=cfg.directions)
    for t in trials:
        study.add_trial(t)
    tracker = FrontTracker.of_trials(cfg, study.get_trials())
    numbers = [t.number for t in pareto_trials(study)]
    assert sorted(tracker.front) == numbers
    return tracker, numbers


def test_tracker_and_pareto_trials_agree_with_ties_and_constraints() -> None:
    # accuracy (maximised), latency_s (minimised); hv box [1, 0] x [0, 7e-4] (the default
    # experiment's T4 batch-256 fused budget)
    cfg = load_config()
    trials = [
        _trial([0.5, 2e-4], arch="a", n_params=900, params=-0.1),
        _trial([0.5, 2e-4], arch="b", n_params=800, params=-0.2),  # same values, fewer params
        _trial([0.4, 1e-4], arch="c", n_params=500, params=-0.1),
        _trial([0.5, 3e-4], arch="d", n_params=100, params=-0.1),  # dominated by 0 and 1
        _trial([0.9, 1e-5], arch="e", n_params=100, params=0.5),  # the best values, infeasible
        _trial(None, TrialState.PRUNED),
        _trial(None, TrialState.FAIL),
    ]
    tracker, numbers = _front_both_ways(cfg, trials)
    assert numbers == [1, 2]  # trial 0 ties trial 1 with more params: off the front
    assert (tracker.n_finished, tracker.n_feasible) == (6, 4)  # FAIL is not done; PRUNED is
    assert tracker.rejects.count == {"params": 1}
    assert tracker.rejects.closest["params"] == pytest.approx(-0.2)
    # normalised losses: accuracy (1 - v), latency v / 7e-4: (0.5, 2/7), (0.6, 1/7)
    assert tracker.hv == pytest.approx(hypervolume([(0.5, 2 / 7), (0.6, 1 / 7)]))
    # (1 - 0.5) * (1 - 2/7) + (1 - 0.6) * (2/7 - 1/7) = 5/14 + 2/35 = 29/70
    assert tracker.hv == pytest.approx(29 / 70)


def test_identical_architectures_collapse_to_the_earliest_trial() -> None:
    cfg = load_config()
    trials = [
        _trial([0.5, 2e-4], arch="a", n_params=900),
        _trial([0.3, 3e-4], arch="b", n_params=900),
        # "a" again with a better (noisy) estimate: still one row, the earliest trial
        _trial([0.6, 2e-4], arch="a", n_params=900),
        _trial([0.5, 2e-4], arch="c", n_params=900),  # ties trial 0, same params: earlier wins
    ]
    _, numbers = _front_both_ways(cfg, trials)
    assert numbers == [0]


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([0.2, 0.4, 0.6]),
                          st.sampled_from([1e-4, 2e-4]), st.sampled_from([10, 20])),
                max_size=12))  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_front_has_each_architecture_once_and_no_ties(
    rows: list[tuple[str, float, float, int]],
) -> None:
    cfg = load_config()
    trials = [_trial([acc, lat], arch=a, n_params=p) for a, acc, lat, p in rows]
    _, numbers = _front_both_ways(cfg, trials)
    archs = [rows[n][0] for n in numbers]
    values = [rows[n][1:3] for n in numbers]
    assert len(set(archs)) == len(archs)
    assert len(set(values)) == len(values)
    # every architecture's earliest trial is on the front or beaten by one that is
    for first in {a: i for i, (a, *_) in reversed(list(enumerate(rows)))}.values():
        acc, lat, p = rows[first][1:]
        assert first in numbers or any(
            rows[n][1] >= acc
            and rows[n][2] <= lat
            and (rows[n][1:3] != (acc, lat) or rows[n][3] <= p)
            for n in numbers
        )


def test_tracker_drops_points_a_new_trial_dominates() -> None:
    cfg = load_config()
    tracker = FrontTracker(cfg)
    for n, values in enumerate([[0.5, 2e-4], [0.4, 1e-4], [0.6, 1e-4]]):
        t = _trial(values)
        t.number = n
        assert tracker.add(t)
    assert sorted(tracker.front) == [2]  # (0.6, 1e-4) dominates both earlier points


def test_trial_record_round_trip_and_stored_form() -> None:
    rec = TrialRecord(
        arch="a", costs={"t4": {"params": 10, "latency_s": 1e-4}}, feasible=True,
        estimator_skipped=False, estimator_s=0.5,
    )  # fmt: skip
    stored = {
        "arch": "a", "costs": {"t4": {"params": 10, "latency_s": 1e-4}}, "feasible": True,
        "estimator_skipped": False, "estimator_s": 0.5,
    }  # fmt: skip
    assert rec.to_dict() == stored
    assert TrialRecord.from_dict(stored) == rec
    skipped = TrialRecord(arch="b", feasible=False, estimator_skipped=True)
    assert "estimator_s" not in skipped.to_dict()
    t = optuna.trial.create_trial(values=[1.0], user_attrs={ATTR_RECORD: stored})
    assert TrialRecord.of(t) == rec
    assert TrialRecord.of(optuna.trial.create_trial(values=[1.0])) is None
