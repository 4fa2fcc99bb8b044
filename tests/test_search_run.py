"""The search loop end to end: storage, constraints, resume, Ctrl-C, MLflow view, export."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from search import (
    ExperimentConfig,
    load_config,
    load_existing_study,
    pareto_trials,
    run_study,
    sync,
)
from search._budget import TEST_SLEEP_ENV
from search._mlflow import TAG_TRIAL, tracking_uri_for

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


class CountingEstimator:
    """Test stand-in for an AccuracyEstimator: counts calls, scores by parameter count."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, arch: Any) -> float:
        self.calls += 1
        return 1.0 / (1.0 + len(arch.to_string()) / 1000)


def tiny(tmp_path: Path, **over: Any) -> ExperimentConfig:
    cfg = load_config().with_overrides(
        trials=over.pop("trials", 12), study=over.pop("study", "tiny"), run_dir=str(tmp_path),
        estimator="none", mlflow=over.pop("mlflow", False), seed=over.pop("seed", 0),
    )  # fmt: skip
    ml = dataclasses.replace(cfg.mlflow, log_models=over.pop("log_models", 0))
    return dataclasses.replace(
        cfg, sampler=dataclasses.replace(cfg.sampler, population_size=6), mlflow=ml, **over
    )


def test_constraints_reject_before_any_estimator_work(tmp_path: Path) -> None:
    est = CountingEstimator()
    r = run_study(tiny(tmp_path, trials=16), estimator=est, progress=False, write_artifacts=False)
    study = load_existing_study("tiny", r.storage)
    trials = study.get_trials()
    feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
    infeasible = [t for t in trials if t not in feasible]
    assert infeasible, "the default budgets should reject some of 16 random candidates"
    assert est.calls == len(feasible) == r.estimator_calls
    for t in infeasible:
        assert t.user_attrs["roofnas"]["estimator_skipped"] is True
        assert t.values[0] == 0.0  # neutral accuracy: the hypervolume's worst bound
        # normalised constraint: value / limit - 1, readable as "x % over"
        name = max(t.constraints, key=t.constraints.get)
        limit = {c.name: c.limit for c in load_config().constraints}[name]
        costs = t.user_attrs["roofnas"]["costs"]
        metric, _, target = name.partition("@")
        raw = costs[target or "t4"][metric]
        assert t.constraints[name] == pytest.approx(raw / limit - 1)


@pytest.mark.parametrize("local", [False, True], ids=["shared-sampler", "local-sampler"])
def test_same_seed_gives_the_same_trials(tmp_path: Path, local: bool) -> None:
    kw: dict[str, Any] = dict(progress=False, write_artifacts=False, local_sampler=local)
    a = run_study(tiny(tmp_path, study="a", seed=5), **kw)
    b = run_study(tiny(tmp_path, study="b", seed=5), **kw)
    c = run_study(tiny(tmp_path, study="c", seed=6), **kw)

    def archs(r: Any) -> list[str]:
        st = load_existing_study(r.study_name, r.storage)
        return [t.user_attrs["roofnas"]["arch"] for t in st.get_trials()]

    assert archs(a) == archs(b)
    assert archs(a) != archs(c)


@pytest.mark.parametrize("local", [False, True], ids=["shared-sampler", "local-sampler"])
def test_rerun_continues_the_study_and_counts_finished_trials(tmp_path: Path, local: bool) -> None:
    kw: dict[str, Any] = dict(progress=False, write_artifacts=False, local_sampler=local)
    first = run_study(tiny(tmp_path, trials=6), **kw)
    before = [t.params for t in load_existing_study("tiny", first.storage).get_trials()]
    again = run_study(tiny(tmp_path, trials=10), **kw)
    st = load_existing_study("tiny", again.storage)
    assert first.n_finished == 6 and again.n_finished == 10 and len(st.trials) == 10
    assert [t.params for t in st.get_trials()[:6]] == before
    assert [t.number for t in st.trials] == list(range(10))
    assert all(len(t.params) > 10 and "roofnas" in t.user_attrs for t in st.trials)
    assert all(t.constraints for t in st.trials)
    # the budget is met: a third call does nothing
    third = run_study(tiny(tmp_path, trials=10), **kw)
    assert len(load_existing_study("tiny", third.storage).trials) == 10


def test_a_different_config_on_the_same_study_is_refused(tmp_path: Path) -> None:
    from search import StudyMismatchError

    run_study(tiny(tmp_path, trials=2), progress=False, write_artifacts=False)
    with pytest.raises(StudyMismatchError, match="another config"):
        run_study(tiny(tmp_path, trials=4, seed=9), progress=False, write_artifacts=False)


@pytest.mark.slow
def test_sigint_stops_after_the_running_trial_and_keeps_it(tmp_path: Path) -> None:
    def on_trial(t: optuna.trial.FrozenTrial) -> None:
        if t.number == 2:
            os.kill(os.getpid(), signal.SIGINT)

    r = run_study(tiny(tmp_path, trials=12), progress=False, on_trial=on_trial, local_sampler=True)
    assert r.interrupted and r.n_finished == 3
    st = load_existing_study("tiny", r.storage)
    assert [t.state.name for t in st.trials] == ["COMPLETE"] * 3
    # the summary was written, and the same call continues
    assert (tmp_path / "tiny" / "pareto.csv").is_file()
    assert run_study(tiny(tmp_path, trials=12), progress=False).n_finished == 12


def test_no_feasible_candidate_names_the_constraint_and_closest_value(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, trials=5)
    cfg = dataclasses.replace(
        cfg, constraints=tuple(dataclasses.replace(c, limit=1.0) if c.name == "params" else c
                               for c in cfg.constraints)
    )  # fmt: skip
    r = run_study(cfg, progress=False, write_artifacts=False)
    assert r.n_feasible == 0 and r.n_finished == 5 and r.rejections["params"] == 5
    msg = r.no_feasible_message(cfg)
    assert "'params' rejected the most (5 of 5)" in msg
    st = load_existing_study("tiny", r.storage)
    smallest = min(t.user_attrs["roofnas"]["costs"]["t4"]["params"] for t in st.trials)
    assert f"closest seen {smallest:.4g}" in msg


@pytest.mark.slow
def test_mlflow_down_loses_nothing_and_sync_logs_exactly_once(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, trials=8, mlflow=True)
    bad = dataclasses.replace(cfg.mlflow, tracking_uri="sqlite:////proc/no/such/dir/mlflow.db")
    r = run_study(dataclasses.replace(cfg, mlflow=bad), progress=False, write_artifacts=False)
    assert r.n_finished == 8 and r.mlflow_error and "sync-mlflow" in r.mlflow_error
    study = load_existing_study("tiny", r.storage)
    uri = tracking_uri_for(tmp_path)
    kw: dict[str, Any] = dict(
        tracking_uri=uri, experiment_name="roofnas/default",
        objective_names=["accuracy", "latency_s"], artifact_root=tmp_path / "art",
    )  # fmt: skip
    first = sync(study, **kw)
    second = sync(study, **kw)
    assert (first.written, second.written, second.already) == (8, 0, 8)
    assert first.parent_run_id == second.parent_run_id
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("roofnas/default").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'",
    )
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in runs) == list(range(8))


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny run (20 trials, naswot proxy on digits, MLflow on) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny(tmp, trials=20, mlflow=True, log_models=1, study="e2e")
    cfg = dataclasses.replace(
        cfg, estimator={"kind": "naswot", "dataset": "digits", "batch_size": 8}
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = run_study(cfg, progress=False)
    return {"cfg": cfg, "result": result, "dir": tmp, "uri": tracking_uri_for(tmp)}


@pytest.mark.slow
def test_e2e_mlflow_parent_children_and_artifacts(e2e: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    r = e2e["result"]
    assert r.mlflow_error is None and r.n_finished == 20 and r.pareto
    c = MlflowClient(e2e["uri"])
    exp = c.get_experiment_by_name("roofnas/default")
    parent = c.get_run(r.mlflow_parent_run_id)
    assert parent.data.params["sampler"] == "nsga2" and parent.data.params["seed"] == "0"
    # the default experiment's primary target: T4 fp16, a batch of 256, fused runtime
    assert "t4=t4:fp16:b256:fused" in parent.data.params["profiles"]
    hv = c.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in hv] == sorted(m.step for m in hv) and hv[-1].step == 20
    children = c.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(ch.data.tags[TAG_TRIAL]) for ch in children) == list(range(20))
    study = load_existing_study("e2e", r.storage)
    pareto = {t.number for t in pareto_trials(study)}  # one trial per architecture
    # the parent's Pareto-size metrics count the same front
    sizes = c.get_metric_history(parent.info.run_id, "pareto_size")
    assert max(sizes, key=lambda m: m.step).value == len(pareto)
    assert parent.data.metrics["final_pareto_size"] == len(pareto)
    for ch in children:
        n = int(ch.data.tags[TAG_TRIAL])
        assert ch.data.metrics["pareto"] == float(n in pareto)
        assert {"t4/latency_s", "jetson-orin/latency_s", "t4/params", "feasible"} <= set(
            ch.data.metrics
        )
        assert ch.data.params["arch"] == study.trials[n].user_attrs["roofnas"]["arch"]
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.json", "pareto.png", "roofline_t4.png", "pareto"} <= arts
    sources = {a.path for a in c.list_artifacts(parent.info.run_id, "pareto")}
    assert {f"pareto/trial_{n}.py" for n in pareto} <= sources
    rows = json.loads((e2e["dir"] / "e2e" / "pareto.json").read_text())["pareto"]
    assert {row["trial"] for row in rows} == pareto
    models = c.search_logged_models([exp.experiment_id])
    assert len(models) == 1 and models[0].source_run_id == parent.info.run_id


@pytest.mark.slow
def test_e2e_run_leaves_the_process_tracking_uri_alone(e2e: dict[str, Any]) -> None:
    # logging models goes through mlflow.set_tracking_uri, which also sets the variable:
    # left set, the next run in this process would log into this run's store
    assert e2e["result"].mlflow_error is None
    assert "MLFLOW_TRACKING_URI" not in os.environ


@pytest.mark.slow
def test_e2e_exported_architecture_runs_in_a_fresh_interpreter(
    e2e: dict[str, Any], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from search import export_trial, study_config

    r = e2e["result"]
    study = load_existing_study("e2e", r.storage)
    n = r.pareto[0]
    out = tmp_path / "model.py"
    export_trial(study, study_config(study), n, out)
    child = MlflowClient(e2e["uri"]).search_runs(
        [MlflowClient(e2e["uri"]).get_experiment_by_name("roofnas/default").experiment_id],
        filter_string=f"tags.`{TAG_TRIAL}` = '{n}'",
    )[0]
    code = (
        f"import runpy, torch; ns = runpy.run_path({str(out)!r}); m = ns['Net']().eval(); "
        "y = m(torch.randn(2, 3, 32, 32)); "
        "print(sum(p.numel() for p in m.parameters()), tuple(y.shape))"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    params, shape = proc.stdout.split(maxsplit=1)
    assert int(params) == int(child.data.metrics["t4/params"])
    assert shape.strip() == "(2, 10)"
    report = json.loads(out.with_suffix(".cost.json").read_text())
    assert report["params"] == int(params) and report["trial"] == n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.mlflow_server
def test_e2e_mlflow_server_on_the_store_answers_a_runs_search(e2e: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    port = _free_port()
    exe = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", e2e["uri"], "--workers", "1",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not answer /health within 90 s")
                time.sleep(0.5)
        c = MlflowClient(url)
        exp = c.get_experiment_by_name("roofnas/default")
        parent_id = e2e["result"].mlflow_parent_run_id
        runs = c.search_runs(
            [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
        )
        assert len(runs) == 20
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_update_pareto_corrects_the_metric_and_tag_of_logged_children(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from search._mlflow import TAG_PARETO, ChildRecord, MlflowView

    view = MlflowView(f"sqlite:///{tmp_path / 'm.db'}", "e", "s", tmp_path / "art")
    view.ensure_parent(optuna.create_study(directions=["minimize"]))

    def child(n: int, pareto: bool) -> ChildRecord:
        return ChildRecord(n, "FINISHED", 1000, 2000, {"trial_number": str(n)},
                           {"pareto": float(pareto)},
                           {TAG_TRIAL: str(n), TAG_PARETO: str(pareto).lower()})  # fmt: skip

    assert view.write_children([child(0, False), child(1, True), child(2, True)]) == 3
    # trial 0 joined the front after it was logged, trial 1 left it, trial 2 stayed
    assert view.update_pareto({0, 2}) == 2
    assert view.update_pareto({0, 2}) == 0  # nothing left to correct
    c = MlflowClient(view.tracking_uri)
    runs = {n: c.get_run(rid) for n, (rid, _) in view.logged.items()}
    assert {n: r.data.tags[TAG_PARETO] for n, r in runs.items()} == {
        0: "true", 1: "false", 2: "true"
    }  # fmt: skip
    assert {n: r.data.metrics["pareto"] for n, r in runs.items()} == {0: 1.0, 1: 0.0, 2: 1.0}


def test_timeout_stops_starting_trials_and_a_second_run_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(tmp_path, trials=20)
    # A deadline already passed when the loop starts: no trial starts at all.
    first = run_study(cfg, progress=False, write_artifacts=False, timeout_s=1e-9)
    assert first.n_finished == 0
    # 0.3 s a trial and a 1.2 s deadline: at most 1.2 / 0.3 + 1 = 5 trials, not the 20 of the
    # budget (the trial running at the deadline finishes).
    monkeypatch.setenv(TEST_SLEEP_ENV, "0.3")
    second = run_study(cfg, progress=False, write_artifacts=False, timeout_s=1.2)
    assert second.n_finished <= 5
    monkeypatch.delenv(TEST_SLEEP_ENV)
    third = run_study(cfg, progress=False, write_artifacts=False)
    assert third.n_before == second.n_finished and third.n_finished == 20
    with pytest.raises(ValueError, match="timeout_s=0"):
        run_study(cfg, progress=False, write_artifacts=False, timeout_s=0)
