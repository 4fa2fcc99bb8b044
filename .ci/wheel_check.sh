#!/usr/bin/env bash
# Packaging check: what a user gets from `pip install roofnas`, away from this checkout.
# Builds the wheel, installs it (after pinned torch) into a fresh venv in a temp directory,
# and from a temp directory outside the checkout runs a short search by the shipped
# experiment's name, reads its front, exports a trial and an architecture string, rescales
# a calibrated profile, fits a built-in profile to a CSV and calls the console script.
# Any failure exits non-zero. Takes a few minutes (the venv).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
step() { echo "wheel_check: $*" >&2; }

step "building the wheel"
# From a copy of the checkout's files (tracked and untracked, not ignored): a build/ left
# in the checkout by an earlier build could carry files that are no longer in the tree.
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z -co --exclude-standard | (cd "$ROOT" && tar --null -T - -cf -) \
    | tar -xf - -C "$WORK/src"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/roofnas-*.whl)"

step "fresh venv with torch==2.13.0 and $(basename "$WHEEL")"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# torch pinned: 2.13.0 is a CPU build on local disk; an unpinned one downloads CUDA (GBs).
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q "$WHEEL"

# Outside the checkout, so nothing resolves from the source tree.
mkdir "$WORK/use" && cd "$WORK/use"
unset PYTHONPATH
"$VPY" -c "import search, sys; assert '$ROOT' not in search.__file__, search.__file__"
OUT="$WORK/use/runs"

step "search run --config default"
"$VPY" -m search run --trials 6 --config default --estimator none --no-mlflow --quiet \
    --out-dir "$OUT"
step "search pareto --json"
"$VPY" -m search pareto --storage "$OUT/optuna.journal" --study default --json > pareto.json
TRIAL="$("$VPY" -c "import json; print(json.load(open('pareto.json'))['pareto'][0]['trial'])")"
ARCH="$("$VPY" -c "import json; print(json.load(open('pareto.json'))['pareto'][0]['arch'])")"
step "search export --trial $TRIAL and --arch"
"$VPY" -m search export --storage "$OUT/optuna.journal" --study default --trial "$TRIAL" \
    --out trial.py
"$VPY" -m search export --arch "$ARCH" --out arch.py
"$VPY" trial.py > /dev/null  # the exported file runs on its own
"$VPY" -c "import json; assert json.load(open('trial.cost.json'))['feasible'] is True"
step "hw_profiles rescale of a calibrated profile (2 timing rounds)"
cp "$ROOT/experiments/results/epyc_op_chains/calibrated_cpu.toml" calibrated.toml
"$VPY" -m hw_profiles rescale --hw calibrated.toml --out now.toml --rounds 2 --min-error 0 \
    --json > rescale.json
"$VPY" -c "import hw_profiles, json; hw_profiles.load('now.toml'); \
assert json.load(open('rescale.json'))['rescale']['applied'] is True"
step "hw_profiles fit --base xeon-silver-4210r (the Contract) from NB201 cells and a factory"
cat > nets.py <<'PY'
import torch.nn as nn


def small():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
PY
"$VPY" - <<'PY'
import csv
import costmodel
from searchspace import NB201Net
cells = ["|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
         "|skip_connect~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|",
         "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
         "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2|"]
with open("m.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["model", "input_shape", "batch", "precision", "runtime", "latency_s"])
    for c in cells:  # "measured": the built-in profile's time, 1.3x slower
        t = costmodel.analyze(NB201Net.from_string(c).lower(1), "xeon-silver-4210r").total.latency_s
        w.writerow([c, "3x32x32", 1, "fp32", "eager", 1.3 * t])
    for b in (1, 4, 16):
        w.writerow(["nets.py:small", "3x32x32", b, "fp32", "eager", 1e-3 * b])
PY
"$VPY" -m hw_profiles fit --base xeon-silver-4210r --measurements m.csv --out fit.toml > fit.log
"$VPY" -c "import costmodel, hw_profiles, nets, tomllib; hw_profiles.load('fit.toml'); assert tomllib.load(open('fit.toml', 'rb'))['fit']['rows'] == 7; assert costmodel.profile(nets.small(), (1, 3, 32, 32), hw='fit.toml', runtime='eager').total.latency_s > 0"
step "roofnas --help"
"$WORK/venv/bin/roofnas" --help > /dev/null
step "ok"
