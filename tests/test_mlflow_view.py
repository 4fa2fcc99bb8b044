"""The MLflow view a user compares studies in: experiment kind, flat params, summary metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import pytest

from search._cli import main
from search._mlflow import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, mlflow_name, sync, tracking_uri_for
from search._record import is_feasible
from search._run import run_study
from search._study import load_existing_study
from tests.test_search_run import tiny


def _pareto_json(study: str, storage: str) -> list[dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pareto", "--study", study, "--storage", storage, "--json"]) == 0
    return json.loads(out.getvalue())["pareto"]


def test_mlflow_name_keeps_only_allowed_characters() -> None:
    assert (
        mlflow_name("best_accuracy@latency_s@t4<=0.0005") == "best_accuracy/latency_s/t4_le_0.0005"
    )
    assert mlflow_name("constraint.latency_s@jetson-orin") == "constraint.latency_s/jetson-orin"
    assert mlflow_name("a:b*c") == "a_b_c"


def test_parent_run_has_flat_params_and_the_decision_metrics(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cfg = tiny(tmp_path, trials=12, mlflow=True, study="flat")
    r = run_study(cfg, progress=False)
    assert r.mlflow_error is None
    c = MlflowClient(tracking_uri_for(tmp_path))
    exp = c.get_experiment_by_name("roofnas/default")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    parent = c.get_run(r.mlflow_parent_run_id)
    p = parent.data.params
    # the default config: T4 then Jetson Orin, fp16, batch 256, fused; 0.7 ms and 1.1 ms budgets
    assert p["target.0"] == "t4/fp16/b256/fused" and p["target.1"] == "jetson-orin/fp16/b256/fused"
    assert p["constraint.latency_s/t4"] == "0.0007"
    assert p["constraint.latency_s/jetson-orin"] == "0.0011"
    assert p["constraint.params/t4"] == "100000"
    assert p["objective.0"] == "accuracy (maximize)"
    assert p["objective.1"] == "latency_s@t4 (minimize)"
    assert (p["sampler"], p["seed"], p["trials"], p["estimator"]) == ("nsga2", "0", "12", "none")
    m = parent.data.metrics
    study = load_existing_study("flat", r.storage)
    assert m["pareto_size"] == len(_pareto_json("flat", r.storage)) == len(r.pareto)
    assert m["n_finished"] == 12 and math.isclose(m["hypervolume"], r.hypervolume)
    feasible = [t for t in study.trials if is_feasible(t)]
    assert m["n_feasible"] == len(feasible) == r.n_feasible
    best = max(t.values[0] for t in feasible)
    assert m["best_accuracy/latency_s/t4_le_0.0007"] == best
    assert m["best_accuracy/latency_s/jetson-orin_le_0.0011"] == best


def test_sync_tags_an_existing_experiment_and_logs_the_summary(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cfg = tiny(tmp_path, trials=6, study="old")
    r = run_study(cfg, progress=False, write_artifacts=False)
    uri = tracking_uri_for(tmp_path)
    c = MlflowClient(uri)
    exp_id = c.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    assert EXPERIMENT_KIND_TAG not in c.get_experiment(exp_id).tags
    study = load_existing_study("old", r.storage)
    res = sync(study, tracking_uri=uri, experiment_name="made-before",
               objective_names=["accuracy", "latency_s"], cfg=cfg)  # fmt: skip
    assert c.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    m = c.get_run(res.parent_run_id).data.metrics
    assert (m["n_finished"], m["pareto_size"]) == (6, len(r.pareto))


def test_sync_without_cfg_still_tags(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cfg = dataclasses.replace(tiny(tmp_path, trials=3, study="bare"))
    r = run_study(cfg, progress=False, write_artifacts=False)
    uri = tracking_uri_for(tmp_path)
    study = load_existing_study("bare", r.storage)
    sync(study, tracking_uri=uri, experiment_name="e2", objective_names=["accuracy", "latency_s"],
         artifact_root=tmp_path / "art")  # fmt: skip
    assert (
        MlflowClient(uri).get_experiment_by_name("e2").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    )


def test_ui_prints_the_runs_page_of_each_experiment(tmp_path: Path) -> None:
    """The URL opens the runs table: MLflow's UI routes on ``#/experiments/<id>/runs``."""
    cfg = tiny(tmp_path, trials=3, mlflow=True, study="u")
    run_study(cfg, progress=False, write_artifacts=False)
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri_for(tmp_path)).get_experiment_by_name("roofnas/default")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["ui", "--out-dir", str(tmp_path), "--port", "5123", "--dry-run"]
        assert main(argv) == 0
    url = (
        f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs?workflowType="
        "machine_learning&searchFilter=tags.%60roofnas.role%60%20%3D%20%27parent%27"
    )
    assert f"roofnas/default: {url}" in out.getvalue()
    assert "Default:" not in out.getvalue()


def _two_studies(tmp_path: Path) -> str:
    """Studies "a" (seed 0) and "b" (seed 1) in one storage, 10 trials each, MLflow on."""
    storage = ""
    for name, seed in (("a", 0), ("b", 1)):
        r = run_study(tiny(tmp_path, trials=10, mlflow=True, study=name, seed=seed),
                      progress=False, write_artifacts=False)  # fmt: skip
        storage = r.storage
    return storage


def test_compare_tabulates_plots_and_logs_a_compare_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    storage = _two_studies(tmp_path)
    out = io.StringIO()
    png = tmp_path / "cmp.png"
    argv = ["compare", "a", "b", "--storage", storage, "--out-dir", str(tmp_path),
            "--out", str(png), "--json"]  # fmt: skip
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    res = json.loads(out.getvalue())
    assert [r["study"] for r in res["studies"]] == ["a", "b"]
    c = MlflowClient(tracking_uri_for(tmp_path))
    for row in res["studies"]:
        assert row["trials"] == 10
        assert row["front_size"] == len(_pareto_json(row["study"], storage))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = c.get_run(res["mlflow_run_id"])
    assert run.info.run_name == "compare:a+b" and run.data.tags["roofnas.role"] == "compare"
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"cmp.png", "compare.csv", "compare.json"} <= arts
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.name == "roofnas/default" and exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_compare_text_table_and_unknown_study(tmp_path: Path, capsys: object) -> None:
    storage = _two_studies(tmp_path)
    assert main(["compare", "a", "b", "--storage", storage, "--out-dir", str(tmp_path),
                 "--no-mlflow"]) == 0  # fmt: skip
    text = capsys.readouterr().out  # type: ignore[attr-defined]
    header, row_a, row_b = text.splitlines()[:3]
    assert header.split() == ["study", "trials", "feasible", "front_size", "hypervolume"]
    assert row_a.split()[:2] == ["a", "10"] and row_b.split()[:2] == ["b", "10"]
    assert (tmp_path / "compare_a+b.png").is_file()
    assert main(["compare", "a", "nope", "--storage", storage, "--no-mlflow"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "study='nope'" in err and "'a'" in err


# The test makes its stopped and failed trials with ask / tell, which Optuna warns about on a
# heartbeat storage; the search itself only runs trials through study.optimize.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_sync_leaves_out_surplus_trials_but_keeps_stopped_and_failed_ones(tmp_path: Path) -> None:
    """A surplus trial (past the budget, pruned before any work) is a race artefact, not a run.

    Two workers can both start the last trial of a budget; the one that loses prunes it
    at once. MLflow shows what the budget paid for, plus failures, and nothing else.
    """
    import optuna
    from mlflow import MlflowClient

    from search._budget import SURPLUS_ATTR

    cfg = tiny(tmp_path, trials=3, study="sur")
    r = run_study(cfg, progress=False, write_artifacts=False)
    study = load_existing_study("sur", r.storage)
    surplus, stopped = study.ask(), study.ask()
    study._storage.set_trial_system_attr(surplus._trial_id, SURPLUS_ATTR, True)
    for t in (surplus, stopped):
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    uri = tracking_uri_for(tmp_path)
    names = ["accuracy", "latency_s"]
    res = sync(study, tracking_uri=uri, experiment_name="s", objective_names=names,
               artifact_root=tmp_path / "art")  # fmt: skip
    assert res.written == 3 + 1 + 1  # three completed, one stopped, one failed; no surplus
    exp = MlflowClient(uri).get_experiment_by_name("s")
    statuses = sorted(run.info.status for run in MlflowClient(uri).search_runs([exp.experiment_id])
                      if run.info.run_id != res.parent_run_id)  # fmt: skip
    assert statuses == ["FAILED", "FINISHED", "FINISHED", "FINISHED", "KILLED"]


def test_a_running_worker_does_not_log_surplus_trials(tmp_path: Path) -> None:
    """The observer of a running worker, like ``sync``, leaves surplus trials out of MLflow.

    Fails if ``MlflowObserver.on_trial`` queues every finished trial: then a worker that lost
    the race for the last trial of a budget logs a child run for a trial that did no work.
    """
    import optuna

    from search._budget import SURPLUS_ATTR
    from search._front import FrontTracker
    from search._observers import MlflowObserver

    class Recorder:
        def __init__(self) -> None:
            self.written: list[int] = []

        def write_children(self, records: list) -> int:  # type: ignore[type-arg]
            self.written += [r.trial_number for r in records]
            return len(records)

        def log_parent_metrics(self, steps: object) -> None:
            pass

    cfg = tiny(tmp_path, trials=3, study="obs")
    pruned = optuna.trial.TrialState.PRUNED
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    stopped = optuna.trial.create_trial(state=pruned, params={"x": 0.5}, distributions=dist)
    surplus = optuna.trial.create_trial(state=pruned, system_attrs={SURPLUS_ATTR: True})
    stopped.number, surplus.number = 7, 8
    view = Recorder()
    observer = MlflowObserver(cfg, FrontTracker(cfg), view)  # type: ignore[arg-type]
    for t in (stopped, surplus):
        observer.on_trial(t)
    observer.close()
    assert view.written == [7]
