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
"$PY" run_fdrl.py examples/base.yaml examples/demo.yaml --resume_from_checkpoint true
# The training is over: this one process may use both cores.
OMP_NUM_THREADS=2 "$PY" - <<'PYTHON'
import glob
from transformers import pipeline
from transformers.utils import logging

from fdrl.inference.recognizer import load_recognizer

logging.set_verbosity_error()  # the recogniser imports this checkout's pipeline_fdrl, which registers the task again
logging.disable_progress_bar()
clip = sorted(glob.glob("demo_data/IEMOCAP_demo/Session5/sentences/wav/*/*.wav"))[0]
classifier = pipeline("multimodal-emotion-recognition", model="demo_output/model", trust_remote_code=True,
                      asr_model=load_recognizer("pretrained/whisper-base"))
result = classifier({"audio": clip})
print(f"\n{clip}, speech only: Whisper-base heard {result['transcript']!r}; "
      + ", ".join(f"{s['label']} {s['score']:.2f}" for s in result["scores"]))
PYTHON
echo "demo finished in $(( $(date +%s) - start )) s: table in demo_output/results.md, model in demo_output/model"
