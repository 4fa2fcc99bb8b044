"""Many workers on one study: global budget, heartbeats and retries, MLflow agreement.

The process tests run `python -m search run` for real (journal file, PostgreSQL, an MLflow
server) and SIGKILL a worker in the middle of a trial; ROOFNAS_TEST_TRIAL_SLEEP_S (a test-only
hook in search._budget) makes each trial last long enough to be caught running, before it
samples; to catch a trial after it sampled, its estimator trains for a few seconds instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search._budget import (
    SURPLUS_ATTR,
    WORKER_ATTR,
    GlobalBudget,
    counts_against_budget,
    optimize_shared,
)
from search._mlflow import mlflow_reachable
from search._storage import HEARTBEAT_ATTR, HeartbeatJournalStorage, is_rdb_url, open_storage
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)

# A small experiment: lenient budget so that every candidate is feasible, no accuracy work
# (the test sleep hook stands in for an expensive estimator), child runs flushed every 2 trials.
CONFIG = """
name = "scaleout"
space = "cifar"
trials = 10
seed = 0
objectives = ["accuracy", "latency_s"]

[[hardware]]
profile = "t4"
precision = "fp16"

[constraints]
params = 1e9

[sampler]
name = "nsga2"
population_size = 6

[estimator]
kind = "none"

[hypervolume]
latency_s = [0.0, 1.0]

[mlflow]
flush_every_trials = 2
flush_every_s = 1
log_models = 0
"""

# Fast failure detection for the tests: heartbeat every second, stale after 3 s.
FAST_HEARTBEAT = {"ROOFNAS_HEARTBEAT_INTERVAL_S": "1", "ROOFNAS_GRACE_PERIOD_S": "3"}

# A space whose every architecture costs about the same to train (16x16 input, one block per
# stage): with TRAIN_SLOWLY a trial spends seconds in its estimator after it sampled its 7
# parameters (2 x 2 x 3 x 2 x 2 x 3 x 2 = 288 architectures, so a retry that sampled afresh
# would match the killed trial's parameters by chance once in 288).
TINY_SPACE = """
name = "tiny"
input_channels = 3
resolutions = [16]
num_classes = 10

[stem]
kernels = [3]
widths = [16]
stride = 1
activations = ["relu", "hardswish"]

[[stages]]
stride = 1
depths = [1]
widths = [16, 24]
ops = ["conv"]
kernels = [3, 5, 7]
activations = ["relu", "hardswish"]

[[stages]]
stride = 2
depths = [1]
widths = [16, 32]
ops = ["conv"]
kernels = [3, 5, 7]
activations = ["relu", "hardswish"]

[head]
widths = [0]
activations = ["relu"]
"""
# About 10 ms an epoch on one thread (one batch of 64 digits resized to 16x16): ~3 s a trial.
TRAIN_SLOWLY = """kind = "train"
epochs = 300
batch_size = 64
max_train_samples = 64
max_val_samples = 16
torch_threads = 1"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.update(extra)
    return env


def _config(tmp_path: Path, **replace: str) -> Path:
    text = CONFIG
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "scaleout.toml"
    path.write_text(text)
    return path


def _search(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "search", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(storage))


def _kill_a_worker_mid_trial(
    storage: str,
    study: str,
    procs: list[Any],
    timeout_s: float = 180,
    *,
    sampled: bool = False,
    after_done: int = 0,
) -> tuple[int, int]:
    """SIGKILLs the worker process running some trial; returns (trial number, pid).

    ``sampled``: only once the trial's constraints are in the storage, i.e. after it sampled
    every parameter (they are set after sampling, before the estimator). ``after_done``: only a
    worker that has finished at least that many trials (COMPLETE) already.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in procs):
            pytest.fail("the workers finished before one could be killed mid-trial")
        try:
            st = _load(storage, study)
        except KeyError:  # not created yet
            time.sleep(0.3)
            continue
        done = Counter(
            t.system_attrs.get(WORKER_ATTR)
            for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        )
        for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.system_attrs.get(WORKER_ATTR)  # set just before the test sleep
            if sampled and not t.constraints:
                continue
            if worker and t.number >= 1 and done[worker] >= after_done:
                pid = int(worker.rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                return t.number, pid
        time.sleep(0.2)
    pytest.fail(f"no running trial with a worker seen in {timeout_s} s")


def _logged(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Trials MLflow should show: finished ones, less surplus ones (they never did any work)."""
    return {t.number for t in trials
            if t.state.is_finished() and not t.system_attrs.get(SURPLUS_ATTR)}  # fmt: skip


def _mlflow_children(uri: str, parent_run_id: str | None = None) -> Counter[int]:
    """Trial number -> number of child runs (active) under the study's parent run."""
    from mlflow import MlflowClient

    from search._mlflow import TAG_TRIAL

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("roofnas/scaleout")
    assert exp is not None, f"no MLflow experiment 'roofnas/scaleout' at {uri}"
    filt = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
    runs = c.search_runs([exp.experiment_id], filter_string=filt, max_results=5000)
    return Counter(int(r.data.tags[TAG_TRIAL]) for r in runs if TAG_TRIAL in r.data.tags)


def _assert_exact_budget(study: optuna.Study, total: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    assert states[TrialState.RUNNING] == 0 and states[TrialState.WAITING] == 0, states
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and not t.system_attrs.get(SURPLUS_ATTR)
    ]
    assert len(done) == total, (len(done), states)
    assert all(t.state == TrialState.COMPLETE for t in done)
    return trials


# ------------------------------------------------------------------------------- unit level


def _study(storage: Any = None) -> optuna.Study:
    return optuna.create_study(storage=storage, directions=["minimize", "minimize"])


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    return x, 1.0 - x


def test_is_rdb_url_tells_urls_from_journal_paths() -> None:
    assert is_rdb_url("postgresql://u@127.0.0.1:5432/db")
    assert is_rdb_url("postgresql+psycopg2://u@h/db")
    assert is_rdb_url("sqlite:///x.db")
    assert not is_rdb_url("roofnas-runs/optuna.journal")
    assert not is_rdb_url("/tmp/a://b")


def test_open_storage_names_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="grace_period_s=2 must exceed heartbeat_interval_s=5"):
        open_storage(tmp_path / "j.journal", heartbeat_interval_s=5, grace_period_s=2)
    monkeypatch.setenv("ROOFNAS_HEARTBEAT_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="ROOFNAS_HEARTBEAT_INTERVAL_S='soon'"):
        open_storage(tmp_path / "j.journal")
    monkeypatch.delenv("ROOFNAS_HEARTBEAT_INTERVAL_S")
    with pytest.raises(ValueError, match="is a directory"):
        open_storage(tmp_path)
    st = open_storage(tmp_path / "sub" / "j.journal")
    assert isinstance(st, HeartbeatJournalStorage)
    assert st.get_heartbeat_interval() == 10 and st.grace_period == 30


def test_budget_counts_done_running_and_waiting_but_not_failed_or_surplus() -> None:
    study = _study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for state, attrs in [
        (TrialState.COMPLETE, {}), (TrialState.PRUNED, {}), (TrialState.FAIL, {}),
        (TrialState.PRUNED, {SURPLUS_ATTR: True}), (TrialState.WAITING, {}),
    ]:  # fmt: skip
        values = [0.5, 0.5] if state == TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(
            state=state, params={"x": 0.5}, distributions=dist, values=values,
            system_attrs=attrs,
        ))  # fmt: skip
    counted = [counts_against_budget(t) for t in study.trials]
    assert counted == [True, True, False, False, True]
    s = GlobalBudget(3).status(study)
    # counted: COMPLETE + PRUNED + WAITING = 3 = the budget, but a WAITING retry must still run
    assert (s.counted, s.done, s.running, s.waiting) == (3, 2, 0, 1)
    assert s.needs_trials and not s.finished
    assert not GlobalBudget(4).status(study).finished
    with pytest.raises(ValueError, match="trials=0 must be an integer >= 1"):
        GlobalBudget(0)


def test_a_trial_past_the_budget_is_pruned_as_surplus_before_any_work() -> None:
    study = _study()
    for _ in range(3):
        study.enqueue_trial({"x": 0.25})
    t0, t1, t2 = study.ask(), study.ask(), study.ask()  # three "workers" asked at once
    budget = GlobalBudget(2)
    assert [budget.is_surplus(study, t) for t in (t0, t1, t2)] == [False, False, True]
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        calls.append(trial.number)
        return _objective(trial)

    guarded = budget.guard(objective)
    with pytest.raises(optuna.TrialPruned, match="past the global budget of 2 trials"):
        guarded(t2)
    assert guarded(t0) == _objective(t0)
    assert calls == [t0.number]
    frozen = study._storage.get_trial(t2._trial_id)
    assert frozen.system_attrs[SURPLUS_ATTR] is True and WORKER_ATTR in frozen.system_attrs


def test_optimize_shared_stops_at_the_global_budget_across_calls(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "j.journal", heartbeat_interval_s=1, grace_period_s=3)
    study = _study(storage)
    # Two "workers" in turn on one storage: together they make the budget, not 2 x 7.
    s1 = optimize_shared(study, _objective, total_trials=7)
    s2 = optimize_shared(
        _load(str(tmp_path / "j.journal"), study.study_name), _objective, total_trials=7
    )
    assert s1.finished and s2.finished and s2.done == 7
    assert len(study.trials) == 7


def test_an_objective_that_always_fails_stops_after_the_budget_in_failures(
    tmp_path: Path,
) -> None:
    study = _study(open_storage(tmp_path / "j.journal"))

    def broken(trial: optuna.Trial) -> tuple[float, float]:
        raise RuntimeError("estimator blew up")

    status = optimize_shared(study, broken, total_trials=4, catch=(RuntimeError,))
    states = Counter(t.state for t in study.trials)
    assert states == Counter({TrialState.FAIL: 4})  # failures do not count; attempts are bounded
    assert status.done == 0 and not status.finished


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_journal_heartbeat_fails_a_stale_trial_and_the_retry_keeps_its_params(
    tmp_path: Path,
) -> None:
    storage = open_storage(tmp_path / "j.journal", heartbeat_interval_s=1, grace_period_s=2)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = _study(storage)
    dead = study.ask()
    dead.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(dead._trial_id)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    # The dead worker's last heartbeat was 10 s ago; the live one beat just now.
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_ATTR, time.time() - 10)
    assert storage._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == dead.number
    assert retry.params == trials[dead.number].params
    # The retry takes the failed trial's place in the budget: budget 2 = alive + retry.
    s = GlobalBudget(2).status(study)
    assert (s.counted, s.running, s.waiting) == (2, 1, 1)


def test_mlflow_reachable_probes_only_servers() -> None:
    assert mlflow_reachable("sqlite:////tmp/x.db") is None
    msg = mlflow_reachable(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    assert msg is not None and "unreachable" in msg


# ------------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_three_local_workers_on_the_journal_end_with_exactly_the_budget(tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    proc = _search(
        ["run", "--config", str(_config(tmp_path)), "--workers", "3", "--trials", "30",
         "--study", "s", "--storage", storage, "--out-dir", str(tmp_path / "run"),
         "--no-mlflow", "--quiet", "--json"],
        # 0.3 s a trial: analytic trials take milliseconds, so without it the first worker
        # to finish importing (torch, optuna: seconds on a loaded 2-core machine) can run all
        # 30 before the others start, and the sharing asserted below is never exercised.
        _env(ROOFNAS_TEST_TRIAL_SLEEP_S="0.3"), tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["n_finished"] == 30
    trials = _assert_exact_budget(_load(storage, "s"), 30)
    workers = Counter(t.system_attrs.get(WORKER_ATTR) for t in trials)
    assert len(workers) >= 2, f"the trials should be shared among the workers: {workers}"


@pytest.mark.slow
def test_sigkilled_worker_trial_is_failed_retried_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed while its trial trains (after sampling): the retry has its params.

    Fails if the stale-trial retry did not copy the failed trial's parameters (e.g.
    ``RetryHeartbeatStaleTrialCallback`` replaced by one that enqueues ``{}``: the retry then
    samples afresh), or if the journal's heartbeat stopped carrying a running trial's held
    writes out (the failed trial then has no parameters to copy).
    """
    storage = str(tmp_path / "optuna.journal")
    out = tmp_path / "run"
    (tmp_path / "tiny.toml").write_text(TINY_SPACE)
    cfg = _config(
        tmp_path,
        **{'space = "cifar"': f'space = "{tmp_path / "tiny.toml"}"', 'kind = "none"': TRAIN_SLOWLY},
    )
    env = _env(**FAST_HEARTBEAT)
    args = [
        "run",
        "--config",
        str(cfg),
        "--workers",
        "3",
        "--trials",
        "6",
        "--study",
        "s",
        "--storage",
        storage,
        "--out-dir",
        str(out),
        "--quiet",
        "--json",
    ]
    parent = subprocess.Popen(
        [sys.executable, "-m", "search", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        killed, _pid = _kill_a_worker_mid_trial(storage, "s", [parent], sampled=True)
        stdout, stderr = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, stderr.decode()[-3000:]
    trials = _assert_exact_budget(_load(storage, "s"), 6)
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # Killed while training, after it sampled all 7 parameters: the retry runs the same ones.
    assert len(by_number[killed].params) == 7, by_number[killed].params
    assert retries[0].params == by_number[killed].params
    # MLflow (the local store) agrees after the parent's final sync: every trial once.
    result = json.loads(stdout)
    from search._mlflow import tracking_uri_for

    children = _mlflow_children(tracking_uri_for(out), result["mlflow_parent_run_id"])
    assert set(children) == _logged(trials)
    assert all(n == 1 for n in children.values()), children


@pytest.mark.slow
def test_mlflow_server_down_keeps_every_trial_and_sync_logs_each_once(tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = _search(
        ["run", "--config", str(_config(tmp_path)), "--workers", "2", "--trials", "6",
         "--study", "s", "--storage", storage, "--out-dir", str(tmp_path / "run"),
         "--quiet", "--json"],
        _env(MLFLOW_TRACKING_URI=closed), tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - t0 < 240, "a down server must not stall the run for minutes"
    summary = json.loads(proc.stdout)
    assert summary["n_finished"] == 6 and "unreachable" in summary["mlflow_error"]
    logged = _logged(_assert_exact_budget(_load(storage, "s"), 6))
    assert len(logged) == 6

    store = f"sqlite:///{tmp_path / 'later.db'}"
    sync = [
        "sync-mlflow",
        "--study",
        "s",
        "--storage",
        storage,
        "--out-dir",
        str(tmp_path),
        "--json",
    ]
    first = _search(sync, _env(MLFLOW_TRACKING_URI=store), tmp_path)
    second = _search(sync, _env(MLFLOW_TRACKING_URI=store), tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    r1, r2 = json.loads(first.stdout), json.loads(second.stdout)
    assert (r1["written"], r2["written"], r2["already"]) == (6, 0, 6)
    assert _mlflow_children(store, r1["parent_run_id"]) == Counter(logged)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_different_config_on_an_existing_study_is_refused(tmp_path: Path, workers: str) -> None:
    storage = str(tmp_path / "optuna.journal")
    base = [
        "run",
        "--study",
        "s",
        "--storage",
        storage,
        "--out-dir",
        str(tmp_path / "run"),
        "--no-mlflow",
        "--quiet",
        "--trials",
        "3",
    ]
    first = _search([*base, "--config", str(_config(tmp_path))], _env(), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    other = _config(tmp_path, **{"params = 1e9": "params = 2e9"})
    second = _search(
        [*base, "--config", str(other), "--workers", workers, "--trials", "6"], _env(), tmp_path
    )
    assert second.returncode == 1, second.stderr[-2000:]
    assert "another config" in second.stderr and "fingerprint" in second.stderr
    assert len(_load(storage, "s").trials) == 3  # nothing mixed in


@pytest.fixture
def pg_study_env(postgres_url: str, mlflow_server: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {"storage": postgres_url, "mlflow": mlflow_server, "dir": tmp_path}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mlflow_server
def test_three_workers_on_postgres_and_an_mlflow_server_agree_after_a_kill(
    pg_study_env: dict[str, Any],
) -> None:
    """The killed worker's trials are missing from MLflow until sync-mlflow writes exactly them.

    Each worker logs to MLflow only when it ends (flush thresholds out of reach), so the
    SIGKILLed one, which had finished a trial already, never logs its trials. Fails if
    ``sync`` wrote nothing or something else than what MLflow lacked (e.g. it skipped FAIL
    trials, or re-logged trials that have a child run), or if a second sync wrote anything.
    """
    storage, server, tmp = pg_study_env["storage"], pg_study_env["mlflow"], pg_study_env["dir"]
    env = _env(ROOFNAS_TEST_TRIAL_SLEEP_S="1.5", MLFLOW_TRACKING_URI=server, **FAST_HEARTBEAT)
    cfg = _config(
        tmp,
        **{
            "flush_every_trials = 2": "flush_every_trials = 1000",
            "flush_every_s = 1": "flush_every_s = 3600",
        },
    )
    args = [
        "run",
        "--config",
        str(cfg),
        "--trials",
        "12",
        "--study",
        "pg",
        "--storage",
        storage,
        "--out-dir",
        str(tmp / "run"),
        "--quiet",
        "--json",
    ]
    # Three separate workers, as on three machines: each `search run` on the same study.
    procs = [_start(args, env, tmp, tmp / f"worker{i}.log") for i in range(3)]
    try:
        killed, pid = _kill_a_worker_mid_trial(storage, "pg", procs, after_done=1)
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = {p.pid: p.returncode for p in procs}
    assert codes.pop(pid) == -signal.SIGKILL
    logs = "\n".join((tmp / f"worker{i}.log").read_text()[-2000:] for i in range(3))
    assert set(codes.values()) == {0}, logs
    study = _load(storage, "pg")
    trials = _assert_exact_budget(study, 12)
    assert {t.number: t for t in trials}[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE

    from search._mlflow import ATTR_PARENT

    parent = study.user_attrs[ATTR_PARENT]
    from mlflow import MlflowClient

    client = MlflowClient(server)
    exp = client.get_experiment_by_name("roofnas/scaleout")
    parents = client.search_runs([exp.experiment_id], "tags.`roofnas.role` = 'parent'")
    assert [r.info.run_id for r in parents] == [parent], "the workers share one parent run"
    finished = _logged(trials)
    victim = {t.number: t for t in trials}[killed].system_attrs[WORKER_ATTR]
    # The killed trial (FAIL) and the ones its worker completed before (one at least).
    unsynced = {
        t.number
        for t in trials
        if t.number in finished and t.system_attrs.get(WORKER_ATTR) == victim
    }
    assert killed in unsynced and len(unsynced) >= 2, unsynced
    before = _mlflow_children(server, parent)
    assert before == Counter(finished - unsynced), f"before sync-mlflow: {before}"
    sync = [
        "sync-mlflow",
        "--study",
        "pg",
        "--storage",
        storage,
        "--out-dir",
        str(tmp / "run"),
        "--json",
    ]
    first = _search(sync, env, tmp)
    after = _mlflow_children(server, parent)
    second = _search(sync, env, tmp)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    r1, r2 = json.loads(first.stdout), json.loads(second.stdout)
    assert r1["parent_run_id"] == parent
    assert (r1["written"], r1["already"]) == (len(unsynced), len(finished) - len(unsynced))
    assert after - before == Counter(unsynced), after  # exactly the missing ones, once each
    assert after == Counter(finished)
    assert (r2["written"], r2["already"]) == (0, len(finished))
    assert _mlflow_children(server, parent) == after


@pytest.mark.slow
@pytest.mark.postgres
def test_budget_is_global_on_postgres_with_three_processes(postgres_url: str) -> None:
    """Three worker processes (toy objective) on one PostgreSQL study: exactly the budget."""
    optuna.create_study(
        storage=open_storage(postgres_url), study_name="toy", directions=["minimize", "minimize"]
    )
    code = (
        "import optuna, sys\n"
        "from search._budget import optimize_shared\n"
        "from search._storage import open_storage\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "st = optuna.load_study(study_name='toy', storage=open_storage(sys.argv[1]))\n"
        "def f(t):\n"
        "    x = t.suggest_float('x', 0, 1)\n"
        "    return x, 1 - x\n"
        "optimize_shared(st, f, total_trials=40)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url], env=_env(), stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    errs = [p.communicate(timeout=180)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    trials = _assert_exact_budget(_load(postgres_url, "toy"), 40)
    assert len({t.system_attrs[WORKER_ATTR] for t in trials}) >= 2


@pytest.mark.slow
def test_ctrl_c_stops_every_local_worker_after_its_running_trial(tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    env = _env(ROOFNAS_TEST_TRIAL_SLEEP_S="1", **FAST_HEARTBEAT)
    args = [
        "run",
        "--config",
        str(_config(tmp_path)),
        "--workers",
        "2",
        "--trials",
        "40",
        "--study",
        "s",
        "--storage",
        storage,
        "--out-dir",
        str(tmp_path / "run"),
        "--no-mlflow",
        "--quiet",
        "--json",
    ]
    parent = subprocess.Popen(
        [sys.executable, "-m", "search", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and parent.poll() is None:
            try:
                if len(_load(storage, "s").get_trials(states=(TrialState.COMPLETE,))) >= 2:
                    break
            except KeyError:
                pass
            time.sleep(0.3)
        parent.send_signal(signal.SIGINT)
        stdout, stderr = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, stderr.decode()[-3000:]
    assert json.loads(stdout)["interrupted"] is True
    states = Counter(t.state for t in _load(storage, "s").trials)
    # Each worker finished the trial it was running: nothing left running, nothing failed.
    assert set(states) == {TrialState.COMPLETE}, states
    assert 2 <= states[TrialState.COMPLETE] < 40
