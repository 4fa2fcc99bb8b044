#!/usr/bin/env bash
# Packaging check: what a user gets from `pip install roofnas`, away from this checkout.
# Builds the wheel, installs it (after pinned torch) into a fresh venv in a temp directory,
# and from a temp directory outside the checkout runs a short search by the shipped
# experiment's name, reads its front, exports a trial and an architecture string, rescales
# a calibrated profile and calls the console script. Any failure exits non-zero. Takes a few minutes (the venv).
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
step "roofnas --help"
"$WORK/venv/bin/roofnas" --help > /dev/null
step "ok"
