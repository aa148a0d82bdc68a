#!/usr/bin/env bash
# `make demo`: speak the demo corpus with espeak-ng (IEMOCAP layout), run the 5-fold leave-one-session-out protocol
# on the pretrained backbones that `make pretrained` wrote (examples/base.yaml + examples/demo.yaml), then classify
# one held-out clip from its speech alone, the transcript coming from Whisper-base (with faster-whisper, its
# CTranslate2 twin that `make pretrained` wrote: the same transcript as transformers' pipeline here, 5 s sooner).
# Leaves the table in demo_output/results.md and a Hub-ready model folder in demo_output/model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# On 2 cores, one torch thread per process: two threads that fight each other made a training step 25x slower here.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
start=$(date +%s)
"$PY" -m fdrl.data.demo_corpus --output_dir demo_data --seed 0 --workers 2
# A finished demo is never replaced: a second `make demo` carries on from demo_output's run records (the same
# settings; other settings are refused, naming them). To train anew: `rm -r demo_output` first.
# The protocol (`run_fdrl.py examples/base.yaml examples/demo.yaml --resume_from_checkpoint true`) and the closing
# clip, in one process (examples/demo.py): torch and transformers are imported once.
"$PY" examples/demo.py
echo "demo finished in $(( $(date +%s) - start )) s: table in demo_output/results.md, model in demo_output/model"
