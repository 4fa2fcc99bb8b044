#!/usr/bin/env bash
# One CPU session: calibrate this machine, then validate the calibrated profile on every
# recorded set at batch 1 and 32, all in one sitting (sessions hours apart run at
# different speeds on a shared VM, so a calibration is only checked against its own).
#
#   OUT=experiments/results/<cpu>_<date> bash experiments/cpu_session.sh
#   OUT=/tmp/dry QUICK=1 bash experiments/cpu_session.sh      # plumbing only
#
# Environment: OUT (required; the session's folder), PY (python; default .venv/bin/python
# where it exists, else python3), QUICK=1 (smaller calibration, 5 rounds per network).
# Writes OUT/calibrated_cpu.toml, OUT/calibration_cpu_raw.json, OUT/validation_cpu_*
# and OUT/session.log (lscpu, load averages, every command and its output). About
# 9 minutes on the 2-core development VMs. Development sets: the held-out list, the
# FBNet / ShuffleNet V2 families, the pure networks; report sets: the CIFAR and the
# torchvision classics (read them after a decision, not during it).
set -u
: "${OUT:?set OUT to the session folder, e.g. OUT=experiments/results/xeon_2026-12-04}"
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    CAL_FLAGS=(--quick)
    ROUNDS=(--rounds 5)
else
    CAL_FLAGS=()
    ROUNDS=()
fi
mkdir -p "$OUT"
LOG="$OUT/session.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

# run COMMAND...: log the command, its output and its exit status; a failure does not
# stop the steps after it, so whatever was measured is kept.
run() {
    echo "+ $* ($(date -u '+%F %T UTC'))" >>"$LOG"
    "$@" >>"$LOG" 2>&1
    echo "exit $? ($(date -u '+%T UTC'))" >>"$LOG"
}

{
    git rev-parse HEAD 2>&1 || true
    lscpu 2>&1 | grep -E "Model name|^CPU\(s\)|L1d|L2|L3" || true
    uptime
} >>"$LOG"
HW="$OUT/calibrated_cpu.toml"
run "$PY" -m hw_profiles calibrate "${CAL_FLAGS[@]}" --out "$HW" \
    --raw "$OUT/calibration_cpu_raw.json"
if [ -f "$HW" ]; then
    run "$PY" -m costmodel validate --hw "$HW" --device cpu --set heldout \
        --batch 1 --batch 32 "${ROUNDS[@]}" --out "$OUT"
    for list in unseen_families pure_networks cifar_classics torchvision_classics; do
        run "$PY" -m costmodel validate --hw "$HW" --device cpu \
            --networks "experiments/$list.txt" --batch 1 --batch 32 "${ROUNDS[@]}" \
            --out "$OUT"
    done
fi
uptime >>"$LOG"
grep -E "^\+ |^exit " "$LOG"
