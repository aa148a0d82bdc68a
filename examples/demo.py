"""`make demo`'s protocol and closing clip, in one process so that torch and transformers are imported once (about
5 s of a first run). `examples/demo.sh` runs it after speaking the corpus; on its own:

    OMP_NUM_THREADS=1 .venv/bin/python examples/demo.py

The protocol is exactly `python run_fdrl.py examples/base.yaml examples/demo.yaml --resume_from_checkpoint true`
(a finished demo is carried on from its run records, never replaced). Then one held-out session-5 clip is
classified from its speech alone, the transcript coming from Whisper-base through faster-whisper, its CTranslate2
twin that `make pretrained` wrote (the same transcript as transformers' pipeline here, 5 s sooner).
"""

import glob

import torch
from transformers import pipeline
from transformers.utils import logging

import run_fdrl
from fdrl.inference.recognizer import load_recognizer


def classify_clip(model="demo_output/model", asr_model="pretrained/whisper-base"):
    """The first session-5 clip of the demo corpus through the pipeline, from its speech alone; prints the result."""
    logging.set_verbosity_error()  # the recogniser imports pipeline_fdrl, which registers the task again
    logging.disable_progress_bar()
    clip = sorted(glob.glob("demo_data/IEMOCAP_demo/Session5/sentences/wav/*/*.wav"))[0]
    classifier = pipeline(
        "multimodal-emotion-recognition", model=model, trust_remote_code=True, asr_model=load_recognizer(asr_model)
    )
    result = classifier({"audio": clip})
    scores = ", ".join(f"{s['label']} {s['score']:.2f}" for s in result["scores"])
    print(f"\n{clip}, speech only: Whisper-base heard {result['transcript']!r}; {scores}")


if __name__ == "__main__":  # the protocol's worker processes import this file again (spawn): nothing runs then
    run_fdrl.main(["examples/base.yaml", "examples/demo.yaml", "--resume_from_checkpoint", "true"])
    torch.set_num_threads(2)  # the training is over: this process may use both cores (faster-whisper's too)
    classify_clip()
