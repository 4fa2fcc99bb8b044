"""MLflow as a rebuildable view of the Optuna storage.

The storage is the source of truth. This module writes, for a study: one parent run (its id
kept in ``study.user_attrs``) and one child run per finished trial, tagged with the trial
number so that writing is idempotent: ``sync`` logs exactly what is missing and corrects
Pareto membership. Writing happens in batches, never once per trial; on a SQL store the
children of a batch go in one transaction (``search._private_apis``), elsewhere (an HTTP
server) through ``MlflowClient`` calls.

MLflow is imported where it is used (the client, its entities): importing it costs about
2.5 s of CPU, which every process of a search would pay, MLflow on or off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search._budget import is_surplus_trial
from search._config import ExperimentConfig, HardwareTarget, safe_name
from search._front import FrontTracker, hypervolume, pareto_trials
from search._objectives import normalise
from search._private_apis import PARENT_TAG, bulk_insert_child_runs, study_id
from search._record import TrialRecord, constraints_met, is_feasible

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("search.mlflow")

TAG_TRIAL = "roofnas.trial_number"
TAG_STUDY = "roofnas.study"
TAG_ROLE = "roofnas.role"
# Study name + the storage's study id: a study deleted and made again under the same
# name never adopts the old study's parent run.
TAG_STUDY_KEY = "roofnas.study_key"
# Longer than the gap between a worker creating its parent run and another seeing it.
PARENT_ELECTION_WAIT_S = 1.0
TAG_PARETO = "roofnas.pareto"
# A trial whose estimator raised: the end of the traceback, as a tag and as the run's
# description (MLflow's note tag, shown on the run page).
TAG_ESTIMATOR_ERROR = "roofnas.estimator_error"
TAG_NOTE = "mlflow.note.content"
# the rung budget at which the rung rule stopped the trial ([fidelity]); absent otherwise
TAG_STOPPED = "roofnas.stopped_at_budget"
# MLflow 3 opens an experiment without this tag on its GenAI overview (traces, latency:
# all "No data"); with it, on the runs table, where a search's runs are.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
ATTR_PARENT = "roofnas.mlflow_parent_run_id"
ATTR_TRACKING = "roofnas.mlflow_tracking_uri"
ATTR_EXPERIMENT = "roofnas.mlflow_experiment"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
_PARAM_MAX = 6000  # MLflow's limit on a param value
_METRICS_PER_CALL = 1000  # MLflow's limit on metrics in one log_batch
_CHILDREN_PER_WRITE = 500
# Tracking servers keep artifacts themselves; any other store (sqlite, a database) would put
# them under the current directory unless given an artifact location.
_SERVER_PREFIXES = ("http://", "https://", "databricks")


def tracking_uri_for(run_dir: str | Path, configured: str | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the config's, else a sqlite file in the run directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if configured:
        return configured
    return "sqlite:///" + str((Path(run_dir) / "mlflow.db").resolve())


def default_experiment_name(cfg: ExperimentConfig) -> str:
    return cfg.mlflow.experiment or f"roofnas/{cfg.name}"


def remembered_experiment(study: optuna.Study) -> str | None:
    """The MLflow experiment the study's parent run was made in, if it has one."""
    name = study.user_attrs.get(ATTR_EXPERIMENT)
    return str(name) if name else None


def mlflow_reachable(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """None when ``tracking_uri`` can be used now; else why not.

    Only an HTTP tracking server is probed (GET /health): MLflow's client retries a refused
    connection for about four minutes per call (7 retries, backoff factor 2), so a run that
    starts while the server is down would wait that long before searching.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if resp.status == 200:
                return None
            return f"MLflow server {tracking_uri} answered /health with HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"MLflow server {tracking_uri} is unreachable ({reason})"


@dataclass(frozen=True)
class MlflowTarget:
    """Where a study's MLflow view goes: a tracking store, an experiment, an artifact root."""

    tracking_uri: str
    experiment_name: str
    artifact_root: Path | None  # None for a tracking server, which keeps its own artifacts

    @classmethod
    def of(
        cls,
        cfg: ExperimentConfig,
        run_dir: str | Path | None = None,
        experiment_name: str | None = None,
    ) -> MlflowTarget:
        """The target of ``cfg``'s runs (``run_dir`` defaults to the config's)."""
        folder = Path(cfg.run_dir if run_dir is None else run_dir)
        uri = tracking_uri_for(folder, cfg.mlflow.tracking_uri)
        root = None if uri.startswith(_SERVER_PREFIXES) else folder / "mlartifacts"
        return cls(uri, experiment_name or default_experiment_name(cfg), root)

    def view(self, study_name: str) -> MlflowView:
        return MlflowView(self.tracking_uri, self.experiment_name, study_name, self.artifact_root)


@dataclass(frozen=True)
class ChildRecord:
    """One trial as an MLflow child run."""

    trial_number: int
    status: str
    start_ms: int
    end_ms: int
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


def child_record(
    t: FrozenTrial, objective_names: Sequence[str], pareto: set[int], study_name: str
) -> ChildRecord:
    """What a child run holds: arch, every cost on every target, objectives, constraints."""
    rec = TrialRecord.of(t) or TrialRecord(arch="")
    metrics: dict[str, float] = {"trial_number": float(t.number)}
    for target, costs in rec.costs.items():
        for k, v in costs.items():
            metrics[f"{target}/{k}"] = float(v)
    if t.values is not None:
        for name, v in zip(objective_names, t.values, strict=True):
            metrics["objective/" + name.replace("@", "/")] = float(v)
    for name, v in t.constraints.items():
        metrics["constraint/" + name.replace("@", "/")] = float(v)  # value/limit - 1; <= 0 ok
    feasible = constraints_met(t)
    metrics["feasible"] = float(feasible)
    metrics["pareto"] = float(t.number in pareto)
    if rec.estimator_s is not None:
        metrics["estimator_s"] = rec.estimator_s
    for k, v in rec.estimator_metrics.items():
        metrics["estimator/" + mlflow_name(k)] = float(v)
    for budget, v in rec.rungs:  # the estimator's value at each rung budget reached
        metrics[f"rung/{budget:g}"] = float(v)
    if t.datetime_start and t.datetime_complete:
        metrics["duration_s"] = (t.datetime_complete - t.datetime_start).total_seconds()
    params = {"arch": rec.arch[:_PARAM_MAX], "trial_number": str(t.number)}
    tags = {
        TAG_TRIAL: str(t.number),
        TAG_STUDY: study_name,
        TAG_PARETO: str(t.number in pareto).lower(),
        "roofnas.state": t.state.name,
        "roofnas.feasible": str(feasible).lower(),
        "roofnas.estimator_skipped": str(rec.estimator_skipped).lower(),
    }
    if rec.estimator_error is not None:
        tags[TAG_ESTIMATOR_ERROR] = rec.estimator_error
        tags[TAG_NOTE] = f"The estimator raised:\n\n```\n{rec.estimator_error}\n```"
    if rec.stopped_at_budget is not None:
        tags[TAG_STOPPED] = f"{rec.stopped_at_budget:g}"
        metrics["stopped_at_budget"] = rec.stopped_at_budget
    start = t.datetime_start.timestamp() if t.datetime_start else time.time()
    end = t.datetime_complete.timestamp() if t.datetime_complete else start
    return ChildRecord(
        t.number, _STATUS.get(t.state, "FAILED"), int(start * 1000), int(end * 1000),
        params, metrics, tags,
    )  # fmt: skip


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials MLflow shows; a surplus trial was pruned before any work and is left out."""
    trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    return [t for t in trials if not is_surplus_trial(t)]


@dataclass
class MlflowView:
    """Writes one study into MLflow: a parent run and children in batches."""

    tracking_uri: str
    experiment_name: str
    study_name: str
    artifact_root: Path | None = None  # explicit artifact location for a local store
    parent_run_id: str | None = None
    experiment_id: str | None = None
    logged: dict[int, tuple[str, bool]] = field(default_factory=dict)  # trial -> (run, pareto)
    _client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # ------------------------------------------------------------------ parent
    def ensure_parent(self, study: optuna.Study, params: Mapping[str, Any] | None = None) -> str:
        """The study's parent run, created once and remembered in ``study.user_attrs``."""
        self.ensure_experiment()
        self.parent_run_id = self._remembered_parent(study)
        if self.parent_run_id is not None:
            self.logged = self._existing_children()
            return self.parent_run_id
        key = _study_key(study)
        mine = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={TAG_STUDY: self.study_name, TAG_ROLE: "parent", TAG_STUDY_KEY: key},
        ).info.run_id
        # Workers starting together each make a parent, and study attributes have no
        # compare-and-swap. Each waits out the creation window, then all pick the same one,
        # the oldest (start time, then id); the others delete theirs.
        time.sleep(PARENT_ELECTION_WAIT_S)
        chosen = self._elect_parent(key) or mine
        self.parent_run_id = chosen
        if chosen != mine:
            self.client.delete_run(mine)
            self._remember_parent(study)
            self.logged = self._existing_children()
            return chosen
        self._remember_parent(study)
        if params:
            from mlflow.entities import Param

            self.client.log_batch(
                chosen, params=[Param(k, str(v)[:_PARAM_MAX]) for k, v in params.items()]
            )
        self.logged = {}  # a new parent has no children
        return chosen

    def ensure_experiment(self) -> str:
        """The experiment's id (kept in ``experiment_id``), created if missing."""
        self.experiment_id = self._experiment_id()
        return self.experiment_id

    def _experiment_id(self) -> str:
        """The experiment's id, created if missing, tagged as model development either way."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(
                    exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            return exp.experiment_id
        loc = None
        if self.artifact_root is not None:
            loc = (self.artifact_root / safe_name(self.experiment_name)).resolve().as_uri()
        return self.client.create_experiment(
            self.experiment_name, artifact_location=loc, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )

    def _remembered_parent(self, study: optuna.Study) -> str | None:
        """The parent run kept in the study, if it is in this store and not deleted."""
        attrs = study.user_attrs
        run_id = attrs.get(ATTR_PARENT)
        if not run_id or attrs.get(ATTR_TRACKING) != self.tracking_uri:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:  # deleted or another store: make a new parent
            return None
        return run_id if run.info.lifecycle_stage == "active" else None

    def _remember_parent(self, study: optuna.Study) -> None:
        study.set_user_attr(ATTR_PARENT, self.parent_run_id)
        study.set_user_attr(ATTR_TRACKING, self.tracking_uri)
        study.set_user_attr(ATTR_EXPERIMENT, self.experiment_name)

    def _elect_parent(self, key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{TAG_ROLE}` = 'parent' and tags.`{TAG_STUDY_KEY}` = '{key}'",
            max_results=1000,
        )
        if not runs:
            return None
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id

    def _existing_children(self) -> dict[int, tuple[str, bool]]:
        """trial number -> (child run id, Pareto tag) of the parent's live children."""
        out: dict[int, tuple[str, bool]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                max_results=5000,
                page_token=token,
            )
            for r in page:
                n = r.data.tags.get(TAG_TRIAL)
                if n is not None:
                    out[int(n)] = (r.info.run_id, r.data.tags.get(TAG_PARETO) == "true")
            token = page.token
            if not token:
                return out

    def log_parent_metrics(
        self, metrics: Iterable[tuple[str, float, int]], later_by_ms: int = 0
    ) -> None:
        """(key, value, step) triples, in as few calls as MLflow allows.

        ``later_by_ms`` moves the timestamp on: of two values at one step, MLflow shows the
        later one, so a final value must not tie with a step value logged the same millisecond.
        """
        from mlflow.entities import Metric

        ts = int(time.time() * 1000) + later_by_ms
        ms = [Metric(k, float(v), ts, int(s)) for k, v, s in metrics]
        for i in range(0, len(ms), _METRICS_PER_CALL):
            self.client.log_batch(self.parent_run_id, metrics=ms[i : i + _METRICS_PER_CALL])

    def log_parent_artifacts(self, files: Sequence[str | Path], base_dir: Path) -> None:
        """Files under ``base_dir``, kept at their path relative to it."""
        for f in files:
            p = Path(f)
            rel = p.parent.relative_to(base_dir).as_posix() if p.parent != base_dir else None
            self.client.log_artifact(self.parent_run_id, str(p), artifact_path=rel)

    def finish_parent(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status)

    # ------------------------------------------------------------------ children
    def write_children(self, records: Sequence[ChildRecord]) -> int:
        """Create child runs for records not yet logged; returns how many were written."""
        todo = [r for r in records if r.trial_number not in self.logged]
        if not todo:
            return 0
        assert self.experiment_id is not None and self.parent_run_id is not None
        ids = bulk_insert_child_runs(self.client, self.experiment_id, self.parent_run_id, todo)
        if ids is None:
            ids = [self._create_via_client(r) for r in todo]
        for r, rid in zip(todo, ids, strict=True):
            self.logged[r.trial_number] = (rid, r.tags[TAG_PARETO] == "true")
        return len(todo)

    def _create_via_client(self, r: ChildRecord) -> str:
        from mlflow.entities import Metric, Param

        c = self.client
        tags = {**r.tags, PARENT_TAG: self.parent_run_id}
        run = c.create_run(
            self.experiment_id, start_time=r.start_ms, tags=tags,
            run_name=f"trial-{r.trial_number}",
        )  # fmt: skip
        rid = run.info.run_id
        c.log_batch(
            rid,
            metrics=[Metric(k, v, r.end_ms, 0) for k, v in r.metrics.items()],
            params=[Param(k, v) for k, v in r.params.items()],
        )
        c.set_terminated(rid, r.status, end_time=r.end_ms)
        return rid

    def log_missing(self, study: optuna.Study, objective_names: Sequence[str]) -> tuple[int, int]:
        """Log finished trials this view has not logged, correct Pareto membership of the rest.

        Uses what this view knows (read from MLflow when the parent was opened, plus what it
        wrote since). Returns (child runs written, Pareto memberships corrected).
        """
        pareto = {t.number for t in pareto_trials(study)}
        missing = [child_record(t, objective_names, pareto, self.study_name)
                   for t in finished_trials(study) if t.number not in self.logged]  # fmt: skip
        written = sum(
            self.write_children(missing[i : i + _CHILDREN_PER_WRITE])
            for i in range(0, len(missing), _CHILDREN_PER_WRITE)
        )
        return written, self.update_pareto(pareto)

    def update_pareto(self, pareto: set[int]) -> int:
        """Correct Pareto membership of logged children (it is only final at the end).

        Children are logged with their membership at the time; a trial that a later one
        dominates, or that joins the front after being logged, is corrected here: the
        ``pareto`` metric at step 1 and the tag.
        """
        from mlflow.entities import Metric, RunTag

        changes = {
            number: (rid, number in pareto)
            for number, (rid, was) in self.logged.items()
            if (number in pareto) != was
        }
        ts = int(time.time() * 1000)
        for rid, now in changes.values():
            self.client.log_batch(
                rid,
                metrics=[Metric("pareto", float(now), ts, 1)],
                tags=[RunTag(TAG_PARETO, str(now).lower())],
            )
        self.logged.update(changes)
        return len(changes)


def _study_key(study: optuna.Study) -> str:
    # Hashed so that any study name is safe inside an MLflow filter string.
    return hashlib.sha1(f"{study.study_name}#{study_id(study)}".encode()).hexdigest()[:16]


def mlflow_name(text: str) -> str:
    """``text`` in the characters MLflow allows in a param or metric name.

    "@" (metric at a target) becomes "/", "<=" becomes "_le_", anything else not allowed "_":
    ``best_accuracy@latency_s@t4<=0.0005`` -> ``best_accuracy/latency_s/t4_le_0.0005``.
    """
    return re.sub(r"[^/\w.\- ]", "_", text.replace("<=", "_le_").replace("@", "/"))


def _full_name(cfg: ExperimentConfig, metric: str, target: str | None) -> str:
    """``metric@target`` with the primary target spelled out."""
    return metric if metric == "accuracy" else f"{metric}@{target or cfg.primary.name}"


def _target_text(t: HardwareTarget) -> str:
    spec = f"{t.profile}/{t.precision}/b{t.batch}/{t.runtime}"
    return spec if t.name == t.profile else f"{t.name}={spec}"


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """One param per setting, so that MLflow's Compare shows them side by side."""
    out = {f"target.{i}": _target_text(t) for i, t in enumerate(cfg.hardware)}
    for i, (o, d) in enumerate(zip(cfg.objectives, cfg.directions, strict=True)):
        out[f"objective.{i}"] = f"{_full_name(cfg, o.metric.metric, o.metric.target)} ({d})"
    for c in cfg.constraints:
        key = mlflow_name("constraint." + _full_name(cfg, c.metric.metric, c.metric.target))
        out[key] = f"{c.limit:g}"
    return out


def summary_metrics(study: optuna.Study, cfg: ExperimentConfig) -> dict[str, float]:
    """What decides between studies: front size and hypervolume, counts, best accuracy.

    The front is ``pareto_trials`` (the one ``python -m search pareto`` prints), its
    hypervolume that of its normalised points. ``best_accuracy@<latency>@<target><=<limit>``
    (in MLflow's characters) is the best accuracy among feasible trials, one per latency
    constraint, so the budget stands in the name.
    """
    names = [o.name for o in cfg.objectives]
    front = pareto_trials(study)
    done = FrontTracker.of_trials(cfg, study.get_trials(deepcopy=False))
    out = {
        "hypervolume": hypervolume(normalise(t.values, names, cfg.hv_bounds) for t in front),
        "pareto_size": float(len(front)),
        "n_feasible": float(done.n_feasible),
        "n_finished": float(done.n_finished),
    }
    if "accuracy" not in names:
        return out
    i = names.index("accuracy")
    accs = [t.values[i] for t in study.get_trials(deepcopy=False) if is_feasible(t) and t.values]
    for c in cfg.constraints:
        if c.metric.metric != "latency_s":
            continue
        name = f"best_accuracy@{_full_name(cfg, 'latency_s', c.metric.target)}<={c.limit:g}"
        out[mlflow_name(name)] = max(accs) if accs else float("nan")
    return out


def parent_params(cfg: ExperimentConfig, storage: str) -> dict[str, Any]:
    return {
        **flat_params(cfg),
        "config": cfg.name,
        "config_source": cfg.source,
        "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
        "fingerprint": cfg.fingerprint(),
        "space": Path(cfg.space).stem,
        "sampler": cfg.sampler.name,
        "population_size": cfg.sampler.population_size,
        "seed": cfg.seed,
        "trials": cfg.trials,
        "objectives": ",".join(o.name for o in cfg.objectives),
        "constraints": ",".join(f"{c.name}<={c.limit:g}" for c in cfg.constraints),
        "profiles": ",".join(
            f"{t.name}={t.profile}:{t.precision}:b{t.batch}:{t.runtime}" for t in cfg.hardware
        ),
        "estimator": cfg.estimator.get("kind") or cfg.estimator.get("function") or "default",
        "fidelity": "none"
        if cfg.fidelity is None
        else f"min_budget={cfg.fidelity.min_budget:g} max_budget={cfg.fidelity.max_budget:g} "
        f"eta={cfg.fidelity.eta}",
        "study": cfg.study_name,
        "storage": storage,
    }


def experiment_pages(tracking_uri: str, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, URL of its runs table) for every experiment in the store but Default.

    MLflow's UI routes by the URL fragment (a hash router): ``#/experiments/<id>/runs``
    opens the runs table. MLflow 3.17 opens an experiment by its global "GenAI | Model
    training" switch (GenAI by default, whatever the experiment's kind tag says);
    ``workflowType=machine_learning`` in the URL sets it to model training. The search
    filter keeps the table to parent runs: with thousands of child runs, the first page
    (100 runs, newest first) would hold children only, and the parents only after many
    "Load more"; a parent's children stay one click away (its run page, or clear the filter).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    exps = MlflowClient(tracking_uri).search_experiments()
    base = base_url.rstrip("/")
    query = urllib.parse.urlencode(
        {"workflowType": "machine_learning", "searchFilter": f"tags.`{TAG_ROLE}` = 'parent'"},
        quote_via=urllib.parse.quote,
    )
    exps = sorted(exps, key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0)
    return [
        (e.name, f"{base}/#/experiments/{e.experiment_id}/runs?{query}")
        for e in exps
        if e.name != "Default"
    ]


@dataclass(frozen=True)
class SyncResult:
    parent_run_id: str
    written: int
    pareto_updated: int
    already: int


def sync(
    study: optuna.Study,
    *,
    tracking_uri: str,
    experiment_name: str,
    objective_names: Sequence[str],
    artifact_root: Path | None = None,
    params: Mapping[str, Any] | None = None,
    cfg: ExperimentConfig | None = None,
) -> SyncResult:
    """Log exactly what MLflow lacks for this study; running it twice adds nothing.

    With ``cfg``, the parent's summary metrics (``summary_metrics``) are logged again too.
    """
    view = MlflowView(tracking_uri, experiment_name, study.study_name, artifact_root)
    parent = view.ensure_parent(study, params)
    already = len(view.logged)
    written, updated = view.log_missing(study, objective_names)
    if cfg is not None:
        summary = summary_metrics(study, cfg)
        step = int(summary["n_finished"])
        view.log_parent_metrics([(k, v, step) for k, v in summary.items()], later_by_ms=1)
    return SyncResult(parent, written, updated, already)
