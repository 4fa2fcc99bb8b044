"""Draw the held-out validation set once: experiments/heldout_networks.txt.

The networks come from families that calibration never samples (it draws from
the ``cifar`` search space, and so does the development set of
``python -m costmodel validate --set dev``): NAS-Bench-201 cells (CIFAR, 32x32),
once-for-all MobileNetV3 subnets at small resolutions (128-160, so a CPU run
stays short) and hand-designed ImageNet CNNs from ``searchspace``'s zoo
(MobileNetV2 and ShuffleNet V1 1.0x with two drawn group counts, at drawn
resolutions of 128-192). The draw is
frozen by ``HELDOUT_SEED``; the file it writes is the set, and nothing is to be
tuned on it: ``--set heldout`` only reports.

The first list drawn this way (seed 20261130) guided a design decision and is a
development set now (experiments/dev_networks_2026-11-30.txt, ``--set
dev-list``); this draw uses a new seed and skips every network listed there.

    PYTHONPATH=. python experiments/heldout_networks.py [--out FILE]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path

from searchspace import NB201Net, OFANet, mobilenet_v2, shufflenet_v1_like
from searchspace._nb201 import EDGES, OPS
from searchspace._ofa import DEPTHS, EXPANDS, KERNELS, STAGES
from searchspace._zoo import SHUFFLENET_WIDTHS

HELDOUT_SEED = 20261201  # 20261130 drew what is now the development list
N_NB201 = 10
N_OFA = 10
OFA_RESOLUTIONS = (128, 144, 160)
ZOO_RESOLUTIONS = (128, 144, 160, 176, 192)
OUT = Path(__file__).with_name("heldout_networks.txt")
DEV_LIST = Path(__file__).with_name("dev_networks_2026-11-30.txt")


def development_networks(path: Path = DEV_LIST) -> set[str]:
    """The strings of a development list (``#`` starts a comment line)."""
    lines = (ln.strip() for ln in path.read_text().splitlines())
    return {ln for ln in lines if ln and not ln.startswith("#")}


def draw(seed: int = HELDOUT_SEED) -> list[str]:
    """The held-out networks' strings, in a fixed order."""
    rng = random.Random(seed)
    seen = development_networks()
    nets: list[str] = []
    while len(nets) < N_NB201:
        ops = tuple(rng.choice(OPS) for _ in EDGES)
        s = NB201Net(ops).to_string()
        if s not in nets and s not in seen:
            nets.append(s)
    while len(nets) < N_NB201 + N_OFA:
        d = tuple(rng.choice(DEPTHS) for _ in STAGES)
        ks = tuple(rng.choice(KERNELS) for _ in range(sum(d)))
        e = tuple(rng.choice(EXPANDS) for _ in range(sum(d)))
        s = OFANet(rng.choice(OFA_RESOLUTIONS), ks, e, d).to_string()
        if s not in nets and s not in seen:
            nets.append(s)
    # One MobileNetV2 and two ShuffleNet V1 (distinct group counts), each at a drawn
    # resolution; the list of 2026-11-30 had them all at 160.
    nets.append(draw_new(rng, seen, lambda r: mobilenet_v2(resolution=r).to_string()))
    for g in rng.sample(sorted(SHUFFLENET_WIDTHS), 2):
        nets.append(
            draw_new(rng, seen, lambda r, g=g: shufflenet_v1_like(g, resolution=r).to_string())
        )
    return nets


def draw_new(rng: random.Random, seen: set[str], make: Callable[[int], str]) -> str:
    """``make(resolution)`` at the first drawn resolution whose network is not in ``seen``."""
    while True:
        s = make(rng.choice(ZOO_RESOLUTIONS))
        if s not in seen:
            return s


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
