#!/bin/bash
# The 2026-12-03 CPU session: calibrate with the classifier heads, then validate.
cd /work/main
OUT=experiments/results/epyc_2026-12-03
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
