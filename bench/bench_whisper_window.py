"""What Whisper on the clip's own length costs in fidelity, and what it saves in time, against the 30 s window.

For each espeak-ng clip, the speech backbone's pooled vector (mean of the last hidden states over the encoder frames
that cover the speech) is computed twice:

- **30 s window**: transformers' `WhisperEncoder` as Whisper runs it, on `WhisperFeatureExtractor`'s 3000 mel frames;
- **own length**: FDRL's `FDRLWhisperEncoder` on `FDRLProcessor`'s log-mel, padded to a whole second past the clip,
  the first N position rows, padded frames masked (and, for comparison, the same without the mask).

It reports the cosine similarity of the two vectors per clip (mean, min) and the seconds per utterance of the
feature extraction and the encoder on each path (batch 1, torch.inference_mode).

    .venv/bin/python bench/bench_whisper_window.py --threads 1      # pretrained/whisper-base, 16 clips, ~2 minutes
    .venv/bin/python bench/bench_whisper_window.py --tiny           # random tiny Whisper, noise clips (smoke test)
"""

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

import common
from common import logger
from modeling_fdrl import FDRLWhisperEncoder, pool_audio
from processing_fdrl import FDRLProcessor


SENTENCES = [
    "I can't believe you did that.",
    "The weather is lovely today, let's go for a walk.",
    "Why would anyone say something like that to me?",
    "Okay.",
    "I have been waiting here for more than two hours and nobody called.",
    "That is the best news I have heard all year!",
    "Please leave me alone.",
    "We lost the house, and I don't know what to do now.",
]
VOICES = ["en-us", "en-us+f3"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=str(common.REPO / "pretrained" / "whisper-base"),
        help="A Whisper folder or Hub id (`make pretrained` writes pretrained/whisper-base).",
    )
    parser.add_argument("--voices", nargs="+", default=VOICES, help="espeak-ng voices; each speaks every sentence.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed passes of the first clip on each path.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the tiny model and its noise clips.")
    parser.add_argument("--tiny", action="store_true", help="A random tiny Whisper on noise clips (smoke test).")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/whisper_window_cpu.json).")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", choices=["fp32"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_models(args):
    """(transformers' WhisperEncoder, FDRLWhisperEncoder with the same weights, FDRLProcessor for Whisper)."""
    from transformers import AutoFeatureExtractor, AutoTokenizer, WhisperConfig, WhisperModel

    if args.tiny:
        config = WhisperConfig(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=37,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=37,
            vocab_size=100,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=2,
        )
        whisper = WhisperModel(config)
        processor = FDRLProcessor.from_texts(
            ["a tiny vocabulary"], vocab_size=30, audio_config=config, max_duration=30.0
        )
    else:
        whisper = WhisperModel.from_pretrained(args.model)
        processor = FDRLProcessor(
            AutoFeatureExtractor.from_pretrained(args.model),
            AutoTokenizer.from_pretrained(args.model),
            max_duration=30.0,
        )
    standard = whisper.encoder.eval()
    own_length = FDRLWhisperEncoder(whisper.config).eval()
    own_length.load_state_dict(standard.state_dict())
    return standard, own_length, processor


def clips(args):
    """[(name, 16 kHz float32 waveform)]: espeak-ng speech, or noise bursts of fixed lengths with --tiny."""
    if args.tiny:
        rng = np.random.default_rng(args.seed)
        return [(f"noise {n / 16000:.1f} s", (0.1 * rng.standard_normal(n)).astype(np.float32)) for n in (8000, 24000)]
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        for voice in args.voices:
            for i, sentence in enumerate(SENTENCES):
                path = Path(scratch) / f"{voice}-{i}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), sentence], check=True)
                waveform, rate = soundfile.read(path, dtype="float32")
                waveform = torchaudio.functional.resample(torch.from_numpy(waveform), rate, 16000).numpy()
                found.append((f"{voice}: {sentence}", waveform))
    return found


def timed(function, *args):
    start = time.perf_counter()
    with torch.inference_mode():
        result = function(*args)
    return result, time.perf_counter() - start


def speech_frames(mel_mask):
    return int((int(mel_mask.sum()) - 1) // 2 + 1)  # the stride-2 convolution


def window_30s(standard, extractor, waveform):
    features = extractor(waveform, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
    return features["input_features"], speech_frames(features["attention_mask"])


def measure_clip(standard, own_length, processor, waveform):
    extractor = processor.feature_extractor
    (features_30s, frames), extract_30s = timed(window_30s, standard, extractor, waveform)
    hidden_30s, encode_30s = timed(lambda x: standard(x).last_hidden_state, features_30s)
    pooled_30s = hidden_30s[0, :frames].mean(0)

    own, extract_own = timed(lambda w: processor(audio=w, sampling_rate=16000), waveform)
    pooled_masked, encode_own = timed(pool_audio, own_length, own["input_features"], own["audio_attention_mask"])
    with torch.inference_mode():
        unmasked = own_length(own["input_features"]).last_hidden_state[0, :frames].mean(0)
    cosine = torch.nn.functional.cosine_similarity
    return {
        "duration_s": len(waveform) / 16000,
        "own_window_s": own["input_features"].shape[-1] / 100,
        "speech_frames": frames,
        "cosine_masked": float(cosine(pooled_masked[0], pooled_30s, dim=0)),
        "cosine_unmasked": float(cosine(unmasked, pooled_30s, dim=0)),
        "seconds": {
            "features_30s": extract_30s,
            "encoder_30s": encode_30s,
            "features_own": extract_own,
            "encoder_own": encode_own,
        },
    }


def main(argv=None):
    args = parse_args(argv)
    _, _, machine = common.start(args)
    standard, own_length, processor = load_models(args)
    inputs = clips(args)
    for _ in range(args.warmup):
        measure_clip(standard, own_length, processor, inputs[0][1])

    per_clip = {}
    for name, waveform in inputs:
        per_clip[name] = measure_clip(standard, own_length, processor, waveform)
        row = per_clip[name]
        logger.info(
            f"{row['duration_s']:.2f} s: cosine {row['cosine_masked']:.4f} (unmasked "
            f"{row['cosine_unmasked']:.4f}), encoder {row['seconds']['encoder_30s']:.2f} s -> "
            f"{row['seconds']['encoder_own']:.2f} s  {name}"
        )
    rows = list(per_clip.values())
    results = {
        "cosine_masked": common.summarize([r["cosine_masked"] for r in rows]),
        "cosine_unmasked": common.summarize([r["cosine_unmasked"] for r in rows]),
        "seconds_per_utterance": {
            key: common.summarize([r["seconds"][key] for r in rows]) for key in rows[0]["seconds"]
        },
        "duration_s": common.summarize([r["duration_s"] for r in rows]),
        "per_clip": per_clip,
    }
    timing = results["seconds_per_utterance"]
    results["speedup_encoder_median"] = timing["encoder_30s"]["median"] / timing["encoder_own"]["median"]
    model = Path(args.model).resolve()
    model = str(model.relative_to(common.REPO)) if model.is_relative_to(common.REPO) else args.model
    settings = {
        "model": "tiny random Whisper" if args.tiny else model,
        "voices": args.voices,
        "sentences": len(SENTENCES),
        "warmup": args.warmup,
        "seed": args.seed,
        "batch_size": 1,
        "pooling": "mean over the encoder frames covering the speech",
    }
    common.write_result(
        args.output or common.RESULTS_DIR / "whisper_window_cpu.json",
        "bench_whisper_window.py",
        machine,
        settings,
        results,
    )
    print_table(results)
    return results


def print_table(results):
    masked, unmasked, timing = results["cosine_masked"], results["cosine_unmasked"], results["seconds_per_utterance"]
    print(
        f"cosine to the 30 s window: own length, masked: mean {masked['mean']:.4f}, min {masked['min']:.4f}; "
        f"unmasked: mean {unmasked['mean']:.4f}, min {unmasked['min']:.4f} (n={masked['n']})"
    )
    for key in ("features_30s", "encoder_30s", "features_own", "encoder_own"):
        print(f"{key:>13}: median {timing[key]['median']:.3f} s per utterance")
    print(f"encoder speed-up (medians): {results['speedup_encoder_median']:.1f}x")


if __name__ == "__main__":
    main()
