#!/bin/bash
# A third session on an Intel Xeon VM, 2026-12-03 (a new session, hours after a and b): calibrate, validate.
cd /work/main
OUT=experiments/results/xeon_2026-12-03_c
PY=.venv/bin/python
set -x
echo "start $(date -u '+%F %T UTC')"
uptime
$PY -m hw_profiles calibrate --out $OUT/calibrated_cpu.toml --raw $OUT/calibration_cpu_raw.json
$PY -m costmodel validate --hw $OUT/calibrated_cpu.toml --device cpu --set heldout --batch 1 --batch 32 --out $OUT
$PY -m costmodel validate --hw $OUT/calibrated_cpu.toml --device cpu --networks experiments/unseen_families.txt --batch 1 --batch 32 --out $OUT
$PY -m costmodel validate --hw $OUT/calibrated_cpu.toml --device cpu --networks experiments/cifar_classics.txt --batch 1 --batch 32 --out $OUT
$PY -m costmodel validate --hw $OUT/calibrated_cpu.toml --device cpu --networks experiments/torchvision_classics.txt --batch 1 --batch 32 --out $OUT
uptime
echo "end $(date -u '+%F %T UTC')"
# Run by hand right after the script above (log: pure_networks.log), a development set
# that locates per-operation errors:
# .venv/bin/python -m costmodel validate --hw $OUT/calibrated_cpu.toml --device cpu --networks experiments/pure_networks.txt --batch 1 --batch 32 --out $OUT
