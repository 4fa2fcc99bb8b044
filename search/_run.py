"""The search loop: Optuna study, constraints before accuracy, MLflow in batches.

``run_study(config)`` is a library function: the CLI calls it, and so can a
worker process (issue 6) on a shared storage. Per trial:

1. ``arch = searchspace.sample(trial, space)``;
2. ``costmodel.estimate`` on every hardware target;
3. ``trial.set_constraint`` for each constraint (``value / limit - 1``); a
   candidate that breaks one returns its cost objectives with a neutral
   accuracy at once: no estimator work is spent on it;
4. otherwise the accuracy estimator scores it.
"""

from __future__ import annotations

import datetime
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import _workers
from search._config import ConfigError, ExperimentConfig, parse_config
from search._objectives import (
    constraint_value,
    cost_summary,
    cost_value,
    normalise,
)
from search._storage import StorageError, close_storage, open_storage

if TYPE_CHECKING:
    from costmodel import CostReport

log = logging.getLogger("search")

ATTR_CONFIG = "roofnas.config"
ATTR_FINGERPRINT = "roofnas.config_fingerprint"
ATTR_OBJECTIVES = "roofnas.objectives"
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts against the budget


class StudyMismatchError(RuntimeError):
    """A run asked to continue a study that was made with a different config."""


# --------------------------------------------------------------------------- storage
def load_existing_study(study: str, storage: str) -> optuna.Study:
    """Open a study made by ``run``; errors list the studies that exist."""
    if "://" not in storage and not Path(storage).exists():
        raise StorageError(f"storage={storage!r} does not exist (run `python -m search run` first)")
    st = open_storage(storage)
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st, False)]
        raise StorageError(
            f"study={study!r} is not in storage={storage!r}; studies: {names}"
        ) from None


def study_config(study: optuna.Study) -> ExperimentConfig:
    """The config a study was run with, as kept in its user attributes."""
    d = study.user_attrs.get(ATTR_CONFIG)
    if d is None:
        raise StudyMismatchError(f"study {study.study_name!r} was not made by `search run`")
    return parse_config(d, source=f"study:{study.study_name}")


# --------------------------------------------------------------------------- samplers
def make_sampler(cfg: ExperimentConfig) -> optuna.samplers.BaseSampler:
    name, seed = cfg.sampler.name, cfg.seed
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.sampler.population_size, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler needs torch; scipy too)

            return optuna.samplers.GPSampler(seed=seed)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"sampler.name='gp' is not available here: {e}") from None
    raise ConfigError(f"sampler.name={name!r} is unknown")


# --------------------------------------------------------------------------- objective
@dataclass
class Counters:
    trials: int = 0
    estimator_calls: int = 0
    rejected: int = 0


class Objective:
    """The per-trial function. ``estimator`` is built on first use (lazy: rejects cost nothing)."""

    def __init__(self, cfg: ExperimentConfig, estimator: Any | None = None) -> None:
        import searchspace

        self.cfg = cfg
        self.space = searchspace.load_space(cfg.space)
        self._estimator = estimator
        self.counters = Counters()
        self.needs_accuracy = any(o.metric.metric == "accuracy" for o in cfg.objectives)
        acc = [o.name for o in cfg.objectives if o.metric.metric == "accuracy"]
        self.neutral_accuracy = cfg.hv_bounds[acc[0]][1] if acc else 0.0

    def estimator(self, arch: Any) -> Any:
        if self._estimator is None:
            from search._estimators import EstimatorConfig, make_estimator

            ecfg = EstimatorConfig.from_dict({"seed": self.cfg.seed, **self.cfg.estimator})
            # space=: proxy_rank ranks against a reference population drawn once from the
            # space (seeded), so a trial's score does not depend on the order of trials.
            self._estimator = make_estimator(
                ecfg, tuple(arch.input_shape), arch.num_classes, space=self.space
            )
        return self._estimator

    def reports(self, arch: Any) -> dict[str, CostReport]:
        import costmodel

        return {
            t.name: costmodel.estimate(
                arch, hw=t.profile, precision=t.precision, batch=t.batch, runtime=t.runtime
            )
            for t in self.cfg.hardware
        }

    def __call__(self, trial: optuna.Trial) -> list[float]:
        import searchspace

        cfg = self.cfg
        self.counters.trials += 1
        arch = searchspace.sample(trial, self.space)
        reports = self.reports(arch)
        primary = cfg.primary.name
        raw = {c.name: cost_value(c.metric, reports, primary) for c in cfg.constraints}
        cons = {c.name: constraint_value(raw[c.name], c.limit) for c in cfg.constraints}
        feasible = all(v <= 0 for v in cons.values())
        info: dict[str, Any] = {
            "arch": arch.to_string(),
            "costs": {name: cost_summary(r) for name, r in reports.items()},
            "feasible": feasible,
            "estimator_skipped": not (feasible and self.needs_accuracy),
        }
        for k, v in cons.items():
            trial.set_constraint(k, v)
        accuracy = self.neutral_accuracy
        try:
            if feasible and self.needs_accuracy:
                est = self.estimator(arch)
                t0 = time.perf_counter()
                self.counters.estimator_calls += 1
                accuracy = float(est.score(arch))
                info["estimator_s"] = time.perf_counter() - t0
            elif not feasible:
                self.counters.rejected += 1
        finally:  # one storage write for everything we know, even if scoring failed
            trial.set_user_attr("roofnas", info)
        return [
            accuracy if o.metric.metric == "accuracy" else cost_value(o.metric, reports, primary)
            for o in cfg.objectives
        ]


# --------------------------------------------------------------------------- front tracking
def is_feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def hypervolume(points: Sequence[Sequence[float]]) -> float:
    """Hypervolume of normalised losses against the fixed reference point (1, ..., 1)."""
    from optuna._hypervolume import compute_hypervolume

    pts = [p for p in points if all(x < 1.0 for x in p)]
    if not pts:
        return 0.0
    import numpy as np

    arr = np.asarray(pts, dtype=float)
    return float(compute_hypervolume(arr, np.ones(arr.shape[1]), assume_pareto=False))


@dataclass
class RejectStats:
    """Which constraint rejected how many candidates, and the closest value seen."""

    count: dict[str, int] = field(default_factory=dict)
    closest: dict[str, float] = field(default_factory=dict)  # smallest value / limit - 1


class FrontTracker:
    """Incremental Pareto front and hypervolume for the progress bar and step metric."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.names = [o.name for o in cfg.objectives]
        self.bounds = cfg.hv_bounds
        self.front: dict[int, tuple[float, ...]] = {}
        self.n_finished = 0
        self.n_feasible = 0
        self.hv = 0.0
        self.rejects = RejectStats()

    def add(self, t: FrozenTrial) -> bool:
        """Returns True when the front changed."""
        if t.state not in DONE_STATES or _workers.is_surplus_trial(t):
            return False
        self.n_finished += 1
        for k, v in t.constraints.items():
            if v > 0:
                self.rejects.count[k] = self.rejects.count.get(k, 0) + 1
            self.rejects.closest[k] = min(self.rejects.closest.get(k, math.inf), v)
        if not is_feasible(t) or t.values is None:
            return False
        self.n_feasible += 1
        p = normalise(t.values, self.names, self.bounds)
        for q in self.front.values():
            if all(a <= b for a, b in zip(q, p, strict=True)):
                return False  # dominated or equal to a front point
        self.front = {
            n: q
            for n, q in self.front.items()
            if not all(a <= b for a, b in zip(p, q, strict=True))
        }
        self.front[t.number] = p
        self.hv = hypervolume(list(self.front.values()))
        return True


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class RunResult:
    study_name: str
    storage: str
    n_finished: int
    n_feasible: int
    pareto: tuple[int, ...]  # trial numbers of the feasible Pareto front
    hypervolume: float
    interrupted: bool
    elapsed_s: float
    estimator_calls: int
    run_dir: str
    mlflow_parent_run_id: str | None = None
    mlflow_error: str | None = None
    rejections: Mapping[str, int] = field(default_factory=dict)
    closest: Mapping[str, float] = field(default_factory=dict)  # normalised: value/limit - 1
    artifacts: tuple[str, ...] = ()

    def no_feasible_message(self, cfg: ExperimentConfig) -> str:
        """Which constraint rejected most candidates, and the closest values seen."""
        if self.n_feasible or not self.rejections:
            return ""
        limits = {c.name: c.limit for c in cfg.constraints}
        worst = max(self.rejections, key=lambda k: self.rejections[k])
        lines = [
            f"no candidate met the constraints in {self.n_finished} trials; "
            f"{worst!r} rejected the most ({self.rejections[worst]} of {self.n_finished})."
        ]
        for k in sorted(self.closest, key=lambda k: -self.rejections.get(k, 0)):
            best = (self.closest[k] + 1.0) * limits[k]
            lines.append(
                f"  {k}: limit {limits[k]:g}, closest seen {best:.4g} "
                f"({self.closest[k] * 100:+.1f} % of the limit), "
                f"rejected {self.rejections.get(k, 0)}"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- the run
class _Stop:
    """SIGINT: finish the running trial, then stop (a second Ctrl-C aborts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after the running trial (Ctrl-C again to abort)")

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def create_or_load_study(cfg: ExperimentConfig) -> optuna.Study:
    """The study for ``cfg``: created, or continued when the config fingerprint agrees."""
    storage = open_storage(cfg.storage_url)
    try:
        study = optuna.create_study(
            study_name=cfg.study_name,
            storage=storage,
            directions=cfg.directions,
            sampler=make_sampler(cfg),
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. directions differ from the stored study
        raise StudyMismatchError(f"study={cfg.study_name!r}: {e}") from None
    except (OSError, optuna.exceptions.StorageInternalError) as e:
        raise StorageError(f"storage={cfg.storage_url!r} cannot be written: {e}") from None
    attrs = study.user_attrs
    fp = cfg.fingerprint()
    if ATTR_FINGERPRINT in attrs and attrs[ATTR_FINGERPRINT] != fp:
        old = attrs.get(ATTR_CONFIG, {})
        raise StudyMismatchError(
            f"study={cfg.study_name!r} in storage={cfg.storage_url!r} was run with another "
            f"config (fingerprint {attrs[ATTR_FINGERPRINT]} from {old.get('name')!r}, this one "
            f"{fp} from {cfg.name!r}); use another --study name or the same config"
        )
    if [d.name.lower() for d in study.directions] != cfg.directions:
        raise StudyMismatchError(f"study={cfg.study_name!r} has directions {study.directions}")
    if ATTR_FINGERPRINT not in attrs:
        study.set_user_attr(ATTR_CONFIG, cfg.to_dict())
        study.set_user_attr(ATTR_FINGERPRINT, fp)
        study.set_user_attr(ATTR_OBJECTIVES, [o.name for o in cfg.objectives])
    return study


def run_study(
    cfg: ExperimentConfig,
    *,
    estimator: Any | None = None,
    progress: bool = True,
    write_artifacts: bool = True,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    final_sync: bool = True,
    local_sampler: bool = False,
) -> RunResult:
    """Run (or continue) the study of ``cfg`` until ``cfg.trials`` trials are done.

    Trials already finished in the storage count against the budget, so the
    same call continues an interrupted run and N workers on one storage share
    one budget. Safe to call from a worker process; with several workers pass
    ``final_sync=False`` to all but one (the final sync re-reads MLflow and logs
    what is missing, which races with a worker still writing).

    ``local_sampler=True`` (one process only; the CLI sets it without ``--workers``):
    the sampler works on an in-memory copy of the study and each finished trial is
    written to the storage as one record (``create_new_trial(template_trial=...)``)
    instead of about thirty (one per sampled choice): the storage still holds every
    finished trial the moment it ends, and a running trial is never in it.
    """
    from search import _mlflow as mlv

    t_start = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"run_dir={cfg.run_dir!r} cannot be created: {e.strerror}") from None
    study = create_or_load_study(cfg)
    work = study  # the study the sampler works on
    if local_sampler:
        work = optuna.create_study(directions=cfg.directions, sampler=make_sampler(cfg))
        work.add_trials(
            [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        )
    objective = Objective(cfg, estimator)
    tracker = FrontTracker(cfg)
    for t in study.get_trials(deepcopy=False):
        tracker.add(t)

    # MLflow: a view; if it is down, warn and keep searching (sync-mlflow later).
    view: mlv.MlflowView | None = None
    mlflow_error: str | None = None
    pending: list[FrozenTrial] = []
    hv_steps: list[tuple[str, float, int]] = []
    last_flush = time.monotonic()
    if cfg.mlflow.enabled:
        uri = mlv.tracking_uri_for(run_dir, cfg.mlflow.tracking_uri)
        root = None if uri.startswith(("http", "databricks")) else run_dir / "mlartifacts"
        view = mlv.MlflowView(uri, mlv.default_experiment_name(cfg), cfg.study_name, root)
        try:
            down = _workers.mlflow_reachable(uri)
            if down is not None:
                raise ConnectionError(down)
            view.ensure_parent(study, mlv.parent_params(cfg, cfg.storage_url))
        except Exception as e:
            mlflow_error = _mlflow_down(e)
            view = None

    def flush(force: bool = False) -> None:
        nonlocal view, mlflow_error, last_flush
        if view is None or not (pending or hv_steps):
            return
        due = len(pending) >= cfg.mlflow.flush_every_trials
        if not (force or due or time.monotonic() - last_flush >= cfg.mlflow.flush_every_s):
            return
        try:
            names = [o.name for o in cfg.objectives]
            front = set(tracker.front)
            records = [mlv.child_record(t, names, front, cfg.study_name) for t in pending]
            view.write_children(records)
            if hv_steps:
                view.log_parent_metrics(hv_steps)
            pending.clear()
            hv_steps.clear()
        except Exception as e:
            mlflow_error = _mlflow_down(e)
            view = None
        last_flush = time.monotonic()

    bar = _progress(progress, cfg.trials, tracker.n_finished)

    def callback(running: optuna.Study, t: FrozenTrial) -> None:
        if running is not study and t.state.is_finished():  # local sampler: one write
            tid = study._storage.create_new_trial(study._study_id, template_trial=t)
            t = study._storage.get_trial(tid)
        if t.state in mlv.FINISHED_STATES:
            pending.append(t)
        if tracker.add(t) or t.state in DONE_STATES:
            step = tracker.n_finished
            hv_steps.extend(
                [("hypervolume", tracker.hv, step), ("n_feasible", tracker.n_feasible, step),
                 ("pareto_size", len(tracker.front), step)]
            )  # fmt: skip
        if bar is not None:
            bar.n = tracker.n_finished
            bar.set_postfix(
                feasible=tracker.n_feasible, pareto=len(tracker.front), hv=f"{tracker.hv:.4f}",
                refresh=False,
            )  # fmt: skip
            bar.refresh()
        if on_trial is not None:
            on_trial(t)
        flush()
        # The budget counts finished trials in the storage (all workers); checked here
        # rather than by a second callback, since Optuna deep-copies the trial per callback.
        if stop.requested or len(study.get_trials(deepcopy=False, states=DONE_STATES)) >= (
            cfg.trials
        ):
            running.stop()

    remaining = cfg.trials - tracker.n_finished
    started = datetime.datetime.now()
    # one architecture that breaks the estimator (torch raises RuntimeError) is a FAIL trial,
    # not the end of the search
    catch = (RuntimeError, FloatingPointError)
    with _Stop() as stop:
        try:
            if local_sampler and remaining > 0:
                work.optimize(
                    objective,
                    n_trials=remaining,
                    callbacks=[callback],
                    catch=catch,
                    gc_after_trial=False,
                    show_progress_bar=False,
                )
            elif not local_sampler:
                # Shared storage (issue 6): every worker's trials are in it while they run,
                # with heartbeats; the budget of cfg.trials is global; a worker whose share is
                # done waits for the others' running trials, so a killed one's is retried.
                _workers.reseed_for_worker(study.sampler, cfg.storage_url)
                _workers.optimize_shared(
                    study,
                    objective,
                    total_trials=cfg.trials,
                    callbacks=[callback],
                    catch=catch,
                    should_stop=lambda: stop.requested,
                )
        finally:
            close_storage(study._storage)  # held trial data out, fsync
    if bar is not None:
        bar.close()

    # Summary from the storage (the truth; other workers may have added trials).
    done = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in DONE_STATES and not _workers.is_surplus_trial(t)
    ]
    pareto = tuple(sorted(t.number for t in study.best_trials)) if done else ()
    final = FrontTracker(cfg)
    for t in done:
        final.add(t)
    artifacts: tuple[str, ...] = ()
    out_dir = run_dir / _safe_name(cfg.study_name)
    if write_artifacts and done:
        from search._results import write_results

        artifacts = write_results(study, cfg, out_dir)
    if view is not None:
        try:
            flush(force=True)
            others = _workers.other_workers(study, started) if final_sync else set()
            if others:
                log.warning(
                    "%d other worker(s) shared this study: once all are done, run `python -m "
                    "search sync-mlflow --study %s --storage ...` to log what a killed worker "
                    "left out", len(others), cfg.study_name,
                )  # fmt: skip
            if view is not None and final_sync and not others:
                view.catch_up(study, [o.name for o in cfg.objectives])
            if view is not None and write_artifacts:
                _log_parent_artifacts(view, study, cfg, final, out_dir, artifacts)
                view.finish_parent("KILLED" if stop.requested else "FINISHED")
        except Exception as e:
            mlflow_error = _mlflow_down(e)
    return RunResult(
        study_name=cfg.study_name,
        storage=cfg.storage_url,
        n_finished=len(done),
        n_feasible=final.n_feasible,
        pareto=pareto,
        hypervolume=final.hv,
        interrupted=stop.requested,
        elapsed_s=time.perf_counter() - t_start,
        estimator_calls=objective.counters.estimator_calls,
        run_dir=str(run_dir),
        mlflow_parent_run_id=view.parent_run_id if view is not None else None,
        mlflow_error=mlflow_error,
        rejections=dict(final.rejects.count),
        closest=dict(final.rejects.closest),
        artifacts=artifacts,
    )


def _mlflow_down(e: Exception) -> str:
    msg = f"MLflow logging stopped ({type(e).__name__}: {e}); trials are kept in the Optuna "
    msg += "storage: run `python -m search sync-mlflow --study ...` later to log them"
    log.warning(msg)
    return msg


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="trial", dynamic_ncols=True, leave=True)


def _log_parent_artifacts(
    view: Any,
    study: optuna.Study,
    cfg: ExperimentConfig,
    final: FrontTracker,
    out_dir: Path,
    artifacts: Sequence[str],
) -> None:
    """Final metrics, the result files and ``mlflow.pytorch.log_model`` for chosen ones."""
    view.log_parent_metrics(
        [("final_hypervolume", final.hv, final.n_finished),
         ("final_n_feasible", final.n_feasible, final.n_finished),
         ("final_pareto_size", len(final.front), final.n_finished),
         ("n_trials", final.n_finished, final.n_finished)]
    )  # fmt: skip
    c = view.client
    for a in artifacts:
        p = Path(a)
        rel = p.parent.relative_to(out_dir).as_posix() if p.parent != out_dir else None
        c.log_artifact(view.parent_run_id, str(p), artifact_path=rel)
    if cfg.mlflow.log_models > 0:
        from search._results import chosen_trials, log_models

        log_models(view, study, cfg, chosen_trials(study, cfg, cfg.mlflow.log_models))
