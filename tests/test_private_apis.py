"""Every private Optuna/MLflow API that search/_private_apis.py uses, checked against the installed
versions: a failure here means an upgrade changed one of them; fix _private_apis.py (or drop the
private path for the public one) before anything else."""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.dbmodels.models import (
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation

from search._mlflow import TAG_PARETO, ChildRecord, MlflowView
from search._private_apis import (
    BatchingJournalStorage,
    GroupCommitFileBackend,
    HeartbeatJournalStorage,
    bulk_insert_child_runs,
    set_running_trial_system_attr,
    study_id,
    study_storage,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------ Optuna
def test_journal_storage_internals_are_where_the_batching_journal_expects_them(
    tmp_path: Path,
) -> None:
    sig = inspect.signature(JournalStorage._write_log)
    assert list(sig.parameters) == ["self", "op_code", "extra_fields"]
    assert list(inspect.signature(JournalStorage._sync_with_backend).parameters) == ["self"]
    assert {"SET_TRIAL_PARAM", "SET_TRIAL_USER_ATTR", "SET_TRIAL_SYSTEM_ATTR"} <= set(
        JournalOperation.__members__
    )
    backend = JournalFileBackend(str(tmp_path / "j.journal"))
    assert isinstance(backend._file_path, str) and backend._log_number_offset == {0: 0}
    with get_lock_file(backend._lock):
        pass
    storage = JournalStorage(backend)
    assert isinstance(storage._replay_result.worker_id, str)
    assert storage._backend is backend and hasattr(storage._thread_lock, "acquire")
    # Trial.set_constraint writes one system attribute per constraint under this prefix
    t = optuna.trial.create_trial(values=[1.0])
    t.set_constraint("params", -0.5)
    assert set(t.system_attrs) == {"constraints:params"}


def test_batching_journal_writes_a_trial_in_a_few_appends_and_reads_it_back(
    tmp_path: Path,
) -> None:
    backend = GroupCommitFileBackend(str(tmp_path / "j.journal"))
    storage = BatchingJournalStorage(backend)
    study = optuna.create_study(storage=storage, directions=["minimize"])
    before = backend.appends

    def objective(trial: optuna.Trial) -> float:
        xs = [trial.suggest_float(f"x{i}", 0, 1) for i in range(30)]
        trial.set_constraint("c", -1.0)
        trial.set_user_attr("u", 1)
        return sum(xs)

    study.optimize(objective, n_trials=1)
    # create (1) + held params, constraint and attribute written with the state (1) + values
    assert backend.appends - before <= 4
    storage.close()
    plain = JournalStorage(JournalFileBackend(backend._file_path))
    fresh = optuna.load_study(study_name=study.study_name, storage=plain)
    (t,) = fresh.trials
    assert len(t.params) == 30 and t.constraints == {"c": -1.0} and t.user_attrs == {"u": 1}
    assert t.params == study.trials[0].params


def test_heartbeat_protocol_is_the_one_optimize_uses(tmp_path: Path) -> None:
    abstract = {
        name for name, member in vars(BaseHeartbeat).items()
        if getattr(member, "__isabstractmethod__", False)
    }  # fmt: skip
    assert abstract == {
        "record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }  # fmt: skip
    storage = HeartbeatJournalStorage(
        GroupCommitFileBackend(str(tmp_path / "j.journal")),
        heartbeat_interval=1, grace_period=3, heartbeat_stale_trial_callback=None,
    )  # fmt: skip
    assert is_heartbeat_enabled(storage)


def test_study_and_trial_internals(tmp_path: Path) -> None:
    storage = BatchingJournalStorage(GroupCommitFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(storage=storage, directions=["minimize"])
    assert study_storage(study) is storage
    assert isinstance(study_id(study), int)
    assert study_id(study) == storage.get_study_id_from_name(study.study_name)
    trial = study.ask()
    set_running_trial_system_attr(trial, "k", "v")
    assert storage.get_trial(trial._trial_id).system_attrs["k"] == "v"


# ------------------------------------------------------------------------------------ MLflow
# Every column of each table, as bulk_insert_child_runs writes it:
# a new column (even a nullable one) may carry a meaning the client would set.
COLUMNS = {
    SqlRun: {"run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
             "status", "start_time", "end_time", "deleted_time", "source_version",
             "lifecycle_stage", "artifact_uri", "experiment_id"},
    SqlTag: {"key", "value", "run_uuid"},
    SqlParam: {"key", "value", "run_uuid"},
    SqlMetric: {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    SqlLatestMetric: {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
}  # fmt: skip


@pytest.mark.parametrize("model", list(COLUMNS), ids=lambda m: m.__tablename__)
def test_mlflow_tables_have_the_columns_the_bulk_writes_fill(model: type) -> None:
    assert {c.name for c in model.__table__.columns} == COLUMNS[model]


def _record(n: int) -> ChildRecord:
    """A child run as search._mlflow.child_record makes one (with a "pareto" metric)."""
    return ChildRecord(
        n, "FINISHED", 1_700_000_000_000, 1_700_000_001_000,
        {"arch": "s", "trial_number": str(n)},
        {"feasible": 1.0, "pareto": 0.0, "t4/latency_s": 1e-4},
        {"roofnas.trial_number": str(n), TAG_PARETO: "false"},
    )  # fmt: skip


def test_bulk_insert_reads_back_like_client_made_runs(tmp_path: Path) -> None:
    view = MlflowView(f"sqlite:///{tmp_path / 'm.db'}", "e", "s", tmp_path / "art")
    view.ensure_parent(optuna.create_study(directions=["minimize"]))
    c = view.client
    assert isinstance(c._tracking_client.store, SqlAlchemyStore)
    assert hasattr(c._tracking_client.store, "ManagedSessionMaker")
    assert view.experiment_id is not None and view.parent_run_id is not None
    (bulk_id,) = bulk_insert_child_runs(c, view.experiment_id, view.parent_run_id, [_record(0)])
    client_id = view._create_via_client(_record(1))
    bulk, made = c.get_run(bulk_id), c.get_run(client_id)
    for attr in ("status", "start_time", "end_time", "lifecycle_stage", "user_id"):
        assert getattr(bulk.info, attr) == getattr(made.info, attr), attr
    assert bulk.info.run_name == "trial-0" and made.info.run_name == "trial-1"
    assert bulk.info.artifact_uri.replace(bulk_id, "ID") == made.info.artifact_uri.replace(
        client_id, "ID"
    )
    assert bulk.data.metrics == made.data.metrics
    assert bulk.data.params == {**made.data.params, "trial_number": "0"}
    tags = {k: v for k, v in made.data.tags.items() if k != "roofnas.trial_number"}
    assert {k: v for k, v in bulk.data.tags.items() if k != "roofnas.trial_number"} == {
        **tags, "mlflow.runName": "trial-0"
    }  # fmt: skip
    history = c.get_metric_history(bulk_id, "t4/latency_s")
    assert [(m.value, m.step, m.timestamp) for m in history] == [(1e-4, 0, 1_700_000_001_000)]
    # found by the same search the view uses to list its children
    children = f"tags.`mlflow.parentRunId` = '{view.parent_run_id}'"
    found = c.search_runs([view.experiment_id], children)
    assert {r.info.run_id for r in found} == {bulk_id, client_id}


def test_bulk_insert_declines_a_store_that_is_not_sql() -> None:
    client = MlflowClient("http://127.0.0.1:9")  # no request is made: the store type decides
    assert bulk_insert_child_runs(client, "0", "p", [_record(0)]) is None
