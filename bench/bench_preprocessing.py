"""Preprocessing throughput per core: decode, resample, feature extraction and tokenisation, each stage alone.

One process, torch threads = 1, tokenizer parallelism off, so every figure is utterances/s for one core.
IEMOCAP-like utterances are written as temporary 16 kHz WAVs (16-bit PCM, as IEMOCAP ships) and decoded with
soundfile and torchaudio; resampling from 44.1 and 22.05 kHz uses torchaudio.functional.resample as
FDRLProcessor does; feature extraction (normalisation + padding) and tokenisation are FDRLProcessor's own
Wav2Vec2FeatureExtractor and WordPiece tokenizer, called on batches; the last stage is the whole processor call.

    .venv/bin/python bench/bench_preprocessing.py                   # about 2 minutes
"""

import os


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: no Rust thread pool
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

import common  # noqa: E402
from common import logger  # noqa: E402
from processing_fdrl import FDRLProcessor  # noqa: E402 (common puts the repository root on the path)


# Transcript words: frequent words of conversational English, so WordPiece keeps most of them whole.
WORDS = (
    "i you we they he she it what that this there here why how when where yes no okay well so oh just really "
    "know think want need go going get got come came said say tell told do did don't can't won't not never "
    "always again now then today tomorrow yesterday time day night home work money car house job life people "
    "man woman friend mother father baby love hate happy sad angry sorry afraid tired good bad great fine right "
    "wrong sure maybe something nothing everything anything all some more much very too little big long "
    "married wedding party letter phone call wait talk listen look see hear feel believe understand remember"
).split()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_utterances", type=int, default=300, help="IEMOCAP-like utterances per pass.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed passes over all utterances, per stage.")
    parser.add_argument(
        "--batch_size",
        type=int,
        default=8,
        help="Utterances per call of the feature extractor, the tokenizer and the processor.",
    )
    parser.add_argument("--vocab_size", type=int, default=8000, help="WordPiece vocabulary to train.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the durations, signals and transcripts.")
    parser.add_argument("--tiny", action="store_true", help="A few utterances, one pass (smoke test).")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/preprocessing_cpu.json).")
    return parser.parse_args(argv)


def make_corpus(rng, count, folder):
    """Durations, 16 kHz WAV files and transcripts of `count` IEMOCAP-like utterances."""
    durations = common.iemocap_durations(rng, count)
    paths = []
    for index, seconds in enumerate(durations):
        path = Path(folder) / f"utt{index:04d}.wav"
        signal = (0.1 * rng.standard_normal(int(round(seconds * common.SAMPLING_RATE)))).astype(np.float32)
        soundfile.write(path, signal, common.SAMPLING_RATE, subtype="PCM_16")
        paths.append(path)
    words_per_text = np.maximum(common.token_counts(rng, count) - 2, 1)
    texts = [" ".join(rng.choice(WORDS, size=n)) for n in words_per_text]
    return durations, paths, texts


def in_batches(items, batch_size):
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def time_stage(name, calls, count, repeats, audio_seconds=None):
    """Run every call `repeats` times over; utterances/s per pass, median and IQR."""
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for call in calls:
            call()
        passes.append(time.perf_counter() - start)
    seconds = common.summarize(passes)
    rates = common.summarize([count / s for s in passes])
    row = {"utterances_per_s": rates, "ms_per_utterance": 1e3 * seconds["median"] / count, "pass_s": seconds}
    if audio_seconds is not None:
        row["audio_seconds_per_s"] = audio_seconds / seconds["median"]
    logger.info(f"{name}: {rates['median']:.4g} utterances/s ({row['ms_per_utterance']:.3g} ms each)")
    return row


def stage_calls(processor, paths, texts, waveforms, batch_size):
    """Zero-argument calls per stage; each list covers every utterance once."""
    resample = torchaudio.functional.resample
    audio_16k = [soundfile.read(path, dtype="float32")[0] for path in paths]
    feature_extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    audio_batches, text_batches = in_batches(audio_16k, batch_size), in_batches(texts, batch_size)
    return {
        "decode_soundfile": [lambda p=p: soundfile.read(p, dtype="float32") for p in paths],
        "decode_torchaudio": [lambda p=p: torchaudio.load(p) for p in paths],
        "resample_44100_to_16000": [lambda w=w: resample(w, 44100, 16000) for w in waveforms[44100]],
        "resample_22050_to_16000": [lambda w=w: resample(w, 22050, 16000) for w in waveforms[22050]],
        "feature_extraction": [
            lambda b=b: feature_extractor(
                b, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt"
            )
            for b in audio_batches
        ],
        "tokenization": [lambda b=b: tokenizer(b, padding=True, return_tensors="pt") for b in text_batches],
        "processor_16k_audio_and_text": [
            lambda a=a, t=t: processor(audio=a, text=t, sampling_rate=16000)
            for a, t in zip(audio_batches, text_batches)
        ],
    }


def main(argv=None):
    args = parse_args(argv)
    common.setup_logging()
    torch.set_num_threads(1)
    if args.tiny:
        args.num_utterances, args.repeats, args.batch_size, args.vocab_size = 6, 1, 2, 200
    machine = common.machine_info(torch.device("cpu"))
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory() as folder:
        # Corpus: WAVs at 16 kHz on disk; the same durations at 44.1 and 22.05 kHz in memory
        durations, paths, texts = make_corpus(rng, args.num_utterances, folder)
        waveforms = {
            rate: [
                torch.from_numpy(0.1 * rng.standard_normal(int(round(s * rate))).astype(np.float32)) for s in durations
            ]
            for rate in (44100, 22050)
        }
        processor = FDRLProcessor.from_texts(texts, vocab_size=args.vocab_size)
        tokens = [len(ids) for ids in processor.tokenizer(texts)["input_ids"]]

        # Stages, one at a time
        calls = stage_calls(processor, paths, texts, waveforms, args.batch_size)
        audio_stages = {
            "decode_soundfile",
            "decode_torchaudio",
            "resample_44100_to_16000",
            "resample_22050_to_16000",
            "feature_extraction",
            "processor_16k_audio_and_text",
        }
        results = {"stages": {}}
        for name, stage in calls.items():
            for call in stage[:1]:  # warm-up: imports, kernel caches
                call()
            audio_seconds = float(durations.sum()) if name in audio_stages else None
            results["stages"][name] = time_stage(name, stage, len(paths), args.repeats, audio_seconds)

    # A 16 kHz utterance's whole path on one core: decode + processor call (features and tokens)
    stages = results["stages"]
    pipeline_ms = sum(stages[name]["ms_per_utterance"] for name in ("decode_soundfile", "processor_16k_audio_and_text"))
    results["pipeline_16k_utterances_per_s_per_core"] = 1e3 / pipeline_ms
    results["pipeline_44k_utterances_per_s_per_core"] = 1e3 / (
        pipeline_ms + stages["resample_44100_to_16000"]["ms_per_utterance"]
    )
    settings = {
        "num_utterances": args.num_utterances,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "vocab_size": len(processor.tokenizer),
        "seed": args.seed,
        "torch_threads": 1,
        "tokenizers_parallelism": os.environ["TOKENIZERS_PARALLELISM"],
        "wav_format": "16 kHz mono PCM_16",
        "total_audio_s": float(durations.sum()),
        "mean_duration_s": float(durations.mean()),
        "mean_tokens": float(np.mean(tokens)),
        "torchaudio": torchaudio.__version__,
        "soundfile": soundfile.__version__,
    }
    output = args.output or common.RESULTS_DIR / "preprocessing_cpu.json"
    payload = common.write_result(output, "bench_preprocessing.py", machine, settings, results)
    print_table(results)
    return payload


def print_table(results):
    print(f"{'stage (one core)':32}{'utterances/s':>14}{'IQR':>10}{'ms each':>10}")
    for name, row in results["stages"].items():
        rates = row["utterances_per_s"]
        print(f"{name:32}{rates['median']:>14.4g}{rates['iqr']:>10.3g}{row['ms_per_utterance']:>10.3g}")
    print(
        f"decode + processor at 16 kHz: {results['pipeline_16k_utterances_per_s_per_core']:.4g} utterances/s "
        f"per core; with resampling from 44.1 kHz: {results['pipeline_44k_utterances_per_s_per_core']:.4g}"
    )


if __name__ == "__main__":
    main()
