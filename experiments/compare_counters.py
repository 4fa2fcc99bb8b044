"""Count reference networks and single layers with roofnas and with the usual peers.

Tools: roofnas (``costmodel.analyze`` on LayerSpecs: analytic, no forward pass;
and ``costmodel.profile``: fx trace plus one forward pass on zeros), fvcore,
thop, ptflops (pytorch backend) and torch's FlopCounterMode. A peer that is not
installed is skipped and said so. Every tool runs on a fresh copy of the model
(thop and ptflops attach state to modules), on one CPU thread; times are the
wall clock (time.perf_counter), the median of ``--repeats`` runs with the
p10-p90 spread. The report starts with the command, date, machine and load
average (``experiments/_provenance.py``).

Usage:
    .venv/bin/python experiments/compare_counters.py [--repeats 5] [--out experiments/results]

Writes compare_counters.json (every number) and compare_counters.md (tables and
the explanation of every difference). The explanation is checked: each peer's
figure is decomposed into roofnas's per-kind counts, and a row whose figure the
stated convention does not reproduce exactly is flagged UNEXPLAINED.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# experiments/ is on sys.path as the script's folder.
from _provenance import (  # noqa: E402
    WALL_CLOCK,
    WALL_STATISTIC,
    header_lines,
    provenance_finish,
    provenance_start,
    wall_stats,
)

import costmodel  # noqa: E402
from costmodel._trace import trace_layers  # noqa: E402
from tests.reference_nets import CifarNet, MobileNetV2, ResNet18, ShuffleNetV1Like  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    network: bool


CASES = [
    Case(
        "conv3x3 16->32, 32x32",
        lambda: nn.Conv2d(16, 32, 3, padding=1, bias=False),
        (1, 16, 32, 32),
        False,
    ),
    Case(
        "conv3x3 16->32 + bias",
        lambda: nn.Conv2d(16, 32, 3, padding=1, bias=True),
        (1, 16, 32, 32),
        False,
    ),
    Case(
        "group conv g=4",
        lambda: nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False),
        (1, 16, 32, 32),
        False,
    ),
    Case(
        "depthwise 3x3, 32 ch",
        lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),
        (1, 32, 32, 32),
        False,
    ),
    Case("pointwise 16->32", lambda: nn.Conv2d(16, 32, 1, bias=False), (1, 16, 32, 32), False),
    Case("BatchNorm2d(32), eval", lambda: nn.BatchNorm2d(32), (1, 32, 32, 32), False),
    Case("ReLU", lambda: nn.ReLU(), (1, 32, 32, 32), False),
    Case("MaxPool2d(2)", lambda: nn.MaxPool2d(2), (1, 32, 32, 32), False),
    Case("AvgPool2d(2)", lambda: nn.AvgPool2d(2), (1, 32, 32, 32), False),
    Case("Linear(64, 64) on (1, 16, 64)", lambda: nn.Linear(64, 64), (1, 16, 64), False),
    Case("CIFAR convnet", CifarNet, (1, 3, 32, 32), True),
    Case("ShuffleNet-V1-like g=3", ShuffleNetV1Like, (1, 3, 224, 224), True),
    Case("MobileNetV2 1.0", MobileNetV2, (1, 3, 224, 224), True),
    Case("ResNet-18", ResNet18, (1, 3, 224, 224), True),
]


# --- the tools: each returns (reported count, reported params or None) --------------------


def run_roofnas_profile(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    rep = costmodel.profile(model, shape)
    return rep.total.macs, rep.total.params


def roofnas_analyze_tool(specs: tuple[costmodel.LayerSpec, ...]) -> Callable[..., tuple[int, int]]:
    def run(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
        costmodel.count.cache_clear()  # no cached layer costs: time the formulas themselves
        rep = costmodel.analyze(specs, "t4", "fp32", input_shape=shape)
        return rep.total.macs, rep.total.params

    return run


def run_flopcounter(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, None]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(shape))
    return counter.get_total_flops(), None


def run_fvcore(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    from fvcore.nn import FlopCountAnalysis, parameter_count

    with torch.no_grad():
        fca = FlopCountAnalysis(model, torch.zeros(shape))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = fca.total()
    return int(total), int(parameter_count(model)[""])


def run_thop(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    import thop

    with torch.no_grad():
        macs, params = thop.profile(model, inputs=(torch.zeros(shape),), verbose=False)
    return int(macs), int(params)


def run_ptflops(model: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    from ptflops import get_model_complexity_info

    with torch.no_grad():
        macs, params = get_model_complexity_info(
            model,
            tuple(shape[1:]),
            as_strings=False,
            print_per_layer_stat=False,
            backend="pytorch",
            ost=io.StringIO(),
            verbose=False,
        )
    return int(macs), int(params)


PEERS: dict[str, tuple[str, Callable[..., tuple[int, int | None]]]] = {
    # name: (module that must be importable, runner)
    "fvcore": ("fvcore", run_fvcore),
    "thop": ("thop", run_thop),
    "ptflops": ("ptflops", run_ptflops),
    "FlopCounterMode": ("torch", run_flopcounter),
}


def timed(fn: Callable[..., Any], case: Case, repeats: int) -> tuple[Any, list[float], str]:
    """(result, wall-clock seconds of each timed run, error) of fn on fresh copies of the
    case's model."""
    base = case.build().eval()
    times, result, error = [], None, ""
    for i in range(repeats + 1):  # the first run warms caches up and is not timed
        model = copy.deepcopy(base)
        sink = io.StringIO()
        try:
            with (
                contextlib.redirect_stdout(sink),
                contextlib.redirect_stderr(sink),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                result = fn(model, case.shape)
                if i:
                    times.append(time.perf_counter() - t0)
        except Exception as e:  # a peer crashing is a finding, not a reason to stop
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            break
    return result, times, error


# --- roofnas's breakdown, used to explain the peers --------------------------------------


def breakdown(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """roofnas's counts split by kind, module vs functional call, input vs output elements.

    Keys: ``macs`` (all MACs), ``conv_linear_macs``, ``bias_adds`` and
    ``{op}_{mod|fn}_{in|out}`` element counts, e.g. ``relu_mod_out``.
    """
    specs, _ = trace_layers(model, shape)
    modules = {name for name, _ in model.named_modules()}
    by: dict[str, int] = {"macs": 0, "conv_linear_macs": 0, "bias_adds": 0}
    for spec in specs:
        c = costmodel.count(spec)
        by["macs"] += c.macs
        if spec.op in ("conv2d", "linear"):
            by["conv_linear_macs"] += c.macs
            by["bias_adds"] += c.other_ops if spec.bias else 0
        # a module called twice is named "relu_1" the second time; a bare layer is the model
        base = re.sub(r"_\d+$", "", spec.name)
        leaf = not any(True for _ in model.children())
        how = "mod" if spec.name in modules or base in modules or leaf else "fn"
        for end, shp in (("in", spec.in_shape), ("out", c.out_shape)):
            key = f"{spec.op}_{how}_{end}"
            by[key] = by.get(key, 0) + math.prod(shp)
    return by


# Each peer's convention as a sum of roofnas's components: (coefficient, component, why).
# Found by reading each tool's counting hooks and confirmed on every case: the report
# checks that the rule reproduces the tool's figure exactly.
RULES: dict[str, list[tuple[int, str, str]]] = {
    "roofnas analyze": [
        (
            1,
            "macs",
            "MACs of conv + linear, plus BatchNorm folded to one "
            "multiply-add per element (other ops kept apart)",
        )
    ],
    "FlopCounterMode": [
        (
            2,
            "conv_linear_macs",
            "2 FLOPs per conv/linear MAC; nothing else (no bias, BN, activation, pooling or add)",
        )
    ],
    "fvcore": [
        (1, "conv_linear_macs", "one 'flop' per MAC (fvcore#69: its 'flop' means MAC); no bias"),
        (2, "batchnorm2d_mod_out", "eval BatchNorm: 1 per element + 1 more for the affine scale"),
        (1, "global_avgpool2d_mod_in", "adaptive avg pool: 1 per input element"),
        (1, "global_avgpool2d_fn_in", "(also when called functionally: it traces aten ops)"),
    ],
    "thop": [
        (1, "conv_linear_macs", "MACs; bias ignored (thop#231, thop#136: multiplications only)"),
        (4, "batchnorm2d_mod_out", "BatchNorm: 2 per element + 2 for affine"),
        (1, "avgpool2d_mod_out", "AvgPool2d: 1 per output"),
        (1, "global_avgpool2d_mod_in", "AdaptiveAvgPool2d: kernel adds (1 per input) ..."),
        (1, "global_avgpool2d_mod_out", "... + 1 divide per output"),
    ],
    "ptflops": [
        (1, "conv_linear_macs", "MACs"),
        (1, "bias_adds", "+ 1 add per output element for conv and linear bias"),
        (2, "batchnorm2d_mod_out", "BatchNorm: 1 per element, x2 when affine"),
        (
            2,
            "relu_mod_out",
            "nn.ReLU counted twice: its module hook and the patched F.relu it calls",
        ),
        (1, "relu6_mod_out", "nn.ReLU6 once (it calls F.hardtanh, which is not patched)"),
        (2, "maxpool2d_mod_in", "MaxPool2d: 1 per input element, twice (module + F.max_pool2d)"),
        (2, "avgpool2d_mod_in", "AvgPool2d: 1 per input element, twice (module + F.avg_pool2d)"),
        (2, "global_avgpool2d_mod_in", "AdaptiveAvgPool2d: 1 per input element, twice"),
        (1, "global_avgpool2d_fn_in", "F.adaptive_avg_pool2d called directly: once"),
    ],
}
RULES["roofnas profile"] = RULES["roofnas analyze"]
# Never counted by any peer here: x + y (operator.add), channel shuffle, flatten, dropout.


def explain(tool: str, count: int | None, r: dict[str, int]) -> tuple[str, bool]:
    """The tool's convention applied to roofnas's breakdown, and whether it gives ``count``."""
    if count is None:
        return "no figure", False
    terms = [(k, comp, why) for k, comp, why in RULES[tool] if r.get(comp, 0)]
    predicted = sum(k * r[comp] for k, comp, _ in terms)
    text = " + ".join(
        f"{k} x {comp} ({r[comp]:,}: {why})" if k != 1 else f"{comp} ({r[comp]:,}: {why})"
        for k, comp, why in terms
    )
    if predicted != count:
        text += f"; predicted {predicted:,}, off by {count - predicted:+,}"
    return text or "0", predicted == count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per tool and case")
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results")
    p.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats} must be >= 1")
    prov = provenance_start("experiments/compare_counters.py", argv)
    torch.set_num_threads(1)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    available = {k: importlib.util.find_spec(mod) is not None for k, (mod, _) in PEERS.items()}
    versions = {"torch": prov.torch, "python": prov.python}
    for name in ("fvcore", "thop", "ptflops"):
        if available[name]:
            from importlib.metadata import version

            versions[name] = version(name)
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        specs, unsupported = trace_layers(case.build(), case.shape)
        model = case.build()
        row: dict[str, Any] = {
            "case": case.name,
            "input_shape": list(case.shape),
            "network": case.network,
            "torch_params": sum(p.numel() for p in model.parameters()),
            "roofnas": breakdown(model, case.shape),
            "unsupported": list(unsupported),
            "tools": {},
        }
        tools: dict[str, Callable[..., Any]] = {
            "roofnas analyze": roofnas_analyze_tool(specs),
            "roofnas profile": run_roofnas_profile,
        }
        tools.update({k: fn for k, (_, fn) in PEERS.items() if available[k]})
        for tool, fn in tools.items():
            result, times, error = timed(fn, case, args.repeats)
            nan = float("nan")
            stats = wall_stats(times) if times else {"median_s": nan, "p10_s": nan, "p90_s": nan}
            row["tools"][tool] = {
                "count": None if result is None else result[0],
                "params": None if result is None else result[1],
                **stats,
                "times_s": times,
                "error": error,
            }
            print(
                f"{case.name:32s} {tool:16s} {row['tools'][tool]['count']!s:>14} "
                f"{stats['median_s'] * 1e3:9.2f} ms {error}",
                file=sys.stderr,
            )
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance_finish(prov)
    doc = {
        "command": prov.command,
        "provenance": prov.to_dict(),
        "versions": versions,
        "threads": 1,
        "repeats": args.repeats,
        "clock": WALL_CLOCK,
        "statistic": WALL_STATISTIC,
        "skipped_peers": [k for k, ok in available.items() if not ok],
        "cases": rows,
    }
    (args.out / "compare_counters.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "compare_counters.md").write_text(render(doc))
    print(f"wrote {args.out / 'compare_counters.md'} and .json", file=sys.stderr)
    return 0


def render(doc: dict[str, Any]) -> str:
    lines = [
        "# Counting conventions: roofnas vs fvcore, thop, ptflops, FlopCounterMode",
        "",
        *header_lines(doc["provenance"]),
        "",
        f"Times: {doc['clock']}, one torch thread; statistic: median of {doc['repeats']} "
        "runs after a warm-up run, with the p10-p90 spread (ms).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
    ]
    if doc["skipped_peers"]:
        lines.append(f"Skipped (not installed): {', '.join(doc['skipped_peers'])}.")
    lines += [
        "",
        'Counts are as each tool reports them; "exact MACs" is roofnas\'s '
        'conv + linear multiply-accumulates (the seed\'s "FLOPs").',
        "",
    ]
    tools = list(doc["cases"][0]["tools"])
    lines.append("| case | exact conv/linear MACs | " + " | ".join(tools) + " |")
    lines.append("|---|---:|" + "---:|" * len(tools))
    for row in doc["cases"]:
        cells = []
        for tool in tools:
            t = row["tools"][tool]
            cells.append(f"{t['count']:,}" if t["count"] is not None else "crash")
        lines.append(
            f"| {row['case']} | {row['roofnas']['conv_linear_macs']:,} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "## Time per call (wall clock, one CPU thread; median ms (p10-p90))", ""]
    lines.append("| case | " + " | ".join(tools) + " |")
    lines.append("|---|" + "---:|" * len(tools))
    for row in doc["cases"]:
        cells = [
            f"{row['tools'][t]['median_s'] * 1e3:.2f} "
            f"({row['tools'][t]['p10_s'] * 1e3:.2f}-{row['tools'][t]['p90_s'] * 1e3:.2f})"
            for t in tools
        ]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    lines += ["", "## Params reported", ""]
    lines.append("| case | sum(p.numel()) | " + " | ".join(tools) + " |")
    lines.append("|---|---:|" + "---:|" * len(tools))
    for row in doc["cases"]:
        cells = []
        for t in tools:
            v = row["tools"][t]["params"]
            cells.append("-" if v is None else f"{v:,}")
        lines.append(f"| {row['case']} | {row['torch_params']:,} | " + " | ".join(cells) + " |")
    lines += ["", "## Every figure explained (checked: the convention reproduces it exactly)", ""]
    unexplained = 0
    for row in doc["cases"]:
        lines.append(f"- **{row['case']}**")
        for tool in tools:
            t = row["tools"][tool]
            text, ok = explain(tool, t["count"], row["roofnas"])
            if t["error"]:
                text = f"crashed: {t['error']}"
            unexplained += not ok
            lines.append(f"  - {tool}: {text}{'' if ok else ' **UNEXPLAINED**'}")
    lines += [
        "",
        f"Unexplained figures: {unexplained}.",
        "",
        "## Each tool's convention",
        "",
        "| tool | counts (coefficient x roofnas component: why) |",
        "|---|---|",
    ]
    for tool, terms in RULES.items():
        if tool in tools:
            cell = "; ".join(f"{k} x {comp}: {why}" for k, comp, why in terms)
            lines.append(f"| {tool} | {cell} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## Notes

- **MACs vs FLOPs.** fvcore, thop and ptflops report MACs (fvcore calls them "flops":
  fvcore#69); FlopCounterMode reports FLOPs = 2 x MACs, for conv, linear and matmul only.
  roofnas reports both, `macs` and `flops = 2 * macs`, and the seed lecture's "FLOPs" is
  what it calls `macs`. On every conv and linear case all five agree once this factor is
  taken out: the exact conv/linear MACs column.
- **Bias.** roofnas counts bias params (reported apart as `bias_params`) and the bias adds
  as `other_ops` (32,768 for the 16->32 conv on 32x32), not as MACs, so that its MACs stay
  comparable with the seed and FlopCounterMode. ptflops adds the bias adds into its MACs;
  fvcore, thop and FlopCounterMode drop them (thop#231, thop#136).
- **BatchNorm.** roofnas: one MAC per element, the inference form y = a*x + b (it still
  reads and writes the whole tensor, which the latency model charges). fvcore 2, thop 4,
  ptflops 2 per element; FlopCounterMode 0. A deployment that folds BN into the previous
  conv pays nothing for it; none of the tools models that, roofnas included.
- **Activations, pooling.** roofnas counts them as `other_ops` (never MACs) and as memory
  traffic. ptflops counts nn.ReLU, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d twice (the
  module hook and the patched functional the module calls: a bug), but ReLU6 once (it calls
  F.hardtanh, which ptflops does not patch). thop counts AvgPool2d (1 per output) and
  AdaptiveAvgPool2d (kernel + 1 per output), nothing for ReLU or MaxPool2d. fvcore counts
  adaptive average pooling only (1 per input element).
- **Functional calls.** thop sees modules only: MobileNetV2's `F.adaptive_avg_pool2d` is
  invisible to it. fvcore traces aten ops and sees it; ptflops patches `torch.nn.functional`.
- **Residual adds, channel shuffle, flatten.** No peer counts `x + y` written as an
  operator, or nn.ChannelShuffle; roofnas counts the add (1 per element) and the memory
  traffic of both (ShuffleNet V2's guideline G4: element-wise ops are not free); flatten is
  a view (free) everywhere.
- **Linear on a 3-D input.** Every tool here counts all 16 rows (65,536 MACs); ptflops adds
  the 1,024 bias adds. (torchinfo, which gets this wrong, is not part of this comparison.)
- **Params.** All tools agree with `sum(p.numel())`, except thop on a model that is a single
  layer: it sums the params of the root's children only (thop/profile.py `dfs_count`), so
  it reports 0.
- **Time.** "roofnas analyze" is the analytic path used by the search: formulas and the
  roofline on LayerSpecs, no forward pass (layer-cost cache cleared before every run).
  "roofnas profile" adds tracing with torch.fx and one forward pass on zeros, so it costs
  about what the peers cost: each of them runs a real forward pass. The machine was shared
  with other jobs (load average in the header), so absolute times are noisy; each figure is
  the wall-clock median after a warm-up run, with the p10-p90 spread in brackets.
"""


if __name__ == "__main__":
    raise SystemExit(main())
