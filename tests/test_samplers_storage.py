"""Every sampler end to end on a tiny budget, and the SQLite storage through the CLI.

Each test names in its docstring a change of the code under test that makes it fail.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

import searchspace
from search import (
    ExperimentConfig,
    create_or_load_study,
    load_config,
    load_existing_study,
    pareto_trials,
    run_study,
)
from search._cli import main as cli_main  # the `roofnas` console script
from search._storage import StorageError, open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)  # GPSampler warns per independent param

SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "nsga2": optuna.samplers.NSGAIISampler,
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
}
# 12 trials: past TPE's and GP's 10 random startup trials and NSGA-II's first generation of 4.
TRIALS = 12


def tiny(tmp_path: Path, sampler: str, seed: int, study: str) -> ExperimentConfig:
    """The default experiment (three constraints on two targets), no estimator, no MLflow."""
    cfg = load_config().with_overrides(
        trials=TRIALS, study=study, run_dir=str(tmp_path), estimator="none", mlflow=False,
        seed=seed, sampler=sampler,
    )  # fmt: skip
    return dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, population_size=4))


def run_params(tmp_path: Path, sampler: str, seed: int, study: str) -> list[dict[str, Any]]:
    """Params of each trial of a run as ``python -m search run`` makes it on the journal."""
    r = run_study(tiny(tmp_path, sampler, seed, study), progress=False, write_artifacts=False,
                  local_sampler=True)  # fmt: skip
    return [t.params for t in load_existing_study(study, r.storage).get_trials()]


def random_params(cfg: ExperimentConfig, n: int) -> list[dict[str, Any]]:
    """What Optuna's RandomSampler(seed) draws from the space, outside the search loop."""
    space = searchspace.load_space(cfg.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        searchspace.sample(trial, space)
        out.append(trial.params)
        study.tell(trial, 0.0)
    return out


def gp_slow(name: str) -> Any:
    # GPSampler fits a Gaussian process per trial after its startup: seconds, not milliseconds.
    return pytest.param(name, marks=pytest.mark.slow) if name == "gp" else name


@pytest.mark.parametrize("sampler", [gp_slow(s) for s in SAMPLER_CLASSES])
def test_each_sampler_runs_the_budget_and_records_constraints(tmp_path: Path,
                                                              sampler: str) -> None:  # fmt: skip
    """``sampler = NAME`` runs a study of NAME's class to the budget, constraints on every trial.

    Fails if make_sampler ignored ``sampler.name`` (e.g. always NSGA-II, or random for "tpe":
    the class differs, and the trials are random's), if a trial's constraints were not recorded
    as ``value / limit - 1``, or if the run stopped short of or past the budget.
    """
    cfg = tiny(tmp_path, sampler, seed=3, study=sampler)
    r = run_study(cfg, progress=False, write_artifacts=False, local_sampler=True)
    study = load_existing_study(sampler, r.storage)
    trials = study.get_trials()
    assert r.n_finished == TRIALS and len(trials) == TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert type(create_or_load_study(cfg).sampler) is SAMPLER_CLASSES[sampler]

    limits = {c.name: c.limit for c in cfg.constraints}
    assert set(limits) == {"params", "latency_s", "latency_s@jetson-orin"}
    for t in trials:
        assert set(t.constraints) == set(limits), t.number
        costs = t.user_attrs["roofnas"]["costs"]
        for name, limit in limits.items():
            metric, _, target = name.partition("@")
            raw = costs[target or cfg.primary.name][metric]
            assert t.constraints[name] == pytest.approx(raw / limit - 1), (t.number, name)

    # The sampler decides the trials: random's are Optuna's RandomSampler(seed) draws over the
    # space; every other sampler leaves them after its startup trials.
    params = [t.params for t in trials]
    if sampler == "random":
        assert params == random_params(cfg, TRIALS)
    else:
        assert params != run_params(tmp_path / "random", "random", seed=3, study="r")


@pytest.mark.parametrize("sampler", [gp_slow(s) for s in SAMPLER_CLASSES])
def test_a_seed_repeats_its_trials_and_another_seed_does_not(tmp_path: Path,
                                                             sampler: str) -> None:  # fmt: skip
    """On the journal, one process: the same seed gives the same params, another seed others.

    Fails if make_sampler dropped the seed (``seed=None``: two runs with seed 5 differ), or if a
    single process on the journal reseeded its sampler as a worker does.
    """
    a = run_params(tmp_path, sampler, seed=5, study="a")
    b = run_params(tmp_path, sampler, seed=5, study="b")
    c = run_params(tmp_path, sampler, seed=6, study="c")
    assert len(a) == len(c) == TRIALS
    assert a == b
    assert a != c


# ------------------------------------------------------------------------------- SQLite

# Every candidate is feasible (a lenient budget), so the Pareto front is never empty.
SQLITE_CONFIG = """
name = "sqlite"
space = "cifar"
trials = 5
seed = 1
objectives = ["accuracy", "latency_s"]

[[hardware]]
profile = "t4"
precision = "fp16"

[constraints]
params = 1e9

[sampler]
name = "nsga2"
population_size = 4

[estimator]
kind = "none"

[hypervolume]
latency_s = [0.0, 1.0]
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sqlite_storage_runs_reads_the_front_and_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--storage sqlite:///F``: run, ``pareto`` reads the same file, a second run continues.

    Fails if open_storage treated a ``sqlite:///`` URL as a journal path (no SQLite file), if
    load_existing_study checked the URL as a file path (``pareto`` says it does not exist), or
    if a run on it started the study afresh or ignored the finished trials (not 8 in all).
    """
    config = tmp_path / "sqlite.toml"
    config.write_text(SQLITE_CONFIG)
    db = tmp_path / "db" / "search.db"
    url = f"sqlite:///{db}"
    run = ["run", "--config", str(config), "--storage", url, "--study", "s",
           "--out-dir", str(tmp_path / "out"), "--no-mlflow", "--quiet", "--json"]  # fmt: skip

    code, out, err = cli(capsys, *run)
    assert code == 0, err
    first = json.loads(out)
    assert first["n_finished"] == 5 and first["storage"] == url
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not (tmp_path / "out" / "optuna.journal").exists()
    study = load_existing_study("s", url)
    before = [t.params for t in study.get_trials()]
    front = sorted(t.number for t in pareto_trials(study))
    assert front and front == sorted(first["pareto"])

    code, out, err = cli(capsys, "pareto", "--storage", url, "--study", "s", "--json")
    assert code == 0, err
    rows = json.loads(out)["pareto"]
    assert sorted(row["trial"] for row in rows) == front

    code, out, err = cli(capsys, *run, "--trials", "8")
    assert code == 0, err
    assert json.loads(out)["n_finished"] == 8
    trials = load_existing_study("s", url).get_trials()
    assert [t.number for t in trials] == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.params for t in trials[:5]] == before  # continued, not started afresh


def test_postgresql_without_a_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def no_driver(name: str, *a: Any) -> Any:
        return None if name in ("psycopg", "psycopg2") else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", no_driver)
    with pytest.raises(StorageError, match=r"pip install 'roofnas\[postgres\]'") as e:
        open_storage("postgresql://me:secret@db.example:5432/nas")
    assert "secret" not in str(e.value)
