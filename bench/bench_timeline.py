"""Old vs new speech recogniser, in one run: the web demo's 3 s clip with recognition (`EmotionDemo.predict` with an
empty transcript box) and the emotion timeline of a long recording (`fdrl.inference.timeline.recording_timeline`).

"old" is transformers' ASR pipeline on `pretrained/whisper-base` (what the app used before; for the timeline, 30 s
chunks with timestamps); "new" is faster-whisper (CTranslate2, int8) on `pretrained/whisper-base-ct2`, the same
weights. The long recording is demo-corpus utterances (Session 5, held out by `make demo`'s model) in dialogue order
with 0.6 s pauses, repeated up to `--duration` seconds; without the corpus, the app's example clips.

    .venv/bin/python bench/bench_timeline.py --threads 2                        # 3 s clip + 10-minute timeline
    .venv/bin/python bench/bench_timeline.py --duration 120 --old_duration 60   # shorter

Without `--model`, demo_output/model when it exists, else random weights of the demo preset (the latency hardly
depends on the weights). The machine's load average at start and end is in the JSON: on a shared machine, read the
old/new ratio rather than the absolute times.
"""

import argparse
import glob
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from bench_app import DEFAULT_MODEL, load_app, random_model_folder, timed, write_clip

import common
from common import logger


PRETRAINED = common.REPO / "pretrained"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="FDRL model folder (default: demo_output/model if it exists).")
    parser.add_argument(
        "--pretrained_dir",
        default=str(PRETRAINED),
        help="Folder with whisper-base/ and whisper-base-ct2/ (`make pretrained`).",
    )
    parser.add_argument("--data_dir", default=str(common.REPO / "demo_data" / "IEMOCAP_demo"))
    parser.add_argument("--repeats", type=int, default=5, help="Timed clip calls of each recogniser.")
    parser.add_argument("--duration", type=float, default=600.0, help="Long recording's length in seconds.")
    parser.add_argument(
        "--old_duration",
        type=float,
        default=None,
        help="Time the old recogniser on only the first this many seconds (default: all).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/timeline_cpu.json).")
    parser.set_defaults(device="cpu", dtype="fp32")
    return parser.parse_args(argv)


def long_recording(data_dir, duration, rate=16000, pause=0.6):
    """Utterances joined with pauses up to `duration` s: (samples at 16 kHz, how many utterances, source)."""
    from fdrl.inference.recognizer import to_16k_mono

    files = sorted(glob.glob(str(Path(data_dir) / "Session5" / "sentences" / "wav" / "*" / "*.wav")))
    source = "demo corpus Session 5"
    if not files:
        files, source = sorted(glob.glob(str(common.REPO / "app" / "examples" / "*.wav"))), "app/examples"
    parts, total, count = [], 0, 0
    silence = np.zeros(int(pause * rate), np.float32)
    while total < duration * rate:
        samples, file_rate = sf.read(files[count % len(files)], dtype="float32")
        parts += [to_16k_mono(samples, file_rate), silence]
        total += len(parts[-2]) + len(silence)
        count += 1
    return np.concatenate(parts)[: int(duration * rate)], count, source


def main(argv=None):
    args = parse_args(argv)
    device, _, machine = common.start(args)
    app = load_app()
    from fdrl.inference.recognizer import FasterWhisperRecognizer, TransformersRecognizer
    from fdrl.inference.timeline import recording_timeline

    pretrained = Path(args.pretrained_dir)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.model:
            model, described = Path(args.model), str(args.model)
        elif DEFAULT_MODEL.is_dir():
            model, described = DEFAULT_MODEL, "demo_output/model"
        else:
            texts = [text for _, text in app.example_rows()]
            model, described = random_model_folder("demo", scratch / "model", texts), "random, demo preset"
        load = {}
        load["old_s"], old = timed(TransformersRecognizer, pretrained / "whisper-base", "cpu")
        load["new_s"], new = timed(FasterWhisperRecognizer, pretrained / "whisper-base-ct2")
        demos = {
            "old": app.EmotionDemo(app.load_classifier(model, asr_model=old)),
            "new": app.EmotionDemo(app.load_classifier(model, asr_model=new)),
        }

        # 1. the app's 3 s clip, transcript box empty: one untimed call each, then interleaved
        clip = write_clip(scratch / "clip.wav")
        times, transcripts = {name: [] for name in demos}, {}
        for name, demo in demos.items():
            prediction = demo.predict(clip, "")
            if not isinstance(prediction, app.Prediction):
                raise RuntimeError(f"{name}: the app refused the clip: {prediction}")
            transcripts[name] = prediction.transcript
        for _ in range(args.repeats):
            for name, demo in demos.items():
                times[name].append(timed(demo.predict, clip, "")[0])
        clip_results = {
            name: {"latency_s": common.summarize(times[name]), "transcript": transcripts[name]} for name in demos
        }
        for name in demos:
            logger.info(
                f"3 s clip, {name}: median {clip_results[name]['latency_s']['median']:.2f} s ({transcripts[name]!r})"
            )

        # 2. the long recording's timeline
        samples, utterances, source = long_recording(args.data_dir, args.duration)
        long_results = {}
        for name, recognizer in (("new", new), ("old", old)):
            seconds = args.duration if name == "new" or args.old_duration is None else args.old_duration
            part = samples[: int(seconds * 16000)]
            start = time.perf_counter()
            timeline = recording_timeline(part, demos[name].classifier, recognizer, sampling_rate=16000, progress=False)
            wall = time.perf_counter() - start
            segments = timeline["segments"]
            long_results[name] = {
                "recording_s": round(len(part) / 16000, 1),
                "wall_s": round(wall, 2),
                "real_time_factor": round(wall / (len(part) / 16000), 4),
                "segments": len(segments),
                "labelled_segments": sum("label" in s for s in segments),
                "longest_segment_s": round(max((s["end"] - s["start"] for s in segments), default=0.0), 2),
            }
            logger.info(f"timeline, {name}: {long_results[name]}")
    results = {
        "load_s": load,
        "clip_with_recognition": clip_results,
        "long_recording_timeline": long_results,
        "clip_speedup_median": clip_results["old"]["latency_s"]["median"] / clip_results["new"]["latency_s"]["median"],
        "timeline_speedup_rtf": long_results["old"]["real_time_factor"] / long_results["new"]["real_time_factor"],
    }
    settings = {
        "model": described,
        "old": "transformers ASR pipeline, pretrained/whisper-base (float32)",
        "new": "faster-whisper 1.2.1 int8, pretrained/whisper-base-ct2 (greedy, word timestamps)",
        "clip": "app/examples/sad.wav padded with silence to 3.0 s, EmotionDemo.predict(path, '')",
        "long_recording": f"{source}: {utterances} utterances with 0.6 s pauses, cut to {args.duration} s",
        "repeats": args.repeats,
        "seed": args.seed,
    }
    output = args.output or common.RESULTS_DIR / "timeline_cpu.json"
    return common.write_result(output, "bench_timeline.py", machine, settings, results)


if __name__ == "__main__":
    main()
