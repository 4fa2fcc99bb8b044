"""Accuracy estimators (search._estimators) and their datasets (search._data)."""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import search._data as data_module
from search._data import (
    DIGITS_HARD_TRAIN_COPIES,
    DIGITS_HARD_VAL_COPIES,
    Dataset,
    DatasetNotFoundError,
    load_dataset,
)
from search._estimators import (
    COST_FEATURES,
    ESTIMATOR_KINDS,
    PROXY_KINDS,
    WORST_SCORE,
    EstimatorConfig,
    ProxyWarning,
    compute_proxies,
    cost_features,
    evaluate,
    make_estimator,
    rank_combination,
    train_and_evaluate,
    training_speed,
)


@dataclass(frozen=True)
class Toy:
    """Stand-in architecture: a width; ``to_string`` names it in warnings."""

    width: int = 8
    nan: bool = False

    def to_string(self) -> str:
        return f"toy_w{self.width}" + ("_nan" if self.nan else "")


class _Nan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * math.nan


def toy_net(arch: Toy, in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    w = arch.width
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * w, num_classes),
    ]
    if arch.nan:
        layers.append(_Nan())
    return nn.Sequential(*layers)


SHAPE = (3, 16, 16)


def estimator(kind: str, **kw: object):
    cfg = EstimatorConfig(kind=kind, batch_size=32, **kw)  # type: ignore[arg-type]
    return make_estimator(cfg, SHAPE, 10, build=toy_net)


# ---------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", [k for k in ESTIMATOR_KINDS if k != "train"])
def test_each_kind_is_finite_and_deterministic_for_a_seed(kind: str) -> None:
    a, b = estimator(kind, seed=3), estimator(kind, seed=3)
    archs = [Toy(4), Toy(8), Toy(6)]
    first = [a.score(x) for x in archs]
    second = [b.score(x) for x in archs]  # a fresh estimator, same seed and call order
    assert first == second
    assert all(isinstance(v, float) and math.isfinite(v) for v in first)
    assert a.name == kind


@pytest.mark.parametrize("kind", PROXY_KINDS)
def test_proxy_depends_on_the_seed_and_repeats(kind: str) -> None:
    est = estimator(kind, seed=0)
    assert est.score(Toy(8)) == est.score(Toy(8))
    assert est.score(Toy(8)) != estimator(kind, seed=1).score(Toy(8))


def test_none_is_a_neutral_constant_and_loads_no_data() -> None:
    cfg = EstimatorConfig(kind="none", dataset="cifar10", data_dir="/nonexistent")
    est = make_estimator(cfg, SHAPE, 10, build=toy_net)
    assert est.score(Toy(4)) == est.score(Toy(64)) == 0.0


def test_non_finite_proxy_becomes_worst_value_with_a_warning_naming_the_arch() -> None:
    est = estimator("grad_norm")
    with pytest.warns(ProxyWarning, match=r"toy_w8_nan.*WORST_SCORE=0\.0"):
        assert est.score(Toy(8, nan=True)) == WORST_SCORE


def test_torch_threads_are_set_for_the_call_and_restored() -> None:
    before = torch.get_num_threads()
    seen = []

    def build(arch: Toy) -> nn.Module:
        seen.append(torch.get_num_threads())
        return toy_net(arch)

    cfg = EstimatorConfig(kind="naswot", batch_size=8, torch_threads=1)
    make_estimator(cfg, SHAPE, 10, build=build).score(Toy(4))
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_dataset_with_more_classes_than_the_arch_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"10 classes.*num_classes=5"):
        make_estimator(EstimatorConfig(kind="snip"), SHAPE, 5, build=toy_net)


# ---------------------------------------------------------------- synflow


def test_synflow_golden_two_linear_layers() -> None:
    # R = sum_j |v_j| sum_i |W_ji| * 1 is bilinear in (W, v), so by Euler's theorem
    # sum(|W| dR/d|W|) = sum(|v| dR/d|v|) = R and synflow = log1p(2 R).
    # W = [[1, -2], [3, 0.5]], v = [[-1, 2]]: R = 1*(1+2) + 2*(3+0.5) = 10 -> log1p(20).
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[2].weight.copy_(torch.tensor([[-1.0, 2.0]]))
    x = torch.randn(4, 2)
    out = compute_proxies(net, x, torch.zeros(4, dtype=torch.long), ("synflow",))
    assert out["synflow"] == pytest.approx(math.log1p(20.0), rel=1e-12)
    assert net[2].weight[0, 0].item() == -1.0  # the caller's model is untouched


def test_synflow_ignores_batchnorm() -> None:
    # The zero-cost paper's synflow computes on a copy without BatchNorm.
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    plain(torch.zeros(1, 3, 6, 6))
    with_bn = nn.Sequential(plain[0], nn.BatchNorm2d(4), *plain[1:])
    with torch.no_grad():
        with_bn[1].weight.fill_(5.0)
    x, y = torch.randn(2, 3, 6, 6), torch.zeros(2, dtype=torch.long)
    a = compute_proxies(plain, x, y, ("synflow",))["synflow"]
    b = compute_proxies(with_bn, x, y, ("synflow",))["synflow"]
    assert a == pytest.approx(b, rel=1e-12)


def test_synflow_grows_with_width() -> None:
    est = estimator("synflow")
    values = [est.score(Toy(w)) for w in (2, 4, 8, 16, 32)]
    assert values == sorted(values) and len(set(values)) == len(values)


# ---------------------------------------------------------------- naswot


def test_naswot_golden_hamming_kernel() -> None:
    # codes c1 = [1, 0], c2 = [1, 1] (N_A = 2, Hamming distance 1): K = [[2, 1], [1, 2]],
    # det K = 4 - 1 = 3 -> log 3 (Mellor et al. 2021, eq. 2).
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    x = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    out = compute_proxies(net, x, torch.zeros(2, dtype=torch.long), ("naswot",))
    assert out["naswot"] == pytest.approx(math.log(3.0), rel=1e-12)


def test_naswot_of_identical_codes_is_lower_than_of_a_random_net() -> None:
    def constant_codes(arch: Toy) -> nn.Module:
        net = toy_net(arch)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # every activation input becomes +1
                nn.init.zeros_(m.weight)
                nn.init.ones_(m.bias)
        return net

    cfg = EstimatorConfig(kind="naswot", batch_size=32)
    same = make_estimator(cfg, SHAPE, 10, build=constant_codes)
    with pytest.warns(ProxyWarning, match="toy_w8"):  # K = N_A * ones is singular
        low = same.score(Toy(8))
    random = make_estimator(cfg, SHAPE, 10, build=toy_net).score(Toy(8))
    assert low == WORST_SCORE < random


def test_naswot_without_activations_is_worst() -> None:
    def linear(arch: Toy) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))

    est = make_estimator(EstimatorConfig(kind="naswot", batch_size=8), SHAPE, 10, build=linear)
    with pytest.warns(ProxyWarning, match="naswot=nan"):
        assert est.score(Toy(1)) == WORST_SCORE


# ---------------------------------------------------------------- grad_norm, snip


def test_grad_norm_and_snip_match_autograd_by_hand() -> None:
    torch.manual_seed(0)
    net = toy_net(Toy(4), num_classes=3)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    out = compute_proxies(net, x, y, ("grad_norm", "snip"))
    net.train()
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), weights)
    assert out["grad_norm"] == pytest.approx(sum(g.norm().item() for g in grads), rel=1e-6)
    snip = sum((g * w).abs().sum().item() for g, w in zip(grads, weights, strict=True))
    assert out["snip"] == pytest.approx(snip, rel=1e-6)
    assert all(w.grad is None for w in weights)  # no gradients left behind


def test_compute_proxies_rejects_an_unknown_proxy() -> None:
    with pytest.raises(ValueError, match="proxies='jacov'"):
        compute_proxies(nn.Identity(), torch.zeros(1, 1), torch.zeros(1), ("jacov",))


# ---------------------------------------------------------------- proxy_rank


def test_rank_combination_golden() -> None:
    # a: 2 among [1, 2, 3]: (1 less + 0.5 * 1 equal + 0.5) / (3 + 1) = 0.5
    # b: 9 among [1, 2, 3]: (3 + 0 + 0.5) / 4 = 0.875; mean = 0.6875
    ref = {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}
    assert rank_combination({"a": 2.0, "b": 9.0}, ref) == 0.6875
    assert rank_combination({"a": 5.0}, {"a": []}) == 0.5


def test_proxy_rank_with_a_fixed_reference_is_call_order_independent() -> None:
    ref = [Toy(w) for w in (2, 4, 8, 16)]
    cfg = EstimatorConfig(kind="proxy_rank", batch_size=16)
    a = make_estimator(cfg, SHAPE, 10, build=toy_net, reference=ref)
    b = make_estimator(cfg, SHAPE, 10, build=toy_net, reference=ref)
    forward = [a.score(Toy(w)) for w in (3, 6, 12, 24)]
    backward = [b.score(Toy(w)) for w in (24, 12, 6, 3)][::-1]
    assert forward == backward
    assert all(0.0 < v < 1.0 for v in forward)
    assert set(a.last_values) == set(PROXY_KINDS)


def test_proxy_rank_warm_up_population_freezes_after_reference_size() -> None:
    est = estimator("proxy_rank", reference_size=3)
    assert est.score(Toy(4)) == 0.5  # nothing to rank against yet
    est.score(Toy(8))
    est.score(Toy(16))
    frozen = est.score(Toy(6))
    assert est.score(Toy(6)) == frozen  # population frozen at 3: stationary


def test_proxy_rank_samples_its_reference_from_a_space(monkeypatch: pytest.MonkeyPatch) -> None:
    import search._estimators as E

    calls = []

    def fake_sample(space: object, n: int, seed: int) -> list[Toy]:
        calls.append((space, n, seed))
        return [Toy(w) for w in range(2, 2 + n)]

    monkeypatch.setattr(E, "sample_reference", fake_sample)
    cfg = EstimatorConfig(kind="proxy_rank", batch_size=8, reference_size=3, seed=5)
    make_estimator(cfg, SHAPE, 10, build=toy_net, space="SPACE")
    assert calls == [("SPACE", 3, 5)]


# ---------------------------------------------------------------- train


def test_train_on_digits_beats_chance_clearly_and_repeats() -> None:
    def tiny(arch: Toy) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    cfg = EstimatorConfig(kind="train", epochs=2, batch_size=32, seed=1)
    est = make_estimator(cfg, (1, 8, 8), 10, build=tiny)
    acc = est.score(Toy())
    assert acc > 0.6  # chance is 0.1
    assert est.score(Toy()) == acc


def test_train_with_adam_and_a_diverging_lr_still_returns_an_accuracy() -> None:
    """Training stops at the first non-finite loss and scores the weights it left.

    Fails if training went on past a non-finite loss (the ``break`` on ``torch.isfinite(loss)``
    removed: every batch of the epoch runs), if it raised or returned NaN, or if the accuracy
    were not that of the trained model.
    """
    data = load_dataset("digits", (1, 8, 8))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    finite: list[bool] = []  # per training forward pass: are the logits (so the loss) finite?

    def record(module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        if module.training:
            finite.append(bool(torch.isfinite(out).all()))

    net.register_forward_hook(record)
    acc = train_and_evaluate(net, data, epochs=1, batch_size=64, optimizer="adam", lr=1e30)
    batches = -(-data.x_train.shape[0] // 64)  # 1437 training images: 23 batches
    assert finite[-1] is False and all(finite[:-1]) and len(finite) < batches, finite
    assert acc == evaluate(net, data)
    # The weights are NaN, so every logit is NaN and argmax picks class 0 for every image: the
    # accuracy is the share of zeros in the stratified validation split, 36 of 360 = 0.1.
    assert acc == int((data.y_val == 0).sum()) / data.y_val.shape[0] == 36 / 360


class _Silent(nn.Module):
    """Equal logits for every class whatever the input or the weight: it never learns."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 10) * self.w


def test_tse_of_a_net_that_never_learns_is_one_over_the_classes() -> None:
    # Equal logits over 10 classes: every step's cross-entropy is ln 10, so the geometric mean
    # probability of the right label, exp(-mean loss), is exactly 1/10.
    data = load_dataset("digits", (1, 8, 8))
    tse = training_speed(_Silent(), data, epochs=2, batch_size=64)
    assert tse == pytest.approx(0.1, rel=1e-6)


def test_tse_trains_exactly_as_train_and_ranks_a_learner_above_a_silent_net() -> None:
    """Same optimizer, schedule and batches as ``train``: the weights end bit-identical.

    Fails if TSE drew its batches or its learning rate differently from ``train_and_evaluate``
    (then a TSE ranking would not predict what training does), or if it returned the loss
    itself (lower for the learner) instead of a score that is higher for the better learner.
    """
    data = load_dataset("digits", (1, 8, 8), max_train_samples=500)

    def net() -> nn.Module:
        torch.manual_seed(5)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    a, b = net(), net()
    kw = {"epochs": 2, "batch_size": 32, "seed": 4, "lr": 0.1}
    tse = training_speed(a, data, **kw)
    train_and_evaluate(b, data, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert 0.1 < tse < 1.0  # better than the silent net's 1/10, short of a perfect fit
    assert tse > training_speed(_Silent(), data, **kw)


def test_tse_of_a_diverging_run_is_the_worst_score() -> None:
    data = load_dataset("digits", (1, 8, 8))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert training_speed(net, data, epochs=1, batch_size=64, optimizer="adam", lr=1e30) == 0.0


def test_proxy_rank_with_tse_trains_its_reference_once_and_votes_with_params() -> None:
    """``tse`` in ``proxies``: the reference archs are trained when the estimator is made."""
    calls: list[int] = []

    def counted(arch: Toy) -> nn.Module:
        calls.append(arch.width)
        return toy_net(arch)

    cfg = EstimatorConfig(kind="proxy_rank", proxies=("tse",), epochs=1, batch_size=32,
                          max_train_samples=128, reference_size=3, seed=2)  # fmt: skip
    est = make_estimator(cfg, SHAPE, 10, build=counted, reference=[Toy(2), Toy(4), Toy(8)])
    assert calls == [2, 4, 8]
    score = est.score(Toy(6))
    assert calls == [2, 4, 8, 6] and set(est.last_values) == {"tse"}
    ref = est.reference["tse"]
    expected = (sum(r < est.last_values["tse"] for r in ref) + 0.5) / (len(ref) + 1)
    assert score == expected and 0.0 < est.last_values["tse"] <= 1.0


# ---------------------------------------------------------------- config


def test_config_defaults_and_round_trip() -> None:
    cfg = EstimatorConfig.from_dict({"kind": "train", "epochs": 2, "lr": 1, "proxies": ["snip"]})
    assert cfg.lr == 1.0 and cfg.proxies == ("snip",)
    assert EstimatorConfig.from_dict(cfg.to_dict()) == cfg
    assert EstimatorConfig().dataset == "digits"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"knd": "snip"}, r"unknown estimator key 'knd'='snip'.*known keys"),
        ({"kind": "jacov"}, r"estimator.kind='jacov' must be one of"),
        ({"dataset": "mnist"}, r"estimator.dataset='mnist'"),
        ({"batch_size": 0}, r"estimator.batch_size=0 must be an integer >= 1"),
        ({"epochs": True}, r"estimator.epochs=True"),
        ({"epochs": 2.5}, r"estimator.epochs=2.5"),
        ({"seed": -1}, r"estimator.seed=-1"),
        ({"lr": 0}, r"estimator.lr=0.0 must be a number in \(0.0"),
        ({"lr": "fast"}, r"estimator.lr='fast'"),
        ({"momentum": 1.0}, r"estimator.momentum=1.0"),
        ({"val_fraction": 1}, r"estimator.val_fraction=1.0"),
        ({"optimizer": "lbfgs"}, r"estimator.optimizer='lbfgs'"),
        ({"proxies": ["snip", "jacov"]}, r"estimator.proxies='jacov'"),
        ({"proxies": "snip"}, r"estimator.proxies='snip' must be a list"),
        ({"proxies": []}, r"estimator.proxies=\[\] must not be empty"),
        ({"proxies": ["snip", "snip"]}, r"duplicates"),
        ({"max_train_samples": 0}, r"estimator.max_train_samples=0"),
        ({"data_dir": 3}, r"estimator.data_dir=3"),
    ],
)
def test_config_errors_name_key_and_value(table: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EstimatorConfig.from_dict(table)


@settings(max_examples=50, deadline=None)
@given(
    kind=st.sampled_from(ESTIMATOR_KINDS),
    batch=st.integers(1, 4096),
    lr=st.floats(1e-6, 10.0),
    proxies=st.lists(st.sampled_from(PROXY_KINDS), min_size=1, max_size=4, unique=True),
    cap=st.none() | st.integers(1, 10**6),
)
def test_config_round_trips(kind: str, batch: int, lr: float, proxies: list, cap: int) -> None:
    cfg = EstimatorConfig(
        kind=kind, batch_size=batch, lr=lr, proxies=tuple(proxies), max_train_samples=cap
    )
    assert EstimatorConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------- data


def test_digits_split_is_stratified_seeded_normalised_and_cached() -> None:
    d = load_dataset("digits", (3, 32, 32))
    assert d.x_train.shape == (1437, 3, 32, 32) and d.x_val.shape == (360, 3, 32, 32)
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32)
    per_class = torch.bincount(d.y_val).tolist()  # 360 over 10 classes of 174..183 images
    assert len(per_class) == 10 and min(per_class) >= 34 and max(per_class) <= 38
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 2])  # grey repeated over channels
    assert load_dataset("digits", (3, 32, 32)) is d
    other = load_dataset("digits", (3, 32, 32), split_seed=1)
    assert not torch.equal(other.y_val, d.y_val)


def test_digits_hard_shapes_normalisation_caps_and_determinism() -> None:
    d = load_dataset("digits_hard", (3, 16, 16))
    # 1,797 originals, val_fraction 0.2: 1,437 train x 2 copies, 360 val x 3 copies
    assert d.x_train.shape == (1437 * DIGITS_HARD_TRAIN_COPIES, 3, 16, 16)
    assert d.x_val.shape == (360 * DIGITS_HARD_VAL_COPIES, 3, 16, 16)
    assert d.name == "digits_hard" and d.num_classes == 10
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(d.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 2])  # grey repeated over channels
    # every val original appears DIGITS_HARD_VAL_COPIES times: 36 originals of class 0
    assert int((d.y_val == 0).sum()) == 36 * DIGITS_HARD_VAL_COPIES
    data_module._load_cached.cache_clear()
    again = load_dataset("digits_hard", (3, 16, 16))
    assert again is not d and torch.equal(again.x_train, d.x_train)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_val, d.y_val)
    other = load_dataset("digits_hard", (3, 16, 16), split_seed=1)
    assert not torch.equal(other.x_val, d.x_val)
    capped = load_dataset("digits_hard", (1, 16, 16), max_train_samples=300, max_val_samples=50)
    assert capped.x_train.shape == (300, 1, 16, 16) and capped.x_val.shape == (50, 1, 16, 16)


def test_digits_hard_train_and_val_originals_are_disjoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No original digit has copies on both sides (all 1,797 originals are distinct)."""
    seen: list[torch.Tensor] = []
    real = data_module._distorted_copies

    def record(images: torch.Tensor, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(images.reshape(images.shape[0], -1))
        return real(images, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(data_module, "_distorted_copies", record)
    data_module._load_cached.cache_clear()
    load_dataset("digits_hard", (1, 8, 8), split_seed=3)
    data_module._load_cached.cache_clear()
    train, val = seen
    assert train.shape[0] + val.shape[0] == 1797
    same = (train[:, None, :] == val[None, :, :]).all(dim=2)
    assert not bool(same.any())


def test_digits_hard_distortions_change_the_images() -> None:
    """Copies of one original differ from each other and from the plain resized original."""
    images = torch.rand(4, 1, 8, 8)
    labels = torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    out, y = data_module._distorted_copies(images, labels, 2, (16, 16), gen)
    assert out.shape == (8, 1, 16, 16) and y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    plain = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear")
    assert float((out[:4] - out[4:]).abs().mean()) > 0.1  # two copies of the same digits
    assert float((out[:4] - plain).abs().mean()) > 0.1
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(data_module._distorted_copies(images, labels, 2, (16, 16), gen)[0], out)


def test_digits_hard_copies_keep_the_digit_recognisable() -> None:
    """A distorted copy correlates with its own original more than with other digits."""
    d = load_dataset("digits", (1, 16, 16), max_val_samples=100)
    imgs = (d.x_val - d.x_val.amin()) / (d.x_val.amax() - d.x_val.amin())
    gen = torch.Generator().manual_seed(0)
    out, _ = data_module._distorted_copies(imgs, d.y_val, 1, (16, 16), gen)
    a = (out - out.mean(dim=(1, 2, 3), keepdim=True)).reshape(100, -1)
    b = (imgs - imgs.mean(dim=(1, 2, 3), keepdim=True)).reshape(100, -1)
    corr = (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T
    own = corr.diagonal().mean()
    others = (corr.sum() - corr.diagonal().sum()) / (100 * 99)
    assert float(own) > float(others) + 0.1


def _write_cifar(folder: Path, per_batch: int = 4) -> np.ndarray:
    """Synthetic CIFAR-10 python batches; image i of each batch is pure red when i % 2 == 0."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels_all = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        data[0::2, :1024] = 255  # red plane (rows store R, G, B planes of 32x32)
        data[1::2, 2048:] = 255  # blue plane
        labels = rng.integers(0, 10, per_batch).tolist()
        labels_all.append(labels)
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return np.asarray(labels_all)


def test_cifar10_loader_reads_the_python_pickle_format(tmp_path: Path) -> None:
    labels = _write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", (3, 32, 32), data_dir=tmp_path)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_val.shape == (4, 3, 32, 32)
    assert d.y_train.tolist() == labels[:5].ravel().tolist()
    assert d.y_val.tolist() == labels[5].tolist()
    assert d.class_names[:2] == ("c0", "c1")
    red, blue = d.x_train[0], d.x_train[1]
    assert red[0].mean() > red[2].mean() and blue[2].mean() > blue[0].mean()
    # the folder itself may be given; resizing and grey conversion follow input_shape
    small = load_dataset("cifar10", (1, 16, 16), data_dir=tmp_path / "cifar-10-batches-py")
    assert small.x_train.shape == (20, 1, 16, 16)
    capped = load_dataset("cifar10", (3, 32, 32), data_dir=tmp_path, max_train_samples=7)
    assert capped.x_train.shape[0] == 7
    with pytest.raises(ValueError, match="cannot map 3 image channels to input_shape channels C=2"):
        load_dataset("cifar10", (2, 32, 32), data_dir=tmp_path)


def test_missing_cifar_folder_says_where_to_put_it(tmp_path: Path) -> None:
    where = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", (3, 32, 32), data_dir=where)
    text = str(err.value)
    assert str(where) in text and "does not exist" in text
    assert "cifar-10-batches-py" in text and "cs.toronto.edu/~kriz/cifar.html" in text
    with pytest.raises(DatasetNotFoundError, match="data_dir is not set"):
        make_estimator(EstimatorConfig(kind="snip", dataset="cifar10"), SHAPE, 10, build=toy_net)


def test_a_corrupt_cifar_batch_is_named(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_dataset("cifar10", (3, 32, 32), data_dir=tmp_path)


def _write_images(root: Path, per_class: int = 3) -> None:
    from PIL import Image

    for cls, value in (("cat", 0), ("dog", 255)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            suffix = ".png" if i % 2 == 0 else ".jpg"
            Image.new("RGB", (10, 12), (value, value, value)).save(root / cls / f"{i}{suffix}")


def test_imagefolder_loader_splits_classes(tmp_path: Path) -> None:
    _write_images(tmp_path, per_class=5)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    d = load_dataset("imagefolder", (1, 8, 8), data_dir=tmp_path, val_fraction=0.2)
    assert d.class_names == ("cat", "dog") and d.num_classes == 2
    assert d.x_train.shape == (8, 1, 8, 8) and d.x_val.shape == (2, 1, 8, 8)
    assert sorted(d.y_val.tolist()) == [0, 1]  # stratified
    dark = d.x_train[d.y_train == 0].mean()
    assert dark < d.x_train[d.y_train == 1].mean()


def test_imagefolder_with_train_and_val_folders(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", per_class=3)
    _write_images(tmp_path / "val", per_class=1)
    d = load_dataset("imagefolder", (3, 8, 8), data_dir=tmp_path)
    assert d.x_train.shape == (6, 3, 8, 8) and d.y_val.tolist() == [0, 1]


def test_imagefolder_bad_image_names_the_file(tmp_path: Path) -> None:
    _write_images(tmp_path)
    bad = tmp_path / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_dataset("imagefolder", (3, 8, 8), data_dir=tmp_path, val_fraction=0.5)


def test_imagefolder_missing_or_empty_says_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"DIR/<class_name>/\*\.png"):
        load_dataset("imagefolder", (3, 8, 8), data_dir=tmp_path / "none")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetNotFoundError, match="has no images"):
        load_dataset("imagefolder", (3, 8, 8), data_dir=tmp_path)


def test_dataset_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="dataset='mnist'"):
        load_dataset("mnist", (1, 8, 8))
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8\)"):
        load_dataset("digits", (8, 8))
    assert isinstance(load_dataset("digits", (1, 8, 8)), Dataset)


def test_warnings_are_not_raised_for_healthy_nets() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProxyWarning)
        estimator("proxy_rank").score(Toy(8))


# ---------------------------------------------------------------- with the real search space

SPACE = Path(__file__).resolve().parents[1] / "searchspace" / "spaces" / "cifar.toml"


def test_sample_reference_is_seeded_and_a_prefix_of_longer_samples() -> None:
    import searchspace
    from search._estimators import sample_reference

    space = searchspace.load_space(SPACE)
    five = sample_reference(space, 5, seed=7)
    assert five == sample_reference(space, 5, seed=7)
    assert sample_reference(space, 8, seed=7)[:5] == five
    assert sample_reference(space, 5, seed=8) != five


def test_cost_features_are_the_exact_counts_and_vote_for_bigger_archs() -> None:
    import searchspace
    from search._estimators import sample_reference

    space = searchspace.load_space(SPACE)
    archs = sample_reference(space, 3, seed=4)
    for a in archs:
        # differential: costmodel's parameter count equals the built PyTorch module's
        net = searchspace.build(a)
        features = cost_features(a)
        assert features["params"] == sum(p.numel() for p in net.parameters())
        assert features["macs"] > features["params"] > 0
    cfg = EstimatorConfig(kind="proxy_rank", proxies=("params", "macs"), reference_size=2)
    assert EstimatorConfig.from_dict(cfg.to_dict()) == cfg
    shape, classes = archs[0].input_shape, archs[0].num_classes
    est = make_estimator(cfg, shape, classes, reference=archs[:2])
    small, _, big = sorted(archs, key=lambda a: cost_features(a)["params"])
    assert est.proxy_values(big, ("params",)) == {"params": cost_features(big)["params"]}
    # more parameters rank higher: the vote treats cost features as evidence for accuracy
    by_params = EstimatorConfig(kind="proxy_rank", proxies=("params",), reference_size=2)
    vote = make_estimator(by_params, shape, classes, reference=archs[:2])
    assert vote.score(big) > vote.score(small)


def test_cost_features_need_a_lowerable_architecture() -> None:
    cfg = EstimatorConfig(kind="proxy_rank", proxies=("synflow", "params"), batch_size=8)
    est = make_estimator(cfg, SHAPE, 10, build=toy_net)
    with pytest.raises(ValueError, match=r"need an architecture with lower\(batch\).*Toy"):
        est.score(Toy(4))
    with pytest.raises(ValueError, match=r"estimator.proxies='flops' must be one of"):
        EstimatorConfig(kind="proxy_rank", proxies=("flops",))
    assert set(COST_FEATURES) == {"params", "macs"}


@pytest.mark.slow
def test_proxies_on_sampled_cifar_architectures() -> None:
    import searchspace
    from search._estimators import sample_reference

    space = searchspace.load_space(SPACE)
    archs = sample_reference(space, 2, seed=11)
    shape, classes = archs[0].input_shape, archs[0].num_classes
    cfg = EstimatorConfig(kind="proxy_rank", batch_size=8, reference_size=2, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProxyWarning)
        est = make_estimator(cfg, shape, classes, space=space)  # builds with searchspace.build
        scores = [est.score(a) for a in archs]
    assert all(0.0 < s < 1.0 for s in scores)
    assert set(est.last_values) == set(PROXY_KINDS)
    assert all(math.isfinite(v) and v > 0.0 for v in est.last_values.values())
    again = make_estimator(cfg, shape, classes, space=space)
    assert [again.score(a) for a in archs] == scores
