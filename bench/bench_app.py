"""Latency of the web demo's prediction (app/app.py: `EmotionDemo.predict`, everything a click costs but the browser)
for a 3 s clip: decoding the file, the speech recogniser when the transcript box is empty, the processor and FDRL.

The clip is app/examples/sad.wav (2.70 s of espeak-ng speech) followed by silence up to 3.0 s. "typed_transcript"
passes its transcript; "with_asr" leaves the box empty, so the speech recogniser transcribes it first. The two
are interleaved after one untimed call each.

    .venv/bin/python bench/bench_app.py --asr_model pretrained/whisper-base                  # make demo's model
    .venv/bin/python bench/bench_app.py --preset base --asr_model pretrained/whisper-base    # base shapes
    .venv/bin/python bench/bench_app.py --model demo_output/model --asr_model none

Without `--model`, it runs demo_output/model when that folder exists, else random weights of `--preset`'s shapes
(the latency does not depend on the weights).
"""

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import common
from common import logger
from configuration_fdrl import FDRLConfig
from fdrl.presets import TINY
from modeling_fdrl import FDRLModel
from pipeline_fdrl import save_pipeline
from processing_fdrl import FDRLProcessor


CLIP, CLIP_SECONDS = common.REPO / "app" / "examples" / "sad.wav", 3.0
DEFAULT_MODEL = common.REPO / "demo_output" / "model"
DEFAULT_ASR_MODEL = common.REPO / "pretrained" / "whisper-base"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="FDRL model folder (default: demo_output/model if it exists).")
    parser.add_argument(
        "--preset",
        default="demo",
        choices=["tiny", "demo", "base"],
        help="Shapes of the random model used when there is no --model folder (fdrl.presets.PRESETS).",
    )
    parser.add_argument(
        "--asr_model",
        default=None,
        help="Speech recogniser; 'none' to time typed transcripts only (default: "
        "pretrained/whisper-base if it exists).",
    )
    parser.add_argument("--repeats", type=int, default=10, help="Timed calls of each kind.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where the models run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random model.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument(
        "--tiny", action="store_true", help="Smoke test: a tiny random model and a tiny random CTC speech recogniser."
    )
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/app_<device>.json).")
    parser.set_defaults(dtype="fp32")  # the pipeline runs the model in float32
    return parser.parse_args(argv)


def load_app():
    """app/app.py by its path: the Space layout has no package around it."""
    spec = importlib.util.spec_from_file_location("fdrl_app", common.REPO / "app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_model_folder(preset, folder, texts):
    """Random weights of a preset's shapes, saved as a model folder (the latency does not depend on the weights)."""
    from fdrl.presets import PRESETS, preset_backbone_configs

    processor = FDRLProcessor.from_texts(texts, vocab_size=1000)
    audio_config, text_config = preset_backbone_configs(preset, len(processor.tokenizer))
    labels = {0: "ang", 1: "hap", 2: "neu", 3: "sad"}
    config = FDRLConfig(audio_config=audio_config, text_config=text_config, id2label=labels, **PRESETS[preset]["fdrl"])
    return save_pipeline(FDRLModel(config).eval(), processor, folder)


def tiny_asr_pipeline(folder):
    """A tiny random wav2vec2 CTC recogniser (meaningless letters), for --tiny."""
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, pipeline

    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    config = Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0, **TINY["audio"])  # the tiny preset's shapes
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.bias[0] = -5.0  # never blank: a non-empty transcript
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>")
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    return pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        device="cpu",
    )


def write_clip(path):
    """CLIP followed by silence, CLIP_SECONDS long, 16-bit PCM like the examples."""
    samples, rate = sf.read(CLIP, dtype="int16")
    padded = np.zeros(round(CLIP_SECONDS * rate), dtype=np.int16)
    padded[: min(len(samples), len(padded))] = samples[: len(padded)]
    sf.write(path, padded, rate, subtype="PCM_16")
    return str(path)


def resolve(args, app, scratch):
    """(model folder, what it is, speech recogniser or None, what it is)."""
    texts = [text for _, text in app.example_rows()]
    if args.tiny:
        return (
            random_model_folder("tiny", scratch / "model", texts),
            "random, tiny",
            tiny_asr_pipeline(scratch),
            "random tiny wav2vec2 CTC",
        )
    if args.model:
        model, described = Path(args.model), str(args.model)
    elif DEFAULT_MODEL.is_dir():
        model, described = DEFAULT_MODEL, "demo_output/model"
    else:
        model, described = random_model_folder(args.preset, scratch / "model", texts), f"random, {args.preset} preset"
    asr = args.asr_model or (str(DEFAULT_ASR_MODEL) if DEFAULT_ASR_MODEL.is_dir() else "none")
    if asr.lower() == "none":
        return model, described, None, "none"
    return model, described, asr, describe_asr(asr)


def describe_asr(asr):
    """The recogniser's folder name, and the model it stands for when fdrl.pretrained made it."""
    provenance = Path(asr) / "fdrl_provenance.json"
    if provenance.is_file():
        return f"{Path(asr).name} ({json.loads(provenance.read_text()).get('stands_for', 'converted')})"
    return asr


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main(argv=None):
    args = parse_args(argv)
    device, _, machine = common.start(args)
    app = load_app()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)

        # The app's predictor, as app.main builds it
        model, model_described, asr, asr_described = resolve(args, app, scratch)
        load_s, classifier = timed(app.load_classifier, model, asr, str(device))
        demo = app.EmotionDemo(classifier)
        clip = write_clip(scratch / "clip.wav")
        transcript = CLIP.with_suffix(".txt").read_text().strip()
        kinds = {"typed_transcript": transcript, **({"with_asr": ""} if asr is not None else {})}

        # One untimed call of each kind, then the timed calls interleaved
        times, outputs = {kind: [] for kind in kinds}, {}
        for kind, text in kinds.items():
            outputs[kind] = demo.predict(clip, text)
            if not isinstance(outputs[kind], app.Prediction):
                raise RuntimeError(f"{kind}: the app refused the clip: {outputs[kind]}")
        for _ in range(args.repeats):
            for kind, text in kinds.items():
                times[kind].append(timed(demo.predict, clip, text)[0])

    results = {"load_s": load_s}
    for kind in kinds:
        results[kind] = {
            "latency_s": common.summarize(times[kind]),
            "transcript": outputs[kind].transcript,
            "transcript_source": outputs[kind].transcript_source,
        }
        logger.info(
            f"{kind}: median {results[kind]['latency_s']['median']:.3f} s, "
            f"p90 {results[kind]['latency_s']['p90']:.3f} s ({outputs[kind].transcript!r})"
        )
    if asr is None:
        results["with_asr"] = None
    settings = {
        "model": model_described,
        "asr_model": asr_described,
        "clip": f"app/examples/{CLIP.name} padded with silence to {CLIP_SECONDS} s",
        "clip_s": CLIP_SECONDS,
        "repeats": args.repeats,
        "seed": args.seed,
        "mode": "EmotionDemo.predict(path, transcript): decode + (ASR) + processor + FDRL, in one process",
    }
    output = args.output or common.RESULTS_DIR / f"app_{device.type}.json"
    return common.write_result(output, "bench_app.py", machine, settings, results)


if __name__ == "__main__":
    main()
