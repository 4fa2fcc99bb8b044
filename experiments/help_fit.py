"""Fitted profiles against HELP's GPU and CPU measurements: zero-shot priors and 10-network fits.

Reads HELP's tables (Lee et al., NeurIPS 2021: NAS-Bench-201 cells at 3x32x32
and once-for-all MobileNetV3 subnets, eager PyTorch, ms per forward pass of
the batch) and reports, per (space, GPU, batch): Spearman, MdAPE and the share
of predictions within +-10% / +-25%, for

1. zero-shot: the priors. Per NAS-Bench-201 GPU, ``fit_networks`` on a fixed
   half of the networks (even ``arch_idx``; 40 of them at batch 1 and 256)
   from the datasheet profile; a GPU without NAS-Bench-201 rows (V100) gets
   the median host costs of the others. Then, per OFA GPU, the depthwise conv
   efficiencies NAS-Bench-201 cannot identify (``OFA_PRIOR_FREE``) on 40 OFA
   subnets with even ``arch_idx`` at batch 64, costed as OFA's code runs them
   (``eager_layers``); GPUs on the same die take those values (``SAME_DIE``), the
   other built-in GPUs their generation's median or the Volta lineage's
   (``TRANSFER_GPUS``, checked by experiments/depthwise_transfer.py).
   ``--nb201-priors-only`` skips this. Reported ONLY on the held-out half, odd
   ``arch_idx``, of both spaces.
2. fitted: ``fit_networks`` on 10 random networks of that GPU and batch from
   the prior, predicting the rest of the sample; repeated over ``--draws``
   draws, the median of each statistic reported.
3. baselines: Spearman of FLOPs (2 x MACs) and of MAC bytes (fp32) alone.
4. cross-space: 10 NAS-Bench-201 networks fitted, OFA subnets predicted, on
   the same GPU and batch.
5. HELP's four Xeons (NAS-Bench-201, batch 1): each one's prior fitted like a
   GPU's, from the calibrated Xeon's values (``CPU_PRIOR``) on its datasheet;
   the same statistics, plus an unseen CPU (the other three's median costs and
   efficiencies on its datasheet), alone and fitted on 10 networks.

    python experiments/help_fit.py                    # the recorded run
    python experiments/help_fit.py --sample 40 --draws 2 --out /tmp/hf   # smoke run
    python experiments/help_fit.py --write-profiles   # only fit the priors and write them
                                                      # into hw_profiles/data/*.toml
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scipy import stats

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import costmodel  # noqa: E402
import hw_profiles  # noqa: E402
from costmodel._fit import (  # noqa: E402
    HEAVY_HOST_CLASSES,
    SPLIT_GROUPS,
    MeasuredNetwork,
    fit_networks,
    predict_networks,
)
from hw_profiles import HardwareProfile  # noqa: E402
from searchspace import NB201Net, OFANet  # noqa: E402

DEFAULT_DATA = Path("/work/shared/data/latency")
DEFAULT_OUT = _ROOT / "experiments" / "results" / "help_fit"
MS = 1e-3
PRIOR_NETS = 40  # per GPU, from the even half, at batch 1 and at 256
PRIOR_SEED = 201
FIT_NETS = 10
# NAS-Bench-201's 1x1 convs (16-64 channels) are memory-bound: its rows identify their
# memory efficiency, not their compute side, so the two are separate parameters and the
# compute side stays near the published value where no row binds on it.
NB201_SPLIT = ("pointwise_conv",)
# NAS-Bench-201 has no depthwise conv: its compute and memory efficiencies are fitted,
# everything else held, on OFA networks of the development half (even arch_idx) at batch
# 64, where the device chain dominates. OFA cannot tell a 1x1 conv's compute from a
# depthwise conv's memory time (the expand ratio scales both alike; only the kernel size
# tells depthwise compute apart), so the 1x1 compute side stays as NAS-Bench-201 left it.
OFA_PRIOR_NETS = 40
OFA_PRIOR_BATCH = 64
OFA_PRIOR_FREE = ("compute_efficiency_depthwise_conv", "efficiency_depthwise_conv")
# GPUs on the die of an OFA GPU run the same depthwise kernels, so they take its
# OFA-fitted values instead of the published Hopper ones. Chosen on the development
# half: the Turing pair's (2080 Ti, Titan RTX: TU102) values predict the other card's
# OFA networks at batch 32 / 64 within 2.7-6.3% against 5.0-8.4% with the published ones.
SAME_DIE = {"gtx1080ti": "titan-xp", "titan-x-pascal": "titan-xp"}  # GP102
# The GPU generation (architecture) of each built-in GPU profile.
GENERATION = {
    "gtx1080ti": "pascal",
    "titan-x-pascal": "pascal",
    "titan-xp": "pascal",
    "v100": "volta",
    "rtx2080ti": "turing",
    "titan-rtx": "turing",
    "t4": "turing",
    "a100": "ampere",
    "rtx3090": "ampere",
    "jetson-orin": "ampere",
    "l4": "ada",
    "rtx4090": "ada",
    "h100": "hopper",
    "h200": "hopper",
}
# Volta's SM design (unified L1 / shared memory, independent thread scheduling) that
# Turing, Ampere, Ada and Hopper build on; Pascal predates it.
VOLTA_LINEAGE = frozenset({"volta", "turing", "ampere", "ada", "hopper"})
NB201_GPUS = {
    "1080ti": "gtx1080ti",
    "2080ti": "rtx2080ti",
    "titan_rtx": "titan-rtx",
    "titanx": "titan-x-pascal",
    "titanxp": "titan-xp",
}
OFA_GPUS = {"2080ti": "rtx2080ti", "titan_rtx": "titan-rtx", "titan_xp": "titan-xp", "v100": "v100"}
# HELP's CPUs timed NAS-Bench-201 only, one column each without a batch (taken as 1).
NB201_CPUS = {
    "gold_6226": "xeon-gold-6226",
    "gold_6240": "xeon-gold-6240",
    "silver_4114": "xeon-silver-4114",
    "silver_4210r": "xeon-silver-4210r",
}
# A CPU fit starts from what calibration measured on an Intel Xeon (AVX-512) with PyTorch
# on one thread: its eager costs per class and fp32 efficiencies, on the part's datasheet.
CPU_PRIOR = _ROOT / "experiments" / "results" / "calibrated_cpu.toml"
HOST_KEYS = ("host_other_s", "host_conv_extra_s", "kernel_overhead_s")


@dataclass(frozen=True)
class Net:
    net: NB201Net | OFANet
    row: dict[str, str]

    def measured(self, device: str, batch: int) -> float:
        column = device if device in NB201_CPUS and batch == 1 else f"{device}_{batch}"
        return float(self.row[column]) * MS


_LOWERED: dict[tuple[NB201Net | OFANet, int], MeasuredNetwork] = {}


def measured_network(net: Net, gpu: str, batch: int) -> MeasuredNetwork:
    key = (net.net, batch)
    if key not in _LOWERED:
        _LOWERED[key] = MeasuredNetwork(
            net.net.eager_layers(batch), 1.0, extra_kernels=net.net.eager_extra_kernels()
        )
    m = _LOWERED[key]
    return MeasuredNetwork(m.specs, net.measured(gpu, batch), extra_kernels=m.extra_kernels)


def read(path: Path, parse: Callable[[dict[str, str]], NB201Net | OFANet]) -> list[Net]:
    with path.open(newline="") as f:
        return [Net(parse(r), r) for r in csv.DictReader(f)]


def agreement(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    errors = [abs(p / m - 1.0) for p, m in zip(pred, meas, strict=True)]
    return {
        "spearman": float(stats.spearmanr(pred, meas).statistic),
        "mdape": statistics.median(errors),
        "within_10": sum(e <= 0.10 for e in errors) / len(errors),
        "within_25": sum(e <= 0.25 for e in errors) / len(errors),
        "median_ratio": statistics.median(p / m for p, m in zip(pred, meas, strict=True)),
    }


def is_dev(net: Net) -> bool:
    """The development half (even ``arch_idx``): the only rows any fit or choice sees."""
    return int(net.row["arch_idx"]) % 2 == 0


# Every built-in GPU profile's values before any fit: the fp32 efficiencies published in
# its efficiency comment (PyTorch 2.11 + cuDNN on a Hopper-class GPU) and eager costs of
# 11 us per op on the host and 3 us per kernel on the device. Fits start from these, not
# from the shipped (already fitted) files, so --write-profiles writes the same TOMLs
# however often it runs.
DATASHEET_CONV_LINEAR = MappingProxyType(
    {
        "dense_conv": 0.65,
        "pointwise_conv": 0.58,
        "group_conv": 0.33,
        "depthwise_conv": 0.18,
        "linear": 0.76,
    }
)
DATASHEET_STREAMING = MappingProxyType(
    {
        "batchnorm": 0.59,
        "activation": 0.85,
        "elementwise": 0.85,
        "pooling": 0.6,
    }
)
DATASHEET_EAGER = hw_profiles.RuntimeParams(kernel_overhead_s=3e-6, host_overhead_s=11e-6)


def datasheet_prior(hw: HardwareProfile) -> HardwareProfile:
    """``hw`` with what --write-profiles fits (eager costs, fp32 efficiencies) as published."""
    return dataclasses.replace(
        hw,
        runtimes=MappingProxyType({**hw.runtimes, "eager": DATASHEET_EAGER}),
        compute_efficiency=MappingProxyType({**hw.compute_efficiency, **DATASHEET_CONV_LINEAR}),
        memory_efficiency=MappingProxyType(
            {**hw.memory_efficiency, **DATASHEET_CONV_LINEAR, **DATASHEET_STREAMING}
        ),
    )


def cpu_prior(hw: HardwareProfile) -> HardwareProfile:
    """``hw`` with what --write-profiles fits (eager costs, fp32 efficiencies) at CPU_PRIOR's."""
    cal = hw_profiles.load_fresh(CPU_PRIOR)
    return dataclasses.replace(
        hw,
        runtimes=MappingProxyType({**hw.runtimes, "eager": cal.runtime("eager")}),
        compute_efficiency=cal.compute_efficiency,
        memory_efficiency=cal.memory_efficiency,
    )


def fit_devices(
    nb201: list[Net],
    devices: dict[str, str],
    batches: tuple[int, ...],
    start: Callable[[HardwareProfile], HardwareProfile],
    split: tuple[str, ...] = (),
) -> tuple[dict[str, HardwareProfile], dict[str, Any]]:
    """Per device (HELP column -> profile): ``fit_networks`` from ``start(profile)`` on
    PRIOR_NETS development-half NAS-Bench-201 networks at ``batches``."""
    picked = random.Random(PRIOR_SEED).sample([n for n in nb201 if is_dev(n)], PRIOR_NETS)
    priors: dict[str, HardwareProfile] = {}
    record: dict[str, Any] = {}
    for column, name in devices.items():
        rows = [measured_network(n, column, b) for n in picked for b in batches]
        fit = fit_networks(start(hw_profiles.load(name)), rows, folds=2, split=split)
        priors[name] = fit.profile
        record[name] = {
            "gpu": column,
            "parameters": fit.parameters,
            "fit_mdape": fit.fit_mdape,
            "arch_idx": sorted(int(n.row["arch_idx"]) for n in picked),
        }
    return priors, record


def fit_cpu_priors(nb201: list[Net]) -> tuple[dict[str, HardwareProfile], dict[str, Any]]:
    """Per HELP CPU: a fit on the same PRIOR_NETS even-arch_idx networks, batch 1."""
    return fit_devices(nb201, NB201_CPUS, (1,), cpu_prior)


def others_median(hw: HardwareProfile, fitted: list[HardwareProfile]) -> HardwareProfile:
    """``hw``'s ceilings with the median eager costs and fp32 efficiencies of ``fitted``.

    What a CPU no fit has seen gets from the others: the fitted values are per
    call and per fraction of the roofline, so they carry over; the peak and the
    bandwidth stay this part's datasheet values.
    """

    def med(tables: list[Any]) -> MappingProxyType[str, float]:
        return MappingProxyType({k: statistics.median(t[k] for t in tables) for k in tables[0]})

    rts = [f.runtime("eager") for f in fitted]
    eager = hw_profiles.RuntimeParams(
        statistics.median(r.kernel_overhead_s for r in rts),
        statistics.median(r.host_overhead_s for r in rts),
        med([r.class_host_overhead_s for r in rts]),
    )
    return dataclasses.replace(
        hw,
        runtimes=MappingProxyType({**hw.runtimes, "eager": eager}),
        compute_efficiency=med([f.compute_efficiency for f in fitted]),
        memory_efficiency=med([f.memory_efficiency for f in fitted]),
    )


def fit_priors(
    nb201: list[Net], ofa: list[Net] | None = None
) -> tuple[dict[str, HardwareProfile], dict[str, Any]]:
    """Per NB201 GPU: a fit on PRIOR_NETS even-arch_idx networks at batch 1 and 256.

    The V100 (no NB201 rows) takes the median host costs. With ``ofa``, each OFA
    GPU's conv efficiencies NB201 cannot identify are then fitted on
    OFA_PRIOR_NETS development-half OFA networks (``fit_ofa_convs``).
    """
    priors, record = fit_devices(nb201, NB201_GPUS, (1, 256), datasheet_prior, NB201_SPLIT)
    host = {k: statistics.median(r["parameters"][k] for r in record.values()) for k in HOST_KEYS}
    record["median_host"] = host
    priors["v100"] = with_host(datasheet_prior(hw_profiles.load("v100")), host)
    if ofa is not None:
        record["ofa_convs"] = fit_ofa_convs(priors, ofa)
        for name, source in SAME_DIE.items():
            priors[name] = with_ofa_convs(priors[name], priors[source])
    return priors, record


def with_depthwise(hw: HardwareProfile, values: tuple[float, float]) -> HardwareProfile:
    """``hw`` with fp32 depthwise conv efficiencies ``values`` (compute, memory)."""
    return dataclasses.replace(
        hw,
        compute_efficiency=MappingProxyType({**hw.compute_efficiency, "depthwise_conv": values[0]}),
        memory_efficiency=MappingProxyType({**hw.memory_efficiency, "depthwise_conv": values[1]}),
    )


def with_ofa_convs(hw: HardwareProfile, source: HardwareProfile) -> HardwareProfile:
    """``hw`` with ``source``'s fp32 efficiencies of OFA_PRIOR_FREE (see SAME_DIE)."""
    return with_depthwise(hw, (source.compute_efficiency["depthwise_conv"],
                               source.memory_efficiency["depthwise_conv"]))  # fmt: skip


def fit_ofa_convs(priors: dict[str, HardwareProfile], ofa: list[Net]) -> dict[str, Any]:
    """Refit each OFA GPU's prior: OFA_PRIOR_FREE only, on development-half OFA networks."""
    picked = random.Random(PRIOR_SEED).sample([n for n in ofa if is_dev(n)], OFA_PRIOR_NETS)
    record: dict[str, Any] = {}
    for gpu, name in OFA_GPUS.items():
        rows = [measured_network(n, gpu, OFA_PRIOR_BATCH) for n in picked]
        fit = fit_networks(priors[name], rows, folds=2, free=OFA_PRIOR_FREE, split=SPLIT_GROUPS)
        priors[name] = fit.profile
        record[name] = {
            "gpu": gpu,
            "batch": OFA_PRIOR_BATCH,
            "parameters": {k: fit.parameters[k] for k in OFA_PRIOR_FREE},
            "fit_mdape": fit.fit_mdape,
            "arch_idx": sorted(int(n.row["arch_idx"]) for n in picked),
        }
    return record


# The eager block with the comment above it and its class table: rewriting it is idempotent.
EAGER_BLOCK = re.compile(
    r"(?:# [^\n]*\n)*\[runtime\.eager\]\n(?:[a-z_]+ = [^\n]*\n)+"
    r"(?:\[runtime\.eager\.class_host_overhead_s\][^\n]*\n(?:[a-z_]+ = [^\n]*\n)+)?"
)
PROFILE_DIR = _ROOT / "hw_profiles" / "data"
OTHER_GPUS = ("a100", "h100", "h200", "l4", "rtx3090", "rtx4090", "t4", "v100")


def _eager_block(eager: hw_profiles.RuntimeParams, why: str) -> str:
    extra = eager.class_host_overhead_s
    what = (
        "a conv / linear call" if set(extra) <= HEAVY_HOST_CLASSES else "a call, per kernel class"
    )
    lines = [f"# {line}" for line in why.splitlines()]
    lines += [
        "[runtime.eager]",
        f"kernel_overhead_s = {eager.kernel_overhead_s:.3g}",
        f"host_overhead_s = {eager.host_overhead_s:.3g}",
        f"[runtime.eager.class_host_overhead_s]   # extra host cost of {what}",
    ]
    lines += [f"{c} = {extra[c]:.3g}" for c in sorted(extra)]
    return "\n".join(lines) + "\n"


def _section(text: str, table: str) -> tuple[int, int]:
    """Where the body of the [table] section is (its precision subtables not included)."""
    head = f"\n[{table}]\n"
    start = text.index(head) + len(head)
    return start, text.find("\n[", start)


def _set_fp32_efficiencies(text: str, table: str, values: dict[str, float]) -> str:
    """Rewrite ``cls = value`` lines of the [table] section (not its precision subtables)."""
    start, end = _section(text, table)
    section = text[start:end]
    for cls, v in values.items():
        section = re.sub(rf"(?m)^{cls} = [0-9.e+-]+", f"{cls} = {v:.3g}", section)
    return text[:start] + section + text[end:]


# GPUs HELP timed no OFA on, outside the dies of SAME_DIE: each takes the depthwise
# efficiencies of its generation's OFA-fitted cards (the T4 is Turing), else the median
# over the Volta-lineage generations fitted. Chosen on the development half
# (experiments/depthwise_transfer.py --half dev): for each OFA GPU of that lineage, the
# median of the lineage's fitted values with the card left out predicts its batch-32 / 64
# networks within 2.3-6.2% MdAPE, against 11.5-14.1% with the published values; Pascal's
# values carry to none of them.
TRANSFER_GPUS = ("a100", "h100", "h200", "jetson-orin", "l4", "rtx3090", "rtx4090", "t4")
# The published efficiencies were measured on a Hopper-class GPU. At equal compute and
# memory efficiency every fp32 depthwise conv is memory-bound there (ridge 67e12 / 4.8e12
# = 14 flop/byte; a 7x7 depthwise conv does 12.25), so the published 0.18 is Hopper's
# measured memory efficiency and stays; only its compute side is carried over.
MEASURED_DEPTHWISE_MEMORY = MappingProxyType({"hopper": DATASHEET_CONV_LINEAR["depthwise_conv"]})


def generation_depthwise(fitted: dict[str, HardwareProfile]) -> dict[str, tuple[float, float]]:
    """Per generation in ``fitted``, the median of its cards' fp32 depthwise (compute,
    memory) efficiencies."""
    out = {}
    for gen in sorted({GENERATION[name] for name in fitted}):
        vals = [hw.efficiency("depthwise_conv", "fp32") for name, hw in fitted.items()
                if GENERATION[name] == gen]  # fmt: skip
        out[gen] = (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
    return out


def transferred_depthwise(name: str, fitted: dict[str, HardwareProfile]) -> tuple[float, float]:
    """TRANSFER_GPUS' rule: GPU ``name``'s fp32 depthwise (compute, memory) efficiencies
    from the OFA-fitted profiles ``fitted``."""
    gen = GENERATION[name]
    gens = generation_depthwise(fitted)
    if gen in gens:
        compute, memory = gens[gen]
    elif gen in VOLTA_LINEAGE:
        lineage = [v for g, v in gens.items() if g in VOLTA_LINEAGE]
        if not lineage:
            raise ValueError(f"no Volta-lineage GPU among the fitted ones: {sorted(fitted)}")
        compute = statistics.median(v[0] for v in lineage)
        memory = statistics.median(v[1] for v in lineage)
    else:
        raise ValueError(f"{name}: generation {gen!r} has no rule for depthwise efficiencies")
    return compute, MEASURED_DEPTHWISE_MEMORY.get(gen, memory)


def _transfer_comment(name: str, fitted_generations: set[str]) -> tuple[str, str]:
    gen = GENERATION[name]
    if gen in fitted_generations:
        carried = f"median of the {gen.capitalize()} GPUs fitted to HELP's OFA timings"
    else:
        carried = "median of the Volta / Turing fits to HELP's OFA timings"
    memory = (
        "published, measured on a Hopper-class GPU" if gen in MEASURED_DEPTHWISE_MEMORY else carried
    )
    return f"{carried} (help_fit.py)", f"{memory} (help_fit.py)"


def _set_depthwise(text: str, values: tuple[float, float], why: tuple[str, str]) -> str:
    """Rewrite the fp32 depthwise line of [compute_efficiency] and [memory_efficiency],
    a comment saying where the value comes from included."""
    for table, v, note in zip(("compute_efficiency", "memory_efficiency"), values, why,
                              strict=True):  # fmt: skip
        start, end = _section(text, table)
        section = re.sub(
            r"(?m)^depthwise_conv = .*$", f"depthwise_conv = {v:.3g}   # {note}", text[start:end]
        )
        text = text[:start] + section + text[end:]
    return text


def write_profiles(
    record: dict[str, Any],
    priors: dict[str, HardwareProfile],
    sha: str,
    profile_dir: Path = PROFILE_DIR,
) -> None:
    """The priors into the built-in TOMLs: eager costs, fp32 efficiencies, a [fit] table;
    TRANSFER_GPUS' depthwise efficiencies from the OFA fits."""
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    ofa_fit = record.get("ofa_convs", {})
    for name, r in record.items():
        if name not in NB201_GPUS.values():
            continue
        path = profile_dir / f"{name}.toml"
        why = (
            f"Eager costs and fp32 efficiencies fitted ({date}, experiments/help_fit.py "
            f"--write-profiles) to HELP's eager PyTorch\nlatencies on this GPU ({r['gpu']}; "
            f"Lee et al., NeurIPS 2021): {PRIOR_NETS} NAS-Bench-201 networks with even "
            "arch_idx at batch 1 and 256,\ncostmodel._fit.fit_networks from the datasheet "
            "profile; see [fit]. Host costs are HELP's host and PyTorch, not this GPU's."
        )
        if name in ofa_fit:
            why += _ofa_note(ofa_fit[name])
        elif name in SAME_DIE and SAME_DIE[name] in ofa_fit:
            why += (
                f"\nfp32 depthwise efficiencies (compute, memory): "
                f"{SAME_DIE[name]}'s, fitted on its\nonce-for-all subnets (same die, same "
                "kernels; HELP timed no OFA on this GPU)."
            )
        fit = {"base": f"{name} (datasheet)", "rows": 2 * PRIOR_NETS, "sha": sha, "date": date}
        _write_fitted(path, priors[name], why, r, fit)
    host = record["median_host"]
    gpus = ", ".join(n for n in record if n in NB201_GPUS.values())
    for name in OTHER_GPUS:
        path = profile_dir / f"{name}.toml"
        why = (
            f"Eager costs: not measured on this GPU. The median ({date}) over the GPUs "
            f"fitted to HELP's NAS-Bench-201\nlatencies ({gpus}; experiments/help_fit.py "
            "--write-profiles): host dispatch is a property of host and framework."
        )
        if name in ofa_fit:
            why += _ofa_note(ofa_fit[name])
        block = _eager_block(with_host(hw_profiles.load(name), host).runtime("eager"), why)
        text = EAGER_BLOCK.sub(lambda _, b=block: b, path.read_text())
        if name in ofa_fit:  # OFA_PRIOR_FREE: only the depthwise values moved
            note = "fitted to this GPU's OFA timings (help_fit.py)"
            text = _set_depthwise(text, priors[name].efficiency("depthwise_conv", "fp32"),
                                  (note, note))  # fmt: skip
        path.write_text(text)
        hw_profiles.load_fresh(path)
    fitted = {name: priors[name] for name in ofa_fit}
    for name in TRANSFER_GPUS:
        path = profile_dir / f"{name}.toml"
        why = _transfer_comment(name, set(generation_depthwise(fitted)))
        text = _set_depthwise(path.read_text(), transferred_depthwise(name, fitted), why)
        path.write_text(text)
        hw_profiles.load_fresh(path)


def write_cpu_profiles(
    record: dict[str, Any],
    priors: dict[str, HardwareProfile],
    sha: str,
    profile_dir: Path = PROFILE_DIR,
) -> None:
    """The CPU priors into their TOMLs: eager costs per class, fp32 efficiencies, [fit]."""
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    for name, r in record.items():
        path = profile_dir / f"{name}.toml"
        why = (
            f"Eager costs and fp32 efficiencies fitted ({date}, experiments/help_fit.py "
            f"--write-profiles) to HELP's eager PyTorch\nlatencies on this CPU ({r['gpu']}; "
            f"Lee et al., NeurIPS 2021): {PRIOR_NETS} NAS-Bench-201 networks with even "
            "arch_idx at batch 1,\ncostmodel._fit.fit_networks from the calibrated Xeon's "
            "values (experiments/results/calibrated_cpu.toml); see [fit].\nOne factor moves "
            "the extra of the conv / linear classes the networks call (native convs, linear),"
            "\none each efficiency group; the rest keep the calibrated values. HELP's PyTorch, "
            "not today's, set these costs."
        )
        fit = {
            "base": f"{name} (datasheet, calibrated Xeon prior)",
            "rows": PRIOR_NETS,
            "sha": sha,
            "date": date,
        }
        _write_fitted(path, priors[name], why, r, fit)


def _write_fitted(
    path: Path, hw: HardwareProfile, why: str, r: dict[str, Any], fit: dict[str, Any]
) -> None:
    """Rewrite ``path``'s eager block and fp32 efficiencies with ``hw``'s, and its [fit]."""
    block = _eager_block(hw.runtime("eager"), why)
    text = EAGER_BLOCK.sub(lambda _, b=block: b, path.read_text())
    text = _set_fp32_efficiencies(text, "compute_efficiency", dict(hw.compute_efficiency))
    text = _set_fp32_efficiencies(text, "memory_efficiency", dict(hw.memory_efficiency))
    params = ", ".join(f"{k} = {v:.4g}" for k, v in r["parameters"].items())
    text = text.split("\n[fit]\n")[0]  # [fit] is the last table: replaced, not repeated
    text = text.rstrip("\n") + (
        f'\n\n[fit]\nbase = "{fit["base"]}"\nmeasurements = "help_nb201_latency.csv"\n'
        f'sha256 = "{fit["sha"]}"\nrows = {fit["rows"]}\ndate = "{fit["date"]}"\n'
        f'precision = "fp32"\nruntime = "eager"\nparameters = {{ {params} }}\n'
        f"fit_mdape = {r['fit_mdape']:.4g}\n"
    )
    path.write_text(text)
    hw_profiles.load_fresh(path)


def _ofa_note(r: dict[str, Any]) -> str:
    return (
        f"\nfp32 depthwise efficiencies (compute, memory) then fitted alone on "
        f"{OFA_PRIOR_NETS} once-for-all\nsubnets with even arch_idx at batch "
        f"{r['batch']} (HELP's help_ofa_latency.csv, {r['gpu']}), costed as OFA's code runs "
        "them\n"
        "(h_swish as four element-wise kernels): NAS-Bench-201 has no depthwise conv."
    )


def with_host(hw: HardwareProfile, host: dict[str, float]) -> HardwareProfile:
    """``hw`` with the eager host / device per-kernel costs in ``host``."""
    eager = hw_profiles.RuntimeParams(
        host["kernel_overhead_s"],
        host["host_other_s"],
        MappingProxyType({c: host["host_conv_extra_s"] for c in sorted(HEAVY_HOST_CLASSES)}),
    )
    return dataclasses.replace(hw, runtimes=MappingProxyType({**hw.runtimes, "eager": eager}))


def evaluate(
    nets: list[Net], gpu: str, batch: int, prior: HardwareProfile, draws: int, seed: int
) -> dict[str, Any]:
    rows = [measured_network(n, gpu, batch) for n in nets]
    meas = [r.latency_s for r in rows]
    zero = agreement(predict_networks(prior, rows), meas)
    out: dict[str, Any] = {"n": len(rows), "zero_shot": zero}
    out["fitted_10"] = fitted_draws(rows, prior, draws, seed)
    reps = [costmodel.analyze(list(r.specs), prior, "fp32", "eager").total for r in rows]
    out["baseline_spearman"] = {
        "flops": float(stats.spearmanr([t.flops for t in reps], meas).statistic),
        "mac_bytes": float(stats.spearmanr([t.mac_bytes for t in reps], meas).statistic),
    }
    return out


def fitted_draws(
    rows: list[MeasuredNetwork], prior: HardwareProfile, draws: int, seed: int
) -> dict[str, float]:
    """``fit_networks`` from ``prior`` on FIT_NETS random rows, the rest predicted; the
    median of each statistic over ``draws`` draws."""
    meas = [r.latency_s for r in rows]
    per_draw = []
    rng = random.Random(seed)
    for _ in range(draws):
        idx = rng.sample(range(len(rows)), FIT_NETS)
        rest = [i for i in range(len(rows)) if i not in set(idx)]
        fit = fit_networks(prior, [rows[i] for i in idx], folds=2)
        pred = predict_networks(fit.profile, [rows[i] for i in rest])
        per_draw.append(agreement(pred, [meas[i] for i in rest]))
    return {k: statistics.median(d[k] for d in per_draw) for k in per_draw[0]}


def cross_space(
    nb201: list[Net],
    ofa: list[Net],
    gpu_nb: str,
    gpu_ofa: str,
    batch: int,
    prior: HardwareProfile,
    draws: int,
    seed: int,
) -> dict[str, float]:
    rng = random.Random(seed)
    ofa_rows = [measured_network(n, gpu_ofa, batch) for n in ofa]
    per_draw = []
    for _ in range(draws):
        train = [measured_network(n, gpu_nb, batch) for n in rng.sample(nb201, FIT_NETS)]
        fit = fit_networks(prior, train, folds=2)
        per_draw.append(
            agreement(predict_networks(fit.profile, ofa_rows), [r.latency_s for r in ofa_rows])
        )
    return {k: statistics.median(d[k] for d in per_draw) for k in per_draw[0]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data)
    nb201 = read(data / "help_nb201_latency.csv", NB201Net.from_help_row)
    ofa = read(data / "help_ofa_latency.csv", OFANet.from_help_row)
    priors, record = fit_priors(nb201, None if args.nb201_priors_only else ofa)
    if not args.nb201_priors_only:
        # What users get is the shipped TOML: evaluate it, and say if a fresh fit differs.
        shipped = {name: hw_profiles.load(name) for name in priors}
        record["stale"] = stale_values(priors, shipped)
        priors = shipped
    rng = random.Random(args.seed)
    nb_eval = rng.sample([n for n in nb201 if not is_dev(n)], args.sample)
    ofa_eval = rng.sample([n for n in ofa if not is_dev(n)], args.sample)
    results = []
    for space, nets, gpus, batches in (
        ("nb201", nb_eval, NB201_GPUS, (1, 32, 256)),
        ("ofa", ofa_eval, OFA_GPUS, (1, 32, 64)),
    ):
        for gpu, name in gpus.items():
            for b in batches:
                res = evaluate(nets, gpu, b, priors[name], args.draws, args.seed + b)
                results.append({"space": space, "gpu": gpu, "profile": name, "batch": b, **res})
                z, f = res["zero_shot"], res["fitted_10"]
                print(
                    f"{space} {gpu} b{b}: zero-shot rho {z['spearman']:.3f} MdAPE "
                    f"{z['mdape']:.1%} | 10 fitted rho {f['spearman']:.3f} "
                    f"MdAPE {f['mdape']:.1%}",
                    flush=True,
                )
    cpu_fresh, record["cpus"] = fit_cpu_priors(nb201)
    cpus = {name: hw_profiles.load(name) for name in NB201_CPUS.values()}
    record.setdefault("stale", []).extend(stale_values(cpu_fresh, cpus))
    for cpu, name in NB201_CPUS.items():
        res = evaluate(nb_eval, cpu, 1, cpus[name], args.draws, args.seed + 1)
        others = others_median(cpus[name], [hw for n, hw in cpus.items() if n != name])
        rows = [measured_network(n, cpu, 1) for n in nb_eval]
        res["unseen_cpu"] = agreement(predict_networks(others, rows), [r.latency_s for r in rows])
        # A Xeon not in HELP's table, timed on 10 networks: the fit starts from the others.
        res["unseen_cpu_fitted_10"] = fitted_draws(rows, others, args.draws, args.seed + 1)
        results.append(
            {"space": "nb201", "gpu": cpu, "profile": name, "batch": 1, "device_type": "cpu", **res}
        )
        z, u = res["zero_shot"], res["unseen_cpu"]
        print(
            f"nb201 {cpu} b1: zero-shot rho {z['spearman']:.3f} MdAPE {z['mdape']:.1%} | "
            f"others' median rho {u['spearman']:.3f} MdAPE {u['mdape']:.1%}",
            flush=True,
        )
    same_die = same_die_check(ofa_eval, priors) if not args.nb201_priors_only else []
    cross = []
    for gpu_nb, gpu_ofa, name in (
        ("2080ti", "2080ti", "rtx2080ti"),
        ("titan_rtx", "titan_rtx", "titan-rtx"),
        ("titanxp", "titan_xp", "titan-xp"),
    ):
        for b in (1, 32):
            res = cross_space(
                nb201, ofa_eval, gpu_nb, gpu_ofa, b, priors[name], args.draws, args.seed
            )
            cross.append({"gpu": gpu_ofa, "batch": b, **res})
    return {"priors": record, "results": results, "cross_space": cross, "same_die": same_die}


# The one pair of OFA GPUs on one die (TU102): how SAME_DIE's rule does on held-out networks.
TURING_PAIR = (("2080ti", "rtx2080ti", "titan-rtx"), ("titan_rtx", "titan-rtx", "rtx2080ti"))


def same_die_check(ofa: list[Net], priors: dict[str, HardwareProfile]) -> list[dict[str, Any]]:
    """Each Turing card's OFA networks predicted zero-shot with its own fitted values, the
    other card's (SAME_DIE's rule) and the published Hopper ones (every other GPU's)."""
    published = {
        "compute_efficiency": DATASHEET_CONV_LINEAR,
        "memory_efficiency": DATASHEET_CONV_LINEAR,
    }
    out = []
    for gpu, name, other in TURING_PAIR:
        hw = priors[name]
        variants = {
            "own": hw,
            "same_die": with_ofa_convs(hw, priors[other]),
            "published": with_ofa_convs(hw, dataclasses.replace(hw, **published)),
        }
        for b in (32, OFA_PRIOR_BATCH):
            rows = [measured_network(n, gpu, b) for n in ofa]
            meas = [r.latency_s for r in rows]
            out.append(
                {
                    "gpu": gpu,
                    "batch": b,
                    "from": other,
                    **{k: agreement(predict_networks(v, rows), meas) for k, v in variants.items()},
                }
            )
    return out


def _fitted_values(hw: HardwareProfile) -> dict[str, float]:
    """What --write-profiles writes, as the cost model reads it: eager costs, each kernel
    class's host extra and fp32 efficiencies (a class a file omits takes its parent's)."""
    eager = hw.runtime("eager")
    values = {
        "kernel_overhead_s": eager.kernel_overhead_s,
        "host_overhead_s": eager.host_overhead_s,
    }
    for cls in hw_profiles.KERNEL_CLASSES:
        compute, memory = hw.efficiency(cls, "fp32")
        values[f"class_host_overhead_s.{cls}"] = eager.class_extra_s(cls)
        values[f"compute_efficiency.{cls}"] = compute
        values[f"memory_efficiency.{cls}"] = memory
    return values


def stale_values(
    fresh: dict[str, HardwareProfile], shipped: dict[str, HardwareProfile]
) -> list[str]:
    """Values of the shipped profiles that a fresh fit does not reproduce (the TOMLs keep
    3 significant digits, so agreement within 0.6% counts as the same)."""
    out = []
    for name, hw in fresh.items():
        new, old = _fitted_values(hw), _fitted_values(shipped[name])
        out += [
            f"{name} {k}: shipped {old[k]:.3g}, fresh fit {v:.3g}"
            for k, v in new.items()
            if abs(old[k] - v) > 0.006 * max(abs(v), 1e-12)
        ]
    return out


TARGETS = {"fitted_10": (0.98, 0.10), "zero_shot": (0.95, 0.25)}


def _met(kind: str, s: dict[str, float]) -> str:
    rho, mdape = TARGETS[kind]
    return "met" if s["spearman"] >= rho and s["mdape"] <= mdape else "missed"


def to_markdown(res: dict[str, Any], command: str, meta: dict[str, Any]) -> str:
    lines = [
        "# HELP latency: zero-shot priors and 10-network fits",
        "",
        f"Command: `{command}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']}; load average {meta['load']}.",
        "",
        "Honesty: the zero-shot priors were fitted on HELP rows of the development half only "
        "(even `arch_idx`): 40 NAS-Bench-201 networks per GPU at batch 1 and 256, the 1x1 "
        "convs' compute and memory efficiencies apart (the V100 has "
        "no NAS-Bench-201 rows: it takes the median host costs of the other GPUs)"
        + (
            ""
            if "ofa_convs" not in res["priors"]
            else ", then per OFA GPU the depthwise compute and memory "
            f"efficiencies alone on {OFA_PRIOR_NETS} OFA subnets at batch {OFA_PRIOR_BATCH}"
        )
        + ". The zero-shot columns are the shipped profiles (hw_profiles/data), "
        + (
            "which that fit, started from the datasheet values, reproduces"
            if not res["priors"].get("stale")
            else "WHICH A FRESH FIT DOES NOT REPRODUCE (see the end; run --write-profiles)"
        )
        + ". Every figure below is on the held-out half (odd `arch_idx`), which no fit and "
        "no modelling choice has seen. 'fitted 10': `fit_networks` from the prior on 10 "
        "random held-out networks of that GPU and batch, the rest predicted; median over draws. "
        "Targets: fitted Spearman >= 0.98 and MdAPE <= 10%; zero-shot Spearman >= 0.95 and "
        "MdAPE <= 25%. Baselines: Spearman of FLOPs (2 x MACs) and of fp32 MAC bytes.",
        "",
        "| space | GPU | batch | n | zero-shot rho | MdAPE | +-10% | +-25% | target "
        "| fitted rho | MdAPE | +-10% | +-25% | target | FLOPs rho | MAC bytes rho |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _gpu_cells(res):
        z, f, b = r["zero_shot"], r["fitted_10"], r["baseline_spearman"]
        lines.append(
            f"| {r['space']} | {r['gpu']} | {r['batch']} | {r['n']} | {z['spearman']:.3f} | "
            f"{z['mdape']:.1%} | {z['within_10']:.0%} | {z['within_25']:.0%} | "
            f"{_met('zero_shot', z)} | {f['spearman']:.3f} | {f['mdape']:.1%} | "
            f"{f['within_10']:.0%} | {f['within_25']:.0%} | {_met('fitted_10', f)} | "
            f"{b['flops']:.3f} | {b['mac_bytes']:.3f} |"
        )
    lines += cpu_table(res)
    lines += [
        "",
        "Cross-space: fitted on 10 NAS-Bench-201 networks, OFA subnets predicted "
        "(same GPU and batch; median over draws).",
        "",
        "| GPU | batch | Spearman | MdAPE | +-10% | +-25% | median ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["cross_space"]:
        lines.append(
            f"| {c['gpu']} | {c['batch']} | {c['spearman']:.3f} | {c['mdape']:.1%} | "
            f"{c['within_10']:.0%} | {c['within_25']:.0%} | {c['median_ratio']:.2f} |"
        )
    if res.get("same_die"):
        lines += [
            "",
            "Same die (SAME_DIE's rule, for GPUs HELP timed no OFA on): each TU102 "
            "card's held-out OFA networks predicted with its own fitted depthwise "
            "efficiencies, with the other card's, and with the published "
            "Hopper values the GPUs without OFA rows otherwise keep (Spearman / MdAPE).",
            "",
            "| GPU | batch | own | other card's | published |",
            "|---|---|---|---|---|",
        ]
        for c in res["same_die"]:
            cells = " | ".join(
                f"{c[k]['spearman']:.3f} / {c[k]['mdape']:.1%}"
                for k in ("own", "same_die", "published")
            )
            lines.append(f"| {c['gpu']} | {c['batch']} | {cells} |")
    lines += ["", "Priors fitted (seconds; efficiencies as fractions):", ""]
    nb201_priors = {n: r for n, r in res["priors"].items() if n in NB201_GPUS.values()}
    ofa_priors = res["priors"].get("ofa_convs", {})
    cpu_priors = res["priors"].get("cpus", {})
    for name, r in [*nb201_priors.items(), *ofa_priors.items(), *cpu_priors.items()]:
        p = ", ".join(
            f"{k} {v * 1e6:.2f} us" if k.endswith("_s") else f"{k} {v:.3f}"
            for k, v in r["parameters"].items()
        )
        what = f"OFA dev half, batch {r['batch']}" if "batch" in r else "NAS-Bench-201"
        lines.append(f"- {name} ({r['gpu']}, {what}): {p}; fit MdAPE {r['fit_mdape']:.1%}")
    if res["priors"].get("stale"):
        lines += ["", "Shipped values a fresh fit does not reproduce:", ""]
        lines += [f"- {x}" for x in res["priors"]["stale"]]
    return "\n".join(lines + summary_lines(res)) + "\n"


def _gpu_cells(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in res["results"] if r.get("device_type", "gpu") == "gpu"]


def cpu_table(res: dict[str, Any]) -> list[str]:
    cells = [r for r in res["results"] if r.get("device_type") == "cpu"]
    if not cells:
        return []
    lines = [
        "",
        "## HELP's CPUs (NAS-Bench-201, batch 1)",
        "",
        f"Each CPU's prior: its datasheet ceilings, with eager costs and fp32 efficiencies fitted "
        f"on the same {PRIOR_NETS} development-half networks from the calibrated Xeon's values "
        "(experiments/results/calibrated_cpu.toml). 'Unseen CPU': this CPU's datasheet with the "
        "median eager costs and efficiencies of the other three fitted CPUs, a CPU no fit has "
        "seen; 'unseen, 10 fitted': that prior fitted on 10 of this CPU's held-out networks, "
        "as a user with a Xeon not in HELP's table would. Held-out half as above. The CPUs' "
        "`host_conv_extra_s` below is the host extra "
        "of a native conv call, the costliest conv / linear class these networks call; the "
        "oneDNN conv classes they never call at batch 1 keep the calibrated values.",
        "",
        "| CPU | n | zero-shot rho | MdAPE | +-10% | +-25% | target | unseen-CPU rho | MdAPE "
        "| ratio | target | fitted rho | MdAPE | +-10% | target | unseen, 10 fitted rho | MdAPE "
        "| target | FLOPs rho | MAC bytes rho |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cells:
        z, u, f, b = r["zero_shot"], r["unseen_cpu"], r["fitted_10"], r["baseline_spearman"]
        uf = r["unseen_cpu_fitted_10"]
        lines.append(
            f"| {r['gpu']} | {r['n']} | {z['spearman']:.3f} | {z['mdape']:.1%} | "
            f"{z['within_10']:.0%} | {z['within_25']:.0%} | {_met('zero_shot', z)} | "
            f"{u['spearman']:.3f} | {u['mdape']:.1%} | {u['median_ratio']:.2f} | "
            f"{_met('zero_shot', u)} | {f['spearman']:.3f} | {f['mdape']:.1%} | "
            f"{f['within_10']:.0%} | {_met('fitted_10', f)} | {uf['spearman']:.3f} | "
            f"{uf['mdape']:.1%} | {_met('fitted_10', uf)} | {b['flops']:.3f} | "
            f"{b['mac_bytes']:.3f} |"
        )
    return lines


def _span(values: Sequence[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def summary_lines(res: dict[str, Any]) -> list[str]:
    """The summary, computed from the tables above (nothing in it is typed by hand)."""
    lines = ["", "## Summary (computed from the tables above)", ""]
    for kind, label in (("zero_shot", "Zero-shot"), ("fitted_10", "10 fitted networks")):
        rho, mdape = TARGETS[kind]
        for space in ("nb201", "ofa"):
            cells = [r for r in _gpu_cells(res) if r["space"] == space]
            stats_ = [r[kind] for r in cells]
            met = sum(_met(kind, s) == "met" for s in stats_)
            rhos = _span([s["spearman"] for s in stats_], ".3f")
            lines.append(
                f"- {label}, {space}: target (Spearman >= {rho}, MdAPE <= {mdape:.0%}) met in "
                f"{met} of {len(cells)} cells; Spearman {rhos}, "
                f"MdAPE {_span([s['mdape'] for s in stats_], '.1%')}."
            )
    cpus = [r for r in res["results"] if r.get("device_type") == "cpu"]
    for kind, label in (
        ("zero_shot", "zero-shot"),
        ("unseen_cpu", "unseen-CPU"),
        ("fitted_10", "10 fitted networks"),
        ("unseen_cpu_fitted_10", "unseen CPU, 10 fitted networks"),
    ):
        if not cpus:
            break
        target = "fitted_10" if kind.endswith("fitted_10") else "zero_shot"
        stats_ = [r[kind] for r in cpus]
        met = sum(_met(target, x) == "met" for x in stats_)
        lines.append(
            f"- HELP's CPUs, {label}: target met on {met} of {len(cpus)}; Spearman "
            f"{_span([x['spearman'] for x in stats_], '.3f')}, MdAPE "
            f"{_span([x['mdape'] for x in stats_], '.1%')}."
        )
    b1 = [r["baseline_spearman"]["flops"] for r in res["results"]
          if r["space"] == "ofa" and r["batch"] == 1]  # fmt: skip
    if b1:
        lines.append(
            f"- OFA at batch 1: FLOPs alone rank HELP's times at Spearman "
            f"{_span(b1, '.2f')}: those times are host-bound and noisy."
        )
    cross = res["cross_space"]
    if cross:
        lines.append(
            f"- Cross-space (NB201 fitted, OFA predicted): Spearman "
            f"{_span([c['spearman'] for c in cross], '.2f')}, MdAPE "
            f"{_span([c['mdape'] for c in cross], '.1%')}."
        )
    pinned = [n for n, r in res["priors"].items() if n in NB201_GPUS.values()
              and r["parameters"].get("efficiency_pointwise_conv", 0.0) >= 0.999]  # fmt: skip
    if pinned and "ofa_convs" not in res["priors"]:
        lines.append(
            f"- Fitted pointwise-conv efficiency sits at its bound 1.0 on {len(pinned)} "
            f"GPU(s) ({', '.join(pinned)}): NAS-Bench-201's 1x1 convs are too small to "
            "identify it, so OFA's large 1x1 convs are predicted too fast."
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--sample", type=int, default=200, help="networks per space (default 200)")
    p.add_argument("--draws", type=int, default=5, help="10-network fits per cell (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--nb201-priors-only",
        action="store_true",
        help="priors from NAS-Bench-201 alone (no OFA conv refit): the old protocol",
    )
    p.add_argument(
        "--write-profiles",
        action="store_true",
        help="only fit the priors and write them into hw_profiles/data/*.toml",
    )
    p.add_argument(
        "--profile-dir",
        default=str(PROFILE_DIR),
        help="where --write-profiles rewrites the GPU TOMLs (default: built-in)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output stem (.md and .json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python experiments/help_fit.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if args.write_profiles:
        csv_path = Path(args.data) / "help_nb201_latency.csv"
        ofa = read(Path(args.data) / "help_ofa_latency.csv", OFANet.from_help_row)
        nb201 = read(csv_path, NB201Net.from_help_row)
        priors, record = fit_priors(nb201, ofa)
        sha = hashlib.sha256(csv_path.read_bytes()).hexdigest()
        write_profiles(record, priors, sha, Path(args.profile_dir))
        write_cpu_profiles(*reversed(fit_cpu_priors(nb201)), sha, Path(args.profile_dir))
        print(json.dumps(record["median_host"]))
        return 0
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, **meta, **res}, indent=1))
    out.with_suffix(".md").write_text(to_markdown(res, command, meta))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
