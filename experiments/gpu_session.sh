#!/usr/bin/env bash
# One prepared GPU session: zero-shot validation of the built-in profile, CUDA calibration,
# validation of the calibrated profile, all on the machine this runs on. Written for a lent
# GPU with a few minutes of device time: every step has its own time limit and a failed
# step does not stop the next, so whatever was measured comes back.
#
#   bash experiments/gpu_session.sh                      # on the GPU machine
#   DEVICE=cpu PROFILE=calibrated-cpu QUICK=1 bash experiments/gpu_session.sh   # dry run
#
# Environment: OUT (folder for the bundle; default experiments/results/gpu_session),
# PY (python; default python3), DEVICE (default cuda), PROFILE (built-in profile for the
# zero-shot check; default h200), QUICK=1 (smaller calibration, fewer rounds: plumbing only),
# SCALE (multiplies every step's time limit; a CPU dry run needs about 4).
# Writes $OUT/gpu_session.tar.gz (results/, one folder per step) and $OUT/gpu_session.log.
# Everything fits in about 9 minutes on an H200; commit what comes back under
# experiments/results/<gpu>/ with the log.
set -u
OUT=${OUT:-experiments/results/gpu_session}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-h200}
QUICK=${QUICK:-0}
SCALE=${SCALE:-1}
R=$(mktemp -d)/results
mkdir -p "$R" "$OUT"
LOG="$OUT/gpu_session.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: run with a time limit, log its output and exit status.
step() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    say "step $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "step $name: exit $rc after $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >>"$R/steps.txt"
}

if [ "$QUICK" = 1 ]; then
    CAL_FLAGS=(--quick)
    ROUNDS=(--rounds 5)
else
    CAL_FLAGS=()
    ROUNDS=()
fi

say "gpu_session on $(hostname), device=$DEVICE profile=$PROFILE quick=$QUICK"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    git rev-parse HEAD 2>&1 || true
    "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
} >"$R/environment.txt" 2>&1
cat "$R/environment.txt" >>"$LOG"

# 1. Zero-shot: the built-in profile, nothing measured on this device, frozen lists.
for rt in eager graph; do
    step "zeroshot_$rt" 90 "$PY" -m costmodel validate --hw "$PROFILE" --device "$DEVICE" \
        --set heldout --batch 1 --batch 32 --runtime "$rt" "${ROUNDS[@]}" \
        --out "$R/zeroshot_$rt"
done
step zeroshot_unseen 60 "$PY" -m costmodel validate --hw "$PROFILE" --device "$DEVICE" \
    --networks experiments/unseen_families.txt --batch 1 --batch 32 "${ROUNDS[@]}" \
    --out "$R/zeroshot_unseen"

# 2. Calibrate this device (kernel sweep + 40 networks of the cifar space).
step calibrate 240 "$PY" -m hw_profiles calibrate --device "$DEVICE" "${CAL_FLAGS[@]}" \
    --out "$R/calibrate/calibrated_$DEVICE.toml" --raw "$R/calibrate/raw.json"

# 3. The calibrated profile on the frozen held-out list and the unseen families.
if [ -f "$R/calibrate/calibrated_$DEVICE.toml" ]; then
    step calibrated_heldout 60 "$PY" -m costmodel validate \
        --hw "$R/calibrate/calibrated_$DEVICE.toml" --device "$DEVICE" --set heldout \
        --batch 1 --batch 32 "${ROUNDS[@]}" --out "$R/calibrated_heldout"
    step calibrated_unseen 45 "$PY" -m costmodel validate \
        --hw "$R/calibrate/calibrated_$DEVICE.toml" --device "$DEVICE" \
        --networks experiments/unseen_families.txt --batch 1 --batch 32 "${ROUNDS[@]}" \
        --out "$R/calibrated_unseen"
fi

cp "$LOG" "$R/"
tar -czf "$OUT/gpu_session.tar.gz" -C "$(dirname "$R")" results
say "bundle: $OUT/gpu_session.tar.gz ($(du -h "$OUT/gpu_session.tar.gz" | cut -f1))"
cat "$R/steps.txt"
