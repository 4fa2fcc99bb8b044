"""Multi-fidelity (search._fidelity): the MO-ASHA rung rule, the reporter, and a whole run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import searchspace
from search import ConfigError, load_config, load_existing_study, parse_config, run_study
from search._budget import SURPLUS_ATTR
from search._estimators import EstimatorConfig, make_estimator
from search._fidelity import FidelityConfig, RungReporter, nondominated_fronts, rung_continues
from search._front import FrontTracker
from search._mlflow import TAG_STOPPED, child_record
from search._record import ATTR_RECORD, TrialRecord, rung_points

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX_MIN = ["maximize", "minimize"]  # (accuracy, latency)

# ---------------------------------------------------------------- non-dominated sorting


def test_fronts_of_a_small_set() -> None:
    # minimise both: (0,3), (1,1), (3,0) are non-dominated; (2,2) is beaten by (1,1) only;
    # (3,3) by (2,2) too, so it is a front further; the duplicate (1,1) shares front 0.
    pts = [[1, 1], [2, 2], [0, 3], [1, 1], [3, 0], [3, 3]]
    assert nondominated_fronts(pts, ["minimize", "minimize"]) == [0, 1, 0, 0, 0, 2]
    # maximising the first objective turns the order around in it
    assert nondominated_fronts([[1, 1], [2, 1]], MAX_MIN) == [1, 0]


def test_first_trial_at_a_rung_goes_on_and_the_rule_is_top_one_in_eta() -> None:
    assert rung_continues([0.0, 9.0], [], MAX_MIN, 3)  # alone at its rung: n = 1
    # single objective, 6 recorded + 1 = 7 points, eta 3: the top max(1, 7 // 3) = 2 go on
    recorded = [[v] for v in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)]
    assert rung_continues([0.85], recorded, ["maximize"], 3)  # one better (0.9)
    assert not rung_continues([0.75], recorded, ["maximize"], 3)  # two better
    assert rung_continues([0.8], recorded, ["maximize"], 3)  # a tie with the 2nd goes on


def test_a_bad_eta_or_direction_names_the_value() -> None:
    with pytest.raises(ValueError, match="eta=1"):
        rung_continues([1.0], [], ["maximize"], 1)
    with pytest.raises(ValueError, match="direction='up'"):
        nondominated_fronts([[1.0]], ["up"])


points2 = st.lists(
    st.tuples(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False)),
    min_size=0, max_size=40,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(points2, st.integers(2, 5))
def test_a_point_dominating_every_recorded_one_goes_on(pts: list, eta: int) -> None:
    best = [
        max((p[0] for p in pts), default=0.0) + 0.1,
        min((p[1] for p in pts), default=1.0) - 0.1,
    ]
    assert rung_continues(best, pts, MAX_MIN, eta)


@settings(max_examples=60, deadline=None)
@given(points2, st.integers(2, 5))
def test_a_point_dominated_by_enough_recorded_ones_stops(pts: list, eta: int) -> None:
    # worse than every recorded point in both objectives: all n - 1 of them are in better
    # fronts, and n - 1 >= max(1, n // eta) once anything is recorded.
    worst = [
        min((p[0] for p in pts), default=0.0) - 0.1,
        max((p[1] for p in pts), default=0.0) + 0.1,
    ]
    assert rung_continues(worst, pts, MAX_MIN, eta) == (not pts)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=40), st.integers(2, 5))
def test_single_objective_is_the_asha_rule(values: list[float], eta: int) -> None:
    # ASHA / Optuna's SuccessiveHalvingPruner: go on iff at least as good as the
    # max(1, n // eta)-th best value of the n at the rung (this trial's included).
    *recorded, mine = values
    kth_best = sorted(values, reverse=True)[max(1, len(values) // eta) - 1]
    assert rung_continues([mine], [[v] for v in recorded], ["maximize"], eta) == (mine >= kth_best)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=4, max_size=40, unique=True))
def test_with_eta_2_about_half_stop(values: list[float]) -> None:
    # Each point against all the others: with distinct values exactly max(1, n // 2) go on.
    pts = [[v] for v in values]
    going_on = sum(rung_continues(p, pts[:i] + pts[i + 1 :], ["minimize"], 2)
                   for i, p in enumerate(pts))  # fmt: skip
    assert going_on == max(1, len(pts) // 2)


@settings(max_examples=40, deadline=None)
@given(points2.filter(lambda p: len(p) >= 2), st.integers(2, 4))
def test_multi_objective_keeps_at_most_the_quota_plus_one_front(pts: list, eta: int) -> None:
    # Whole fronts go on while fewer than the quota k lie in better fronts: at most k - 1
    # points before the last front that goes on, plus that front.
    n, k = len(pts), max(1, len(pts) // eta)
    fronts = nondominated_fronts(pts, MAX_MIN)
    going_on = [rung_continues(p, pts[:i] + pts[i + 1 :], MAX_MIN, eta) for i, p in enumerate(pts)]
    assert all(going_on[i] for i in range(n) if fronts[i] == 0)
    assert sum(going_on) <= k - 1 + max(fronts.count(f) for f in set(fronts))


# ---------------------------------------------------------------- the reporter in a study


FID = FidelityConfig(min_budget=1, max_budget=9, eta=3)  # rungs 1, 3, 9


def _objective(acc_by_epoch: dict[int, list[float]], latency: list[float], source: Any = None):
    """An objective that reports accuracy per epoch like a training estimator."""

    def objective(trial: optuna.Trial) -> list[float]:
        i = trial.number
        rep = RungReporter(trial, FID, MAX_MIN, [math.nan, latency[i]], 0, source=source)
        try:
            for epoch in range(1, 10):
                rep(acc_by_epoch[i][epoch - 1], epoch)
        finally:
            trial.set_user_attr("stopped", rep.stopped_at)
        return [acc_by_epoch[i][-1], latency[i]]

    return objective


def test_rung_reporter_records_every_rung_and_prunes_in_a_study() -> None:
    # Same latency, so accuracy decides. Trial 0: first at every rung, goes on. Trial 1 is
    # worse at rung 1 (n = 2, quota max(1, 0) = 1, one better): stopped at 1. Trial 2 is better.
    acc = {0: [0.5] * 9, 1: [0.4] * 9, 2: [0.6] * 9}
    study = optuna.create_study(directions=MAX_MIN)
    study.optimize(_objective(acc, [1.0, 1.0, 1.0]), n_trials=3)
    t0, t1, t2 = study.get_trials()
    assert [t.state.name for t in (t0, t1, t2)] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert rung_points(t0) == {1.0: (0.5, 1.0), 3.0: (0.5, 1.0), 9.0: (0.5, 1.0)}
    assert rung_points(t1) == {1.0: (0.4, 1.0)} and t1.user_attrs["stopped"] == 1.0
    assert t2.user_attrs["stopped"] is None


def test_a_cheaper_trial_goes_on_despite_lower_accuracy() -> None:
    # Trial 1 is less accurate but faster: not dominated, front 0 with trial 0: goes on.
    acc = {0: [0.5] * 9, 1: [0.4] * 9}
    study = optuna.create_study(directions=MAX_MIN)
    study.optimize(_objective(acc, [2.0, 1.0]), n_trials=2)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]


def test_reaching_max_budget_never_prunes_and_jumps_record_every_rung() -> None:
    study = optuna.create_study(directions=MAX_MIN)
    study.optimize(_objective({0: [0.9] * 9}, [1.0]), n_trials=1)
    trial = study.ask()
    rep = RungReporter(trial, FID, MAX_MIN, [0.0, 5.0], 0)
    rep(0.1, 9)  # straight to the full budget: every rung recorded, no comparison
    assert rep.values == {1.0: 0.1, 3.0: 0.1, 9.0: 0.1} and rep.stopped_at is None
    rep(0.0, 9)  # nothing new: no write, no rule
    assert rep.values[9.0] == 0.1


def test_local_mode_reads_other_trials_from_the_storage_study() -> None:
    # The running trial lives in an in-memory study; the storage holds trial 0's rung
    # points (as study.add_trial copies them). The storage's trial 0 has the same number as
    # the running trial and must still count.
    storage = optuna.create_study(directions=MAX_MIN)
    storage.optimize(_objective({0: [0.9] * 9}, [1.0]), n_trials=1)
    work = optuna.create_study(directions=MAX_MIN)
    trial = work.ask()
    assert trial.number == 0
    rep = RungReporter(trial, FID, MAX_MIN, [0.0, 1.0], 0, source=storage)
    with pytest.raises(optuna.TrialPruned, match="budget 1"):
        rep(0.5, 1)
    assert rep.stopped_at == 1.0


def test_stopped_trials_are_counted_but_surplus_ones_are_not() -> None:
    # A trial the rung rule stopped and a surplus trial are both PRUNED; only the first was
    # paid for by the budget, and neither is a front candidate.
    cfg = load_config()
    make = optuna.trial.create_trial
    rec = TrialRecord(arch="a", feasible=True, stopped_at_budget=1.0, rungs=((1.0, 0.3),))
    stopped = make(state=optuna.trial.TrialState.PRUNED, user_attrs={ATTR_RECORD: rec.to_dict()})
    assert TrialRecord.of(stopped) == rec
    surplus = make(state=optuna.trial.TrialState.PRUNED, system_attrs={SURPLUS_ATTR: True})
    front = FrontTracker.of_trials(cfg, [stopped, surplus])
    assert (front.n_finished, front.n_stopped, front.n_feasible, front.front) == (1, 1, 0, {})


# ---------------------------------------------------------------- training under a reporter


SHAPE = (3, 16, 16)


def _net(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )  # fmt: skip


def _train(epochs: int) -> Any:
    cfg = EstimatorConfig(kind="train", epochs=epochs, batch_size=32, max_train_samples=256,
                          max_val_samples=128, seed=4, torch_threads=1)  # fmt: skip
    return make_estimator(cfg, SHAPE, 10, build=_net)


class Recording:
    """A reporter that never stops, or stops at ``stop_at``; keeps what it was told."""

    def __init__(self, fid: FidelityConfig, stop_at: float | None = None) -> None:
        self.max_budget = float(fid.max_budget)
        self.rungs = fid.rungs()
        self.stop_at = stop_at
        self.calls: list[tuple[float, float]] = []

    def __call__(self, value: float, step: float) -> None:
        self.calls.append((value, step))
        if step == self.stop_at:
            raise optuna.TrialPruned()


def test_a_trial_never_stopped_ends_bit_identical_to_plain_training() -> None:
    fid = FidelityConfig(min_budget=1, max_budget=4, eta=2)  # rungs 1, 2, 4: evaluated at 1, 2
    plain = _train(epochs=4).score(8)
    rep = Recording(fid)
    staged = _train(epochs=1).score(8, report=rep)  # epochs comes from the reporter
    assert staged == plain  # exact: evaluating in between changes nothing training uses
    assert [s for _, s in rep.calls] == [1, 2, 4] and rep.calls[-1][0] == plain
    # the accuracy at rung 1 is that of one epoch under the 4-epoch schedule, not of a
    # 1-epoch run (whose learning rate would already have annealed to zero)
    assert 0.0 <= rep.calls[0][0] <= 1.0


def test_a_stopped_trial_trains_no_further() -> None:
    fid = FidelityConfig(min_budget=1, max_budget=4, eta=2)
    rep = Recording(fid, stop_at=1)
    with pytest.raises(optuna.TrialPruned):
        _train(epochs=4).score(8, report=rep)
    assert [s for _, s in rep.calls] == [1]


def test_estimators_that_cannot_use_budgets_refuse_a_reporter() -> None:
    rep = Recording(FidelityConfig(min_budget=1, max_budget=3))
    est = make_estimator(EstimatorConfig(kind="synflow", batch_size=8), SHAPE, 10, build=_net)
    with pytest.raises(ValueError, match="kind='synflow' cannot use budgets"):
        est.score(8, report=rep)


# ---------------------------------------------------------------- the [fidelity] table


def _cfg_dict(**over: Any) -> dict[str, Any]:
    d = load_config().to_dict()
    d["estimator"] = {"kind": "train", "dataset": "digits"}
    d.update(over)
    return d


def test_fidelity_table_parses_and_round_trips() -> None:
    cfg = parse_config(_cfg_dict(fidelity={"min_budget": 1, "max_budget": 9, "eta": 3}))
    assert cfg.fidelity == FidelityConfig(1, 9, 3) and cfg.fidelity.rungs() == (1.0, 3.0, 9.0)
    assert parse_config(cfg.to_dict()) == cfg
    plain = parse_config(_cfg_dict())
    assert plain.fidelity is None and "fidelity" not in plain.to_dict()  # old fingerprints hold
    assert plain.fingerprint() != cfg.fingerprint()
    over = plain.with_overrides(min_budget=1, max_budget=3)
    assert over.fidelity == FidelityConfig(1, 3, 3)
    assert over.with_overrides(eta=2).fidelity == FidelityConfig(1, 3, 2)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"fidelity": {"min_budget": 1, "max_budget": 3, "rate": 2}},
         "unknown fidelity key 'rate'"),
        ({"fidelity": {"max_budget": 3}}, "fidelity.min_budget is required"),
        ({"fidelity": {"min_budget": 3, "max_budget": 1}}, "fidelity.max_budget=1 must be >="),
        ({"fidelity": {"min_budget": 1, "max_budget": 3, "eta": 1}}, "fidelity.eta=1"),
        ({"fidelity": {"min_budget": 0.5, "max_budget": 3}},
         "fidelity.min_budget=0.5 must be a whole"),
        ({"fidelity": {"min_budget": 1, "max_budget": 3}, "estimator": {"kind": "proxy_rank"}},
         "estimator.kind='proxy_rank' cannot use budgets"),
        ({"fidelity": {"min_budget": 1, "max_budget": 3}, "estimator": {"kind": "none"}},
         "estimator.kind='none' cannot use budgets"),
        ({"fidelity": "fast"}, "fidelity='fast' must be a table"),
    ],
)  # fmt: skip
def test_bad_fidelity_tables_name_key_and_value(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_config(_cfg_dict(**over))


def test_fidelity_with_a_proxy_estimator_names_the_table_too() -> None:
    d = _cfg_dict(fidelity={"min_budget": 1, "max_budget": 3}, estimator={"kind": "synflow"})
    with pytest.raises(ConfigError, match=r"fidelity=\{'min_budget': 1, 'max_budget': 3\}"):
        parse_config(d)


# ---------------------------------------------------------------- a whole run


TINY_SPACE = """
name = "tiny"
input_channels = 3
resolutions = [16]
num_classes = 10

[stem]
kernels = [3]
widths = [8, 16]
stride = 1
activations = ["relu"]

[[stages]]
stride = 2
depths = [1]
widths = [8, 16, 32]
ops = ["conv"]
kernels = [3, 5]
activations = ["relu", "hardswish"]

[head]
widths = [0]
activations = ["relu"]
"""

RUN_CONFIG = """
name = "moasha"
space = "tiny.toml"
trials = 12
seed = 0
objectives = ["accuracy", "latency_s"]

[[hardware]]
profile = "t4"
precision = "fp16"

[constraints]
params = 1e9

[sampler]
name = "random"

[estimator]
kind = "train"
dataset = "digits"
batch_size = 64
max_train_samples = 256
max_val_samples = 128
torch_threads = 1

[fidelity]
min_budget = 1
max_budget = 3
eta = 3

[hypervolume]
latency_s = [0.0, 1e-3]

[mlflow]
enabled = false
"""


def _run_config(tmp_path: Path) -> Any:
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    (tmp_path / "moasha.toml").write_text(RUN_CONFIG)
    return load_config(tmp_path / "moasha.toml").with_overrides(run_dir=str(tmp_path / "run"))


@pytest.mark.parametrize("local", [True, False], ids=["local-sampler", "shared-storage"])
def test_run_with_fidelity_stops_trials_counts_them_and_keeps_them_off_the_front(
    tmp_path: Path, local: bool
) -> None:
    cfg = _run_config(tmp_path)
    r = run_study(cfg, progress=False, write_artifacts=True, local_sampler=local)
    study = load_existing_study(r.study_name, r.storage)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    states = [t.state.name for t in trials]
    assert len(trials) == r.n_finished == cfg.trials  # every one counted in the budget
    assert set(states) == {"COMPLETE", "PRUNED"} and r.n_stopped == states.count("PRUNED")
    assert FrontTracker.of_trials(cfg, trials).n_stopped == r.n_stopped
    assert set(r.pareto) <= {t.number for t in trials if t.state.name == "COMPLETE"}
    # Every decision is the rule applied to the rung points of the trials before it.
    seen: dict[float, list[tuple[float, ...]]] = {}
    for t in trials:
        rec = TrialRecord.of(t)
        assert rec is not None and rec.estimator_s is not None and rec.estimator_s > 0
        pts = rung_points(t)
        assert [b for b, _ in rec.rungs] == sorted(pts) and rec.rungs[0][0] == 1.0
        goes_on = rung_continues(pts[1.0], seen.get(1.0, []), cfg.directions, 3)
        assert (t.state.name == "COMPLETE") == goes_on
        assert rec.stopped_at_budget == (None if goes_on else 1.0)
        assert sorted(pts) == ([1.0, 3.0] if goes_on else [1.0])
        for b, p in pts.items():
            seen.setdefault(b, []).append(p)
        if not goes_on:
            child = child_record(t, [o.name for o in cfg.objectives], set(), r.study_name)
            assert child.tags[TAG_STOPPED] == "1" and child.status == "KILLED"
            assert child.metrics["rung/1"] == rec.rungs[0][1]
    # A completed trial's accuracy is that of plain training for max_budget epochs.
    done = next(t for t in trials if t.state.name == "COMPLETE" and t.number > 0)
    est_cfg = EstimatorConfig.from_dict({**cfg.estimator, "seed": cfg.seed, "epochs": 3})
    arch = searchspace.Architecture.from_string(TrialRecord.of(done).arch)
    plain = make_estimator(est_cfg, tuple(arch.input_shape), arch.num_classes).score(arch)
    assert done.values[0] == plain


def test_config_from_the_cli_flags(tmp_path: Path) -> None:
    from search._cli import _config_from_args, build_parser

    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    (tmp_path / "moasha.toml").write_text(RUN_CONFIG)
    args = build_parser().parse_args(
        ["run", "--config", str(tmp_path / "moasha.toml"), "--max-budget", "9", "--eta", "2"]
    )
    cfg = _config_from_args(args)
    assert cfg.fidelity == FidelityConfig(1, 9, 2) and isinstance(cfg.fidelity.max_budget, int)
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "moasha.toml"),
                                      "--estimator", "synflow"])  # fmt: skip
    with pytest.raises(ConfigError, match="cannot use budgets"):
        _config_from_args(args)
