"""The Optuna study of an experiment: created once, continued only under the same config.

A study keeps the config it was made with (``roofnas.config``) and that config's fingerprint
(``roofnas.config_fingerprint``, ``ExperimentConfig.fingerprint``: what defines the search,
not the budget or where things are stored). A run, or a worker joining one, may continue a
study only when its fingerprint agrees, so trials of two different searches never mix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from search._config import NOT_FINGERPRINTED, ConfigError, ExperimentConfig, parse_config
from search._storage import StorageError, open_storage

ATTR_CONFIG = "roofnas.config"
ATTR_FINGERPRINT = "roofnas.config_fingerprint"
ATTR_OBJECTIVES = "roofnas.objectives"


class StudyMismatchError(RuntimeError):
    """A run asked to continue a study that was made with a different config."""


def make_sampler(cfg: ExperimentConfig) -> optuna.samplers.BaseSampler:
    """The sampler the config names, seeded with its seed."""
    name, seed = cfg.sampler.name, cfg.seed
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.sampler.population_size, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name in ("tpe", "gp"):
        return _model_sampler(name, seed)
    raise ConfigError(f"sampler.name={name!r} is unknown")


def _model_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """TPE or GP without their per-trial warning on independently sampled parameters.

    The spaces are conditional (a block's choices exist only at its depth), so both sample
    some parameters independently by design. Optuna 4.9 deprecated the switch (a
    FutureWarning on every construction) but still warns per parameter and trial without it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*warn_independent_sampling", category=FutureWarning
        )
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, warn_independent_sampling=False
            )
        try:  # GPSampler needs scipy and torch
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"sampler.name='gp' is not available here: {e}") from None


def create_or_load_study(cfg: ExperimentConfig, storage: BaseStorage | None = None) -> optuna.Study:
    """The study for ``cfg``: created, or continued when the config fingerprint agrees.

    ``storage``: an open storage for ``cfg.storage_url`` (default: opened here).
    """
    if storage is None:
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
    _check_or_stamp(study, cfg)
    return study


def _check_or_stamp(study: optuna.Study, cfg: ExperimentConfig) -> None:
    """Refuse a study made with another config; stamp a new one with this config."""
    attrs = study.user_attrs
    accepted = cfg.accepted_fingerprints()
    fp = accepted[0]  # this config's own; the others only continue older studies
    if ATTR_FINGERPRINT in attrs and attrs[ATTR_FINGERPRINT] not in accepted:
        old = attrs.get(ATTR_CONFIG, {})
        raise StudyMismatchError(
            f"study={cfg.study_name!r} in storage={cfg.storage_url!r} was run with another "
            f"config (fingerprint {attrs[ATTR_FINGERPRINT]} from {old.get('name')!r}, this one "
            f"{fp} from {cfg.name!r}; {_what_differs(old, cfg)}); use another --study name "
            "or the same config"
        )
    if [d.name.lower() for d in study.directions] != cfg.directions:
        raise StudyMismatchError(f"study={cfg.study_name!r} has directions {study.directions}")
    if ATTR_FINGERPRINT not in attrs:
        study.set_user_attr(ATTR_CONFIG, cfg.to_dict())
        study.set_user_attr(ATTR_FINGERPRINT, fp)
        study.set_user_attr(ATTR_OBJECTIVES, [o.name for o in cfg.objectives])


def _what_differs(old: dict[str, Any], cfg: ExperimentConfig) -> str:
    """The config keys that differ from the study's, for the refusal message."""
    new = cfg.to_dict()
    keys = sorted(k for k in old.keys() | new.keys()
                  if k not in NOT_FINGERPRINTED and old.get(k) != new.get(k))  # fmt: skip
    if keys:
        return "differs in " + ", ".join(keys)
    # Same settings: a file they name has other contents now.
    return "same settings, but the contents of the space or estimator file changed"


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
