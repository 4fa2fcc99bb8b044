"""Hardware-aware multi-objective architecture search (Optuna study, MLflow view).

``run_study(load_config(path))`` runs or continues a study; the CLI is
``python -m search run|pareto|export|ui|sync-mlflow``.
"""

from search._config import ConfigError, ExperimentConfig, HardwareTarget, load_config, parse_config
from search._mlflow import SyncResult, sync
from search._results import export_trial, pareto_table, pareto_trials
from search._run import (
    RunResult,
    StorageError,
    StudyMismatchError,
    create_or_load_study,
    load_existing_study,
    run_study,
    study_config,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "HardwareTarget",
    "RunResult",
    "StorageError",
    "StudyMismatchError",
    "SyncResult",
    "create_or_load_study",
    "export_trial",
    "load_config",
    "load_existing_study",
    "pareto_table",
    "pareto_trials",
    "parse_config",
    "run_study",
    "study_config",
    "sync",
]
