"""Hardware-aware multi-objective architecture search (Optuna study, MLflow view).

``run_study(load_config(path))`` runs or continues a study; the CLI is
``python -m search run|pareto|export|ui|sync-mlflow``.
"""

from search._config import (
    ConfigError,
    ExperimentConfig,
    HardwareTarget,
    ObjectiveSpec,
    load_config,
    parse_config,
)
from search._evaluate import TrialEvaluator
from search._fidelity import FidelityConfig, Reporter, RungReporter
from search._front import FrontTracker, hypervolume, pareto_trials
from search._mlflow import MlflowTarget, SyncResult, sync
from search._record import TrialRecord
from search._results import export_trial, pareto_table
from search._run import RunResult, run_study
from search._storage import StorageError, open_storage
from search._study import (
    StudyMismatchError,
    create_or_load_study,
    load_existing_study,
    study_config,
)
from search._user_estimator import EstimatorFunctionError
from search._workers import run_workers

__all__ = [
    "ConfigError",
    "EstimatorFunctionError",
    "ExperimentConfig",
    "FidelityConfig",
    "FrontTracker",
    "HardwareTarget",
    "MlflowTarget",
    "ObjectiveSpec",
    "Reporter",
    "RunResult",
    "RungReporter",
    "StorageError",
    "StudyMismatchError",
    "SyncResult",
    "TrialEvaluator",
    "TrialRecord",
    "create_or_load_study",
    "export_trial",
    "hypervolume",
    "load_config",
    "load_existing_study",
    "open_storage",
    "pareto_table",
    "pareto_trials",
    "parse_config",
    "run_study",
    "run_workers",
    "study_config",
    "sync",
]
