#!/usr/bin/env bash
# `make demo`: speak the demo corpus with espeak-ng (IEMOCAP layout), then run the 5-fold leave-one-session-out
# protocol with a small FDRL on CPU (examples/demo.yaml). Leaves the fold table in demo_output/results.md and a
# loadable model folder in demo_output/model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# On 2 cores, one torch thread for training and one data-loading worker beat two threads that fight each other
# (measured: a step of the demo speech model took 10x longer with 2 threads under load).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
start=$(date +%s)
"$PY" -m fdrl.data.demo_corpus --output_dir demo_data --seed 0 --workers 2
"$PY" run_fdrl.py examples/demo.yaml
echo "demo finished in $(( $(date +%s) - start )) s: fold table in demo_output/results.md, model in demo_output/model"
