"""Accuracy estimators: zero-cost proxies at initialization, short training, or none.

Every estimator maps an architecture to one finite float, higher is better,
deterministic for a given ``EstimatorConfig.seed`` (torch is re-seeded before
each model is built and before each pass) and a given torch thread count.

Proxies (computed on one fixed, real batch of the training split; conv and
linear weights are the scored parameters, as in Abdelfattah et al., "Zero-Cost
Proxies for Lightweight NAS", ICLR 2021, whose reference code these follow):

- ``synflow`` (Tanaka et al., NeurIPS 2020, eq. 2): sum over weights of
  ``|w * dR/dw|`` with ``R = sum(f(1))``: parameters replaced by their absolute
  values, an all-ones input of batch 1, float64, BatchNorm removed (the zero-cost
  paper's ``synflow`` computes on a copy without BN). Returned as
  ``log1p(sum)`` so that values stay readable; the order is unchanged.
- ``naswot`` (Mellor et al., ICML 2021, eq. 2): ``log|K_H|`` with
  ``K_H[i, j] = N_A - hamming(c_i, c_j)`` over the binary codes ``c = (a > 0)`` of
  every activation module (ReLU, ReLU6, Hardswish, SiLU...) for the batch.
- ``grad_norm``: sum over layers of ``||dL/dw||_2`` for the cross-entropy loss.
- ``snip`` (Lee et al., ICLR 2019): sum over weights of ``|w * dL/dw|``.
- ``proxy_rank``: the zero-cost paper's voting as a rank combination: the mean
  over the configured proxies of the architecture's rank fraction in a reference
  population, ``(#{r < v} + 0.5 #{r == v} + 0.5) / (n + 1)``, in (0, 1).
  The reference population is fixed once per estimator: either ``reference``
  architectures given to ``make_estimator``, or ``reference_size`` architectures
  drawn from ``space`` by an Optuna ``RandomSampler(seed)``, or, with neither,
  the first ``reference_size`` architectures scored (each ranked against those
  scored before it; after that the population is frozen). So a score depends on
  the seed, and in the last mode on the call order, and on nothing else.
  ``proxies`` may also name the cost features ``COST_FEATURES``: ``params`` and
  ``macs`` (multiply-accumulates at batch 1), exact counts of the architecture's
  layers by ``costmodel.count`` (so the architecture must have ``lower(batch)``,
  as every ``searchspace.Architecture`` does). In the vote they count as evidence
  FOR accuracy (more is ranked higher): the parameter count alone ranks
  architectures by short-trained accuracy better than any single zero-cost proxy
  (experiments/results/ranking_truth.md); the search still minimises costs as
  separate objectives.

``tse`` (training speed estimation, Ru et al., "Speedy Performance Estimation
for Neural Architecture Search", NeurIPS 2021, eq. 3) trains exactly as ``train`` does
for ``epochs`` epochs and sums the mini-batch training losses along the way: a network
that fits the data faster generalises better. It returns ``exp(-mean loss)``, the
geometric mean of the probability given to the right label at each step: the same order
as the paper's negated sum for a fixed protocol, in (0, 1], and a diverged run scores
``WORST_SCORE``. It needs no validation pass, and the per-step losses average out the
noise that makes an early validation accuracy a poor ranker
(experiments/results/ranking_truth.md). ``proxy_rank`` may name it in ``proxies``; the
reference population is then trained too (``reference_size`` short trainings, once).

``train`` trains for ``epochs`` epochs (SGD with Nesterov momentum or Adam,
cosine learning rate, seeded shuffling) and returns validation accuracy in [0, 1].
Called with a ``report`` (a ``search._fidelity.Reporter``), it trains ``report.max_budget``
epochs instead and reports validation accuracy at the epochs the reporter asks for
(``report_epochs``); the reporter may stop it there (``optuna.TrialPruned``). A run that
is never stopped ends with the accuracy of a plain run of ``max_budget`` epochs, to the bit.
``none`` returns ``NEUTRAL_SCORE`` for every architecture (pure cost search).

A proxy that comes out NaN or infinite (overflow, a singular kernel, no
activations to code) is replaced by ``WORST_SCORE`` = 0.0 with a
``ProxyWarning`` naming the architecture. 0.0 is the floor of every score:
``log1p`` of a non-negative sum, norms, accuracy, and ``log det`` of an integer
positive-definite matrix (its determinant is an integer >= 1).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

import costmodel
import searchspace
from search._data import DATASETS, Dataset, load_dataset
from search._fidelity import Reporter

__all__ = [
    "BUDGET_ESTIMATOR_KINDS",
    "COST_FEATURES",
    "ESTIMATOR_KINDS",
    "NEUTRAL_SCORE",
    "PROXY_KINDS",
    "TRAINING_FEATURES",
    "WORST_SCORE",
    "AccuracyEstimator",
    "EstimatorConfig",
    "ProxyWarning",
    "compute_proxies",
    "cost_features",
    "evaluate",
    "make_estimator",
    "rank_combination",
    "sample_reference",
    "train_and_evaluate",
    "training_speed",
]

PROXY_KINDS: tuple[str, ...] = ("synflow", "naswot", "grad_norm", "snip")
COST_FEATURES: tuple[str, ...] = ("params", "macs")  # proxy_rank inputs besides PROXY_KINDS
TRAINING_FEATURES: tuple[str, ...] = ("tse",)  # a short training: proxy_rank input or a kind
ESTIMATOR_KINDS: tuple[str, ...] = ("none", *PROXY_KINDS, "tse", "proxy_rank", "train")
# kinds whose ``score`` takes ``report=``: they train, so a budget means something to them
BUDGET_ESTIMATOR_KINDS: tuple[str, ...] = ("train",)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
WORST_SCORE = 0.0
NEUTRAL_SCORE = 0.0

# Modules whose output sign is the sign of their input: (a > 0) is the ReLU code.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.LeakyReLU, nn.GELU, nn.ELU)
_SCORED = (nn.Conv2d, nn.Linear)


class ProxyWarning(RuntimeWarning):
    """A proxy was not finite for an architecture and was replaced by WORST_SCORE."""


@dataclass(frozen=True)
class EstimatorConfig:
    """How to estimate accuracy; the ``[estimator]`` table of an experiment."""

    kind: str = "proxy_rank"
    dataset: str = "digits"
    data_dir: str | None = None
    batch_size: int = 64  # proxy batch and training batch
    epochs: int = 3  # "train" and "tse"
    seed: int = 0
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    val_fraction: float = 0.2  # digits, digits_hard, imagefolder without train/ and val/
    split_seed: int = 0  # the train/val split and the sample caps, independent of seed
    max_train_samples: int | None = 10_000  # caps CIFAR-10's 50,000 (held as float32)
    max_val_samples: int | None = 2_000
    proxies: tuple[str, ...] = PROXY_KINDS  # combined by proxy_rank
    reference_size: int = 16  # proxy_rank reference population
    torch_threads: int | None = None  # None: leave torch's thread count alone

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, ESTIMATOR_KINDS)
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"estimator.data_dir={self.data_dir!r} must be a string path")
        for key in ("batch_size", "epochs", "reference_size"):
            _check_int(key, getattr(self, key), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("split_seed", self.split_seed, minimum=0)
        for key in ("max_train_samples", "max_val_samples", "torch_threads"):
            if getattr(self, key) is not None:
                _check_int(key, getattr(self, key), minimum=1)
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float(
            "val_fraction", self.val_fraction, low=0.0, high=1.0, low_open=True, high_open=True
        )
        if isinstance(self.proxies, str) or not isinstance(self.proxies, tuple):
            raise ValueError(f"estimator.proxies={self.proxies!r} must be a list of proxy names")
        if not self.proxies:
            raise ValueError(f"estimator.proxies={list(self.proxies)!r} must not be empty")
        for p in self.proxies:
            _check_choice("proxies", p, (*PROXY_KINDS, *COST_FEATURES, *TRAINING_FEATURES))
        if len(set(self.proxies)) != len(self.proxies):
            raise ValueError(f"estimator.proxies={list(self.proxies)!r} has duplicates")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EstimatorConfig:
        """Validate a TOML table; unknown keys and bad values raise ValueError naming both."""
        if not isinstance(d, Mapping):
            raise ValueError(f"estimator config must be a table, got {d!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in known:
                raise ValueError(f"unknown estimator key {key!r}={d[key]!r}; known keys: {known}")
        values = dict(d)
        if "proxies" in values and isinstance(values["proxies"], list):
            values["proxies"] = tuple(values["proxies"])
        for key in ("lr", "momentum", "weight_decay", "val_fraction"):
            v = values.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                values[key] = float(v)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["proxies"] = list(self.proxies)
        return out


def _check_choice(key: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"estimator.{key}={value!r} must be one of {list(choices)}")


def _check_int(key: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"estimator.{key}={value!r} must be an integer >= {minimum}")


def _check_float(
    key: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, float) and math.isfinite(value)
    if ok:
        assert isinstance(value, float)
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"estimator.{key}={value!r} must be a number in {lo}{low}, {high}{hi}")


# ---------------------------------------------------------------- proxies on a module


def compute_proxies(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kinds: Sequence[str] = PROXY_KINDS,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Raw proxy values (possibly NaN/inf) of ``model`` at its current weights.

    ``model`` is not changed except for gradients and BatchNorm running stats;
    synflow works on a copy. naswot, grad_norm and snip share one forward pass in
    train mode (BatchNorm on batch statistics, as the reference implementations).
    """
    for k in kinds:
        _check_choice("proxies", k, PROXY_KINDS)
    out: dict[str, float] = {}
    if "synflow" in kinds:
        out["synflow"] = _synflow(model, tuple(x.shape[1:]))
    want_codes = "naswot" in kinds
    want_grads = "grad_norm" in kinds or "snip" in kinds
    if not (want_codes or want_grads):
        return out
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)
    coded = [0]

    def hook(_m: nn.Module, _inp: Any, act: torch.Tensor) -> None:
        # Mellor et al. 2021: K_H = c c^T + (1-c)(1-c)^T = 2 c c^T - s_i - s_j + N_A with
        # s the row sums; one float32 matmul is exact while N_A < 2**24.
        c = (act.detach() > 0).reshape(n, -1).float()
        s = c.sum(dim=1)
        k = 2.0 * (c @ c.T) - s[:, None] - s[None, :] + c.shape[1]
        kernel.add_(k.double())
        coded[0] += 1

    handles = (
        [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
        if want_codes
        else []
    )
    model.train()
    torch.manual_seed(seed)  # dropout, if any
    try:
        if want_grads:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        else:
            with torch.no_grad():
                model(x)
    finally:
        for h in handles:
            h.remove()
    if want_codes:
        out["naswot"] = _logdet(kernel) if coded[0] else math.nan
    layers = [m for m in model.modules() if isinstance(m, _SCORED) and m.weight.grad is not None]
    if "grad_norm" in kinds:
        # Abdelfattah et al. 2021, grad_norm: sum of per-layer L2 norms of the weight gradient
        out["grad_norm"] = float(sum(float(m.weight.grad.norm()) for m in layers))
    if "snip" in kinds:
        # Lee et al. 2019, eq. 6 saliency |g * w|, summed over all weights
        with torch.no_grad():
            out["snip"] = float(sum(float((m.weight.grad * m.weight).abs().sum()) for m in layers))
    if want_grads:
        model.zero_grad(set_to_none=True)
    return {k: out[k] for k in kinds}


def cost_features(arch: Any, kinds: Sequence[str] = COST_FEATURES) -> dict[str, float]:
    """Exact ``params`` and ``macs`` (batch 1) of ``arch``'s layers, by ``costmodel.count``."""
    for k in kinds:
        _check_choice("proxies", k, COST_FEATURES)
    lower = getattr(arch, "lower", None)
    if not callable(lower):
        raise ValueError(
            f"cost features {list(kinds)} need an architecture with lower(batch) "
            f"(a searchspace.Architecture), got {type(arch).__name__}"
        )
    counts = [costmodel.count(spec) for spec in lower(batch=1)]
    return {k: float(sum(getattr(c, k) for c in counts)) for k in kinds}


def _logdet(kernel: torch.Tensor) -> float:
    sign, logabsdet = np.linalg.slogdet(kernel.numpy())
    return float(logabsdet) if sign > 0 else -math.inf


def _synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    net = copy.deepcopy(model)
    _strip_batchnorm(net)
    net = net.double().eval()  # eval: dropout off; BN is gone anyway
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()  # Tanaka et al. 2020, Alg. 1: linearize with |theta|
    net.zero_grad(set_to_none=True)
    torch.sum(net(torch.ones((1, *input_shape), dtype=torch.float64))).backward()
    total = 0.0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _SCORED) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())  # eq. 2: dR/dθ ⊙ θ
    return math.log1p(total) if total >= 0 else math.nan


def _strip_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _strip_batchnorm(child)


# ---------------------------------------------------------------- training


def train_and_evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    report: Callable[[float, float], None] | None = None,
    report_at: Sequence[int] = (),
) -> float:
    """Train ``model`` in place on ``data.x_train``; return validation accuracy in [0, 1].

    ``report(acc, epoch)`` gets the validation accuracy after each epoch in ``report_at``
    and after the last one; it may raise (``optuna.TrialPruned``) to stop training there.
    Evaluating in between changes nothing that training uses (no gradients, BatchNorm in eval
    mode keeps its running statistics, no random numbers drawn), so the result is the same
    with or without reports.
    """
    run = _TrainingRun.start(model, data, epochs, batch_size, seed, optimizer, lr, momentum,
                             weight_decay)  # fmt: skip
    for epoch in range(1, epochs + 1):
        if not run.epoch():
            break  # diverged: the accuracy of what is left is the result
        if report is not None and epoch in report_at and epoch < epochs:
            report(evaluate(model, data), epoch)
            model.train()
    acc = evaluate(model, data)
    if report is not None:
        report(acc, epochs)
    return acc


def training_speed(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    optimizer: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> float:
    """TSE of ``model`` trained in place as ``train_and_evaluate`` would: ``exp(-mean loss)``
    over every training step, in (0, 1]; 0.0 (``WORST_SCORE``) if the loss diverged."""
    run = _TrainingRun.start(model, data, epochs, batch_size, seed, optimizer, lr, momentum,
                             weight_decay)  # fmt: skip
    for _ in range(epochs):
        if not run.epoch():
            return WORST_SCORE
    return math.exp(-math.fsum(run.losses) / max(1, len(run.losses)))


@dataclass
class _TrainingRun:
    """One seeded training: optimizer, cosine schedule, batches, and every step's loss."""

    model: nn.Module
    data: Dataset
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    batches: list[tuple[int, int]]
    gen: torch.Generator
    losses: list[float] = dataclasses.field(default_factory=list)

    @classmethod
    def start(
        cls,
        model: nn.Module,
        data: Dataset,
        epochs: int,
        batch_size: int,
        seed: int,
        optimizer: str,
        lr: float,
        momentum: float,
        weight_decay: float,
    ) -> _TrainingRun:
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
            )
        elif optimizer == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"optimizer={optimizer!r} must be one of {list(OPTIMIZERS)}")
        n = data.x_train.shape[0]
        # a last batch of one sample would break BatchNorm in train mode: drop it
        batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        if len(batches) > 1 and batches[-1][1] - batches[-1][0] < 2:
            batches.pop()
        total = max(1, epochs * len(batches))
        # cosine annealing to zero over all steps (Loshchilov & Hutter 2017, without restarts)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model.train()
        return cls(model, data, opt, sched, batches, gen)

    def epoch(self) -> bool:
        """One pass over a seeded permutation of the training split; False if the loss diverged."""
        x, y = self.data.x_train, self.data.y_train
        perm = torch.randperm(x.shape[0], generator=self.gen)
        for lo, hi in self.batches:
            idx = perm[lo:hi]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                return False
            self.losses.append(float(loss.detach()))
            loss.backward()
            self.opt.step()
            self.sched.step()
        return True


def report_epochs(report: Reporter) -> tuple[int, int]:
    """(epochs to train, the epochs at which to report) for a reporter's rung budgets.

    A rung budget ``b`` is reached after epoch ``ceil(b)``.
    """
    epochs = math.ceil(report.max_budget - 1e-9)
    return epochs, tuple(sorted({math.ceil(b - 1e-9) for b in report.rungs}))


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, chunk: int = 512) -> float:
    model.eval()
    correct = 0
    for lo in range(0, data.x_val.shape[0], chunk):
        logits = model(data.x_val[lo : lo + chunk])
        correct += int((logits.argmax(dim=1) == data.y_val[lo : lo + chunk]).sum())
    return correct / max(1, data.x_val.shape[0])


# ---------------------------------------------------------------- estimators


ModelFactory = Callable[[Any], nn.Module]


class AccuracyEstimator(ABC):
    """Scores an architecture; higher is better. ``last_values`` holds the raw
    per-proxy values of the last ``score`` call (empty for none/train), for logging."""

    name: str
    config: EstimatorConfig

    def __init__(self, config: EstimatorConfig) -> None:
        self.config = config
        self.name = config.kind
        self.last_values: dict[str, float] = {}

    @abstractmethod
    def score(self, arch: Any, report: Reporter | None = None) -> float:
        """The score of ``arch``; ``report`` only for kinds in ``BUDGET_ESTIMATOR_KINDS``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _no_budget(kind: str, report: Reporter | None) -> None:
    if report is not None:
        raise ValueError(
            f"estimator.kind={kind!r} cannot use budgets (report=); kinds that can: "
            f"{list(BUDGET_ESTIMATOR_KINDS)}"
        )


class _ConstantEstimator(AccuracyEstimator):
    def score(self, arch: Any, report: Reporter | None = None) -> float:
        _no_budget(self.name, report)
        return NEUTRAL_SCORE


class _ModelEstimator(AccuracyEstimator):
    def __init__(
        self,
        config: EstimatorConfig,
        input_shape: tuple[int, int, int],
        num_classes: int,
        build: ModelFactory,
    ) -> None:
        super().__init__(config)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self._build_fn = build
        self.data = load_dataset(
            config.dataset,
            input_shape,
            data_dir=config.data_dir,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            max_train_samples=config.max_train_samples,
            max_val_samples=config.max_val_samples,
        )
        if self.data.num_classes > num_classes:
            raise ValueError(
                f"dataset={config.dataset!r} has {self.data.num_classes} classes but the "
                f"architecture has num_classes={num_classes}"
            )
        # one fixed real batch for every proxy call (seeded, so reproducible)
        gen = torch.Generator().manual_seed(config.seed)
        n = self.data.x_train.shape[0]
        idx = torch.randperm(n, generator=gen)[: min(config.batch_size, n)]
        self.batch = (self.data.x_train[idx], self.data.y_train[idx])

    def build(self, arch: Any) -> nn.Module:
        torch.manual_seed(self.config.seed)  # identical initial weights on every call
        return self._build_fn(arch)

    def score(self, arch: Any, report: Reporter | None = None) -> float:
        if self.name not in BUDGET_ESTIMATOR_KINDS:
            _no_budget(self.name, report)
        with _torch_threads(self.config.torch_threads):
            return self._score(arch, report)

    @abstractmethod
    def _score(self, arch: Any, report: Reporter | None) -> float: ...

    def proxy_values(self, arch: Any, kinds: Sequence[str]) -> dict[str, float]:
        """Finite proxy values of ``arch`` (non-finite ones replaced by WORST_SCORE);
        ``kinds`` are PROXY_KINDS computed on the built model, COST_FEATURES or the
        TRAINING_FEATURES (a short training of the built model)."""
        on_model = [k for k in kinds if k in PROXY_KINDS]
        raw: dict[str, float] = {}
        if "tse" in kinds:
            raw["tse"] = self.training_speed(arch)
        if on_model:
            x, y = self.batch
            raw = compute_proxies(self.build(arch), x, y, on_model, seed=self.config.seed)
        costs = [k for k in kinds if k in COST_FEATURES]
        if costs:
            raw.update(cost_features(arch, costs))
        return {k: _finite(raw[k], k, arch) for k in kinds}

    def recipe(self) -> dict[str, Any]:
        """The config's training recipe, as ``train_and_evaluate`` and ``training_speed``
        take it (all but the epochs, which a reporter may change)."""
        c = self.config
        return {"batch_size": c.batch_size, "seed": c.seed, "optimizer": c.optimizer,
                "lr": c.lr, "momentum": c.momentum, "weight_decay": c.weight_decay}  # fmt: skip

    def training_speed(self, arch: Any) -> float:
        return training_speed(
            self.build(arch), self.data, epochs=self.config.epochs, **self.recipe()
        )


class _ProxyEstimator(_ModelEstimator):
    def _score(self, arch: Any, report: Reporter | None) -> float:
        self.last_values = self.proxy_values(arch, (self.name,))
        return self.last_values[self.name]


class _TrainEstimator(_ModelEstimator):
    def _score(self, arch: Any, report: Reporter | None) -> float:
        c = self.config
        # with a reporter: max_budget epochs (the cosine schedule spans all of them)
        epochs, report_at = (c.epochs, ()) if report is None else report_epochs(report)
        acc = train_and_evaluate(
            self.build(arch),
            self.data,
            epochs=epochs,
            report=report,
            report_at=report_at,
            **self.recipe(),
        )
        return _finite(acc, "train", arch)


class _ProxyRankEstimator(_ModelEstimator):
    def __init__(self, *args: Any, reference: Sequence[Any] | None = None) -> None:
        super().__init__(*args)
        self.reference: dict[str, list[float]] = {k: [] for k in self.config.proxies}
        self.frozen = False
        if reference is not None:
            if not reference:
                raise ValueError("proxy_rank reference population is empty")
            with _torch_threads(self.config.torch_threads):
                for arch in reference:
                    for k, v in self.proxy_values(arch, self.config.proxies).items():
                        self.reference[k].append(v)
            self.frozen = True

    def _score(self, arch: Any, report: Reporter | None) -> float:
        values = self.proxy_values(arch, self.config.proxies)
        self.last_values = values
        result = rank_combination(values, self.reference)
        if not self.frozen:
            for k, v in values.items():
                self.reference[k].append(v)
            self.frozen = len(self.reference[self.config.proxies[0]]) >= self.config.reference_size
        return result


def rank_combination(
    values: Mapping[str, float], reference: Mapping[str, Sequence[float]]
) -> float:
    """Mean rank fraction of ``values`` among ``reference`` (the zero-cost paper's vote).

    Per proxy: ``(#{r < v} + 0.5 #{r == v} + 0.5) / (n + 1)``, the mid-rank of v
    inserted into the n reference values, scaled into (0, 1); 0.5 when n = 0.
    """
    fractions = []
    for k, v in values.items():
        ref = np.asarray(reference[k], dtype=np.float64)
        less, equal = int((ref < v).sum()), int((ref == v).sum())
        fractions.append((less + 0.5 * equal + 0.5) / (len(ref) + 1))
    return float(np.mean(fractions))


def _finite(value: float, kind: str, arch: Any) -> float:
    if math.isfinite(value):
        return float(value)
    warnings.warn(
        f"{kind}={value} for arch {_label(arch)}; using WORST_SCORE={WORST_SCORE}",
        ProxyWarning,
        stacklevel=3,
    )
    return WORST_SCORE


def _label(arch: Any) -> str:
    to_string = getattr(arch, "to_string", None)
    text = to_string() if callable(to_string) else repr(arch)
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sample_reference(space: Any, n: int, seed: int) -> list[Any]:
    """``n`` architectures from ``space`` by Optuna's RandomSampler(seed): a fixed population."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        archs = []
        for _ in range(n):
            trial = study.ask()
            archs.append(searchspace.sample(trial, space))
            study.tell(trial, 0.0)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return archs


def make_estimator(
    cfg: EstimatorConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    space: Any = None,
    reference: Sequence[Any] | None = None,
    build: ModelFactory | None = None,
) -> AccuracyEstimator:
    """An estimator for architectures of ``input_shape`` (C, H, W) and ``num_classes``.

    Data is loaded here, so a missing dataset fails before any search work.
    ``build`` defaults to ``searchspace.build``. For ``proxy_rank`` the reference
    population is ``reference`` if given, else ``cfg.reference_size`` samples of
    ``space`` if given, else the first ``cfg.reference_size`` scored architectures.
    """
    if not isinstance(cfg, EstimatorConfig):
        raise TypeError(f"cfg={cfg!r} must be an EstimatorConfig (use EstimatorConfig.from_dict)")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={tuple(input_shape)!r} must be (C, H, W), all >= 1")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be >= 1")
    if cfg.kind == "none":
        return _ConstantEstimator(cfg)
    if build is None:
        build = searchspace.build
    args = (cfg, shape, num_classes, build)
    if cfg.kind == "train":
        return _TrainEstimator(*args)
    if cfg.kind == "proxy_rank":
        if reference is None and space is not None:
            reference = sample_reference(space, cfg.reference_size, cfg.seed)
        return _ProxyRankEstimator(*args, reference=reference)
    return _ProxyEstimator(*args)
