"""Where a CPU profile mispredicts NAS-Bench-201 at batch 32, per layer kind.

``layers``: single layers of NB201's kinds at its batch-32 shapes (C = 16 / 32 / 64 at
32 / 16 / 8 pixels), timed in interleaved rounds (``sample_calls``, median), beside the
profile's prediction and the time per output element, per op and the bytes per second.
``networks``: each network of a file (one string a line), timed once per round under
``torch.profiler``; the top-level aten ops' CPU time summed per layer kind beside the
prediction of the same kind. Development networks only: never the held-out list.

    PYTHONPATH=. python experiments/nb201_layer_kinds.py layers --hw PROFILE [--rounds 15]
    PYTHONPATH=. python experiments/nb201_layer_kinds.py networks --hw PROFILE --networks FILE
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from costmodel import LayerSpec, analyze, count
from costmodel._cli import read_networks
from costmodel._fit import predict_single
from costmodel._measure import sample_calls, steady_state_allocator
from hw_profiles import load

SHAPES = ((32, 16, 32), (32, 32, 16), (32, 64, 8))  # (N, C, H = W) of NB201's three stages
# Top-level aten op -> the cost model's layer kind.
ATEN_KINDS = {
    "aten::relu": "relu",
    "aten::conv2d": "conv2d",
    "aten::batch_norm": "batchnorm2d",
    "aten::avg_pool2d": "avgpool2d",
    "aten::max_pool2d": "maxpool2d",
    "aten::mul": "mul",
    "aten::add": "add",
    "aten::adaptive_avg_pool2d": "global_avgpool2d",
    "aten::linear": "linear",
}
Row = tuple[str, LayerSpec, Callable[[], Any]]


def _module_call(m: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    m = m.eval()
    return lambda: m(x)


def layer_rows(n: int, c: int, h: int) -> list[Row]:
    """NB201's kinds (and the pools it does not use, for contrast) at one shape."""
    sh = (n, c, h, h)
    x, y = torch.randn(sh), torch.randn(sh)
    avg3 = LayerSpec("avgpool2d", sh, kernel_size=3, stride=1, padding=1)
    max3 = LayerSpec("maxpool2d", sh, kernel_size=3, stride=1, padding=1)
    return [
        ("avg 3x3/1 cip=F", avg3, _module_call(nn.AvgPool2d(3, 1, 1, count_include_pad=False), x)),
        ("avg 3x3/1 cip=T", avg3, _module_call(nn.AvgPool2d(3, 1, 1), x)),
        (
            "avg 3x3/2",
            LayerSpec("avgpool2d", sh, kernel_size=3, stride=2, padding=1),
            _module_call(nn.AvgPool2d(3, 2, 1), x),
        ),
        (
            "avg 2x2/2",
            LayerSpec("avgpool2d", sh, kernel_size=2, stride=2),
            _module_call(nn.AvgPool2d(2, 2), x),
        ),
        ("max 3x3/1", max3, _module_call(nn.MaxPool2d(3, 1, 1), x)),
        ("global avg", LayerSpec("global_avgpool2d", sh), _module_call(nn.AdaptiveAvgPool2d(1), x)),
        ("relu", LayerSpec("relu", sh), _module_call(nn.ReLU(), x)),
        ("batchnorm", LayerSpec("batchnorm2d", sh), _module_call(nn.BatchNorm2d(c), x)),
        ("add", LayerSpec("add", sh, num_inputs=2), lambda: x + y),
        ("mul by 0", LayerSpec("mul", sh), lambda: x.mul(0.0)),
        (
            "conv 3x3",
            LayerSpec("conv2d", sh, c, 3, 1, 1),
            _module_call(nn.Conv2d(c, c, 3, 1, 1, bias=False), x),
        ),
        (
            "conv 1x1",
            LayerSpec("conv2d", sh, c, 1),
            _module_call(nn.Conv2d(c, c, 1, bias=False), x),
        ),
    ]


def layers_main(hw_path: str, rounds: int) -> None:
    hw = load(hw_path)
    rows = [r for shape in SHAPES for r in layer_rows(*shape)]
    print(f"load average before {os.getloadavg()}")
    with torch.inference_mode():
        samples = sample_calls([r[2] for r in rows], "cpu", rounds=rounds, min_s=2e-3)
    print(f"load average after {os.getloadavg()}")
    print("kind            C,H,W         measured us  predicted us  error  ns/output  ns/op  GB/s")
    for (name, spec, _), s in zip(rows, samples, strict=True):
        t, c = statistics.median(s), count(spec)
        pred = predict_single(spec, hw, "fp32")
        ops = 2 * c.macs + c.other_ops
        gbs = c.mac_elements * 4 / t / 1e9
        print(
            f"{name:15s} {spec.in_shape[1:]!s:13s} {t * 1e6:11.1f} {pred * 1e6:13.1f} "
            f"{pred / t - 1:+6.0%} {t / c.output_elements * 1e9:10.2f} "
            f"{t / max(ops, 1) * 1e9:6.3f} {gbs:5.1f}"
        )


def _kind_times(model: nn.Module, x: torch.Tensor) -> collections.Counter[str]:
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    out: collections.Counter[str] = collections.Counter()
    for e in prof.events():
        if e.cpu_parent is None and e.name.startswith("aten::"):
            out[ATEN_KINDS.get(e.name, e.name)] += e.cpu_time_total * 1e-6
    return out


def networks_main(hw_path: str, path: Path, batch: int, rounds: int) -> None:
    nets = read_networks(path)
    built = [(n, n.build().eval(), torch.randn(batch, *n.input_shape)) for n in nets]
    samples: list[collections.defaultdict[str, list[float]]] = [
        collections.defaultdict(list) for _ in nets
    ]
    print(f"load average before {os.getloadavg()}")
    with torch.inference_mode():
        for _, model, x in built:
            model(x)
        for _ in range(rounds):
            for i, (_, model, x) in enumerate(built):
                for kind, t in _kind_times(model, x).items():
                    samples[i][kind].append(t)
    print(f"load average after {os.getloadavg()}")
    total: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for (net, _, _), meas in zip(built, samples, strict=True):
        pred: collections.Counter[str] = collections.Counter()
        for layer in analyze(list(net.lower(batch)), hw_path).layers:
            pred[layer.op] += layer.latency_s
        for kind in set(meas) | set(pred):
            total[kind][0] += statistics.median(meas[kind]) if kind in meas else 0.0
            total[kind][1] += pred.get(kind, 0.0)
    print(f"{len(nets)} networks at batch {batch}, per layer kind (ms, summed over networks)")
    for kind, (m, p) in sorted(total.items(), key=lambda kv: -kv[1][0]):
        print(
            f"  {kind:18s} measured {m * 1e3:9.2f} predicted {p * 1e3:9.2f}  "
            + (f"{p / m - 1:+.0%}" if m else "")
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("layers", "networks"))
    p.add_argument("--hw", required=True, help="profile: built-in name or TOML path")
    p.add_argument("--networks", default=None, help="networks: a file of network strings")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=None, help="default 15 (layers), 5 (networks)")
    args = p.parse_args()
    torch.set_num_threads(1)
    steady_state_allocator()
    if args.what == "layers":
        layers_main(args.hw, args.rounds or 15)
    elif args.networks is None:
        p.error("networks needs --networks FILE")
    else:
        networks_main(args.hw, Path(args.networks), args.batch, args.rounds or 5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
