"""Draw the held-out validation set once: experiments/heldout_networks.txt.

The networks come from families that calibration never samples (it draws from
the ``cifar`` search space, and so does the development set of
``python -m costmodel validate --set dev``): NAS-Bench-201 cells (CIFAR, 32x32),
once-for-all MobileNetV3 subnets at small resolutions (128-160, so a CPU run
stays short) and two hand-designed ImageNet CNNs from ``searchspace``'s zoo
(MobileNetV2, ShuffleNet V1 1.0x with 3 and 8 groups, at 160x160). The draw is
frozen by ``HELDOUT_SEED``; the file it writes is the set, and nothing is to be
tuned on it: ``--set heldout`` only reports.

    PYTHONPATH=. python experiments/heldout_networks.py [--out FILE]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from searchspace import NB201Net, OFANet, mobilenet_v2, shufflenet_v1_like
from searchspace._nb201 import EDGES, OPS
from searchspace._ofa import DEPTHS, EXPANDS, KERNELS, STAGES

HELDOUT_SEED = 20261130
N_NB201 = 10
N_OFA = 10
OFA_RESOLUTIONS = (128, 144, 160)
ZOO_RESOLUTION = 160
OUT = Path(__file__).with_name("heldout_networks.txt")


def draw(seed: int = HELDOUT_SEED) -> list[str]:
    """The held-out networks' strings, in a fixed order."""
    rng = random.Random(seed)
    nets: list[str] = []
    while len(nets) < N_NB201:
        ops = tuple(rng.choice(OPS) for _ in EDGES)
        s = NB201Net(ops).to_string()
        if s not in nets:
            nets.append(s)
    for _ in range(N_OFA):
        d = tuple(rng.choice(DEPTHS) for _ in STAGES)
        ks = tuple(rng.choice(KERNELS) for _ in range(sum(d)))
        e = tuple(rng.choice(EXPANDS) for _ in range(sum(d)))
        nets.append(OFANet(rng.choice(OFA_RESOLUTIONS), ks, e, d).to_string())
    nets.append(mobilenet_v2(resolution=ZOO_RESOLUTION).to_string())
    nets += [shufflenet_v1_like(g, resolution=ZOO_RESOLUTION).to_string() for g in (3, 8)]
    return nets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    header = f"# held-out validation set: experiments/heldout_networks.py, seed {HELDOUT_SEED}"
    Path(args.out).write_text("\n".join([header, *draw()]) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
