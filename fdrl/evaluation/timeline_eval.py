"""How well the emotion timeline finds and labels sentences: `fdrl-timeline-eval` (or `python -m
fdrl.evaluation.timeline_eval`).

    fdrl-timeline-eval --model demo_output/model --data_dir demo_data/IEMOCAP_demo --sessions 5 \\
        --output experiments/timeline/results.json --plot experiments/timeline/recording1.png

Long recordings are built from the held-out session(s) of a corpus in IEMOCAP's layout (`make demo`'s model is the
last fold's, trained without Session 5): the session's utterances in dialogue order, `--utterances_per_recording` to
a recording, joined with `--pause` seconds of silence, so every sentence's label, words and boundaries are known.
Each recording goes through `fdrl.inference.timeline.recording_timeline` (recogniser + FDRL), and is compared with
the truth:

- segment accuracy: the labelled segments whose label is that of the true sentence they overlap most;
- time accuracy: the share of the true speech time whose segment carries the true label;
- sentence accuracy: each true sentence takes the label of the segment that overlaps it most (UAR too), next to
  the same model on the same sentences cut at their true boundaries with their true words (the reference);
- boundaries: true and found segment counts, the sentences that get one segment of their own (mutual best overlap),
  the mean start and end error of those, and the share with both ends within `--tolerance` seconds;
- real-time factor: wall time over recording time.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from fdrl.data.audio import SAMPLING_RATE


logger = logging.getLogger(__name__)


def build_recordings(examples, per_recording, pause, rate=SAMPLING_RATE):
    """[(samples, [{"start", "end", "label", "text", "id"}])]: `examples` in order, `per_recording` at a time."""
    from fdrl.data.audio import decode_audio
    from fdrl.inference.recognizer import to_16k_mono

    recordings = []
    for first in range(0, len(examples), per_recording):
        group = examples[first : first + per_recording]
        parts, truth, now = [np.zeros(int(pause * rate), np.float32)], [], pause
        for example in group:
            array, sampling_rate = decode_audio(example["audio"], example["id"])
            samples = to_16k_mono(array, sampling_rate)
            truth.append(
                {
                    "id": example["id"],
                    "start": round(now, 3),
                    "end": round(now + len(samples) / rate, 3),
                    "label": example["label_name"],
                    "text": example["text"],
                }
            )
            parts += [samples, np.zeros(int(pause * rate), np.float32)]
            now += len(samples) / rate + pause
        recordings.append((np.concatenate(parts), truth))
    return recordings


def _overlap(a, b):
    return max(0.0, min(a["end"], b["end"]) - max(a["start"], b["start"]))


def _best(item, others):
    """The index of the item of `others` that overlaps `item` most, or None when none does."""
    overlaps = [_overlap(item, other) for other in others]
    return int(np.argmax(overlaps)) if overlaps and max(overlaps) > 0 else None


def score_timeline(segments, truth, classes, tolerance=0.5, step=0.01):
    """The comparison of one recording's segments with its true sentences (see the module docstring)."""
    labelled = [s for s in segments if "label" in s]
    hits = sum(1 for s in labelled if (i := _best(s, truth)) is not None and truth[i]["label"] == s["label"])
    speech, agree = 0, 0  # time accuracy on a `step` s grid
    for sentence in truth:
        for t in np.arange(sentence["start"], sentence["end"], step):
            speech += 1
            covering = [s for s in labelled if s["start"] <= t < s["end"]]
            agree += bool(covering) and covering[0]["label"] == sentence["label"]
    predicted = []
    for sentence in truth:
        i = _best(sentence, labelled)
        predicted.append(labelled[i]["label"] if i is not None else None)
    own, start_errors, end_errors, within = 0, [], [], 0
    for index, sentence in enumerate(truth):
        i = _best(sentence, segments)
        if i is not None and _best(segments[i], truth) == index:
            own += 1
            start_errors.append(abs(segments[i]["start"] - sentence["start"]))
            end_errors.append(abs(segments[i]["end"] - sentence["end"]))
            within += start_errors[-1] <= tolerance and end_errors[-1] <= tolerance
    return {
        "true_sentences": len(truth),
        "segments": len(segments),
        "labelled_segments": len(labelled),
        "segment_hits": hits,
        "speech_steps": speech,
        "agreeing_steps": int(agree),
        "sentence_predictions": predicted,
        "sentences_with_own_segment": own,
        "within_tolerance": int(within),
        "start_errors": start_errors,
        "end_errors": end_errors,
    }


def unweighted_recall(truth, predicted, classes):
    recalls = []
    for name in classes:
        rows = [p for t, p in zip(truth, predicted) if t == name]
        if rows:
            recalls.append(sum(p == name for p in rows) / len(rows))
    return float(np.mean(recalls)) if recalls else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fdrl-timeline-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A saved FDRL model folder.")
    parser.add_argument("--data_dir", required=True, help="A corpus in IEMOCAP's layout (the demo corpus).")
    parser.add_argument("--sessions", type=int, nargs="+", default=[5], help="The held-out session(s) (default 5).")
    parser.add_argument("--utterances_per_recording", type=int, default=25)
    parser.add_argument("--pause", type=float, default=0.6, help="Seconds of silence between sentences.")
    parser.add_argument("--tolerance", type=float, default=0.5, help="Boundary tolerance in seconds.")
    parser.add_argument("--asr_model", default=None, help="As fdrl-timeline's (default pretrained/whisper-base).")
    parser.add_argument("--asr_backend", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="At most this many utterances.")
    parser.add_argument("--output", required=True, help="The results, a .json file.")
    parser.add_argument("--plot", default=None, help="The first recording's timeline plot, a .png file.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if Path(args.output).exists():
        parser.error(f"--output {args.output} already exists: remove it or choose another file")

    import torch

    from fdrl.data.iemocap import load_iemocap
    from fdrl.inference.timeline import load_timeline, plot_timeline, recording_timeline

    data = load_iemocap(args.data_dir, config_name="4class")
    examples = []
    for split in data.values():
        names = split.features["label"].names
        for example in split:
            if example["session"] in args.sessions:
                examples.append({**example, "label_name": names[example["label"]]})
    examples = examples[: args.limit] if args.limit else examples
    if not examples:
        parser.error(f"no utterance of sessions {args.sessions} in {args.data_dir}")
    classifier, recognizer = load_timeline(args.model, args.asr_model, args.asr_backend, "cpu", language=None)
    classes = [classifier.model.config.id2label[i] for i in range(classifier.model.config.num_labels)]
    recordings = build_recordings(examples, args.utterances_per_recording, args.pause)
    logger.info(f"{len(examples)} utterances of sessions {args.sessions} -> {len(recordings)} recording(s)")

    # the reference: every sentence on its own, true boundaries and true words
    start = time.perf_counter()
    reference = []
    for samples, truth in recordings:
        inputs = [
            {
                "audio": samples[round(t["start"] * 16000) : round(t["end"] * 16000)],
                "sampling_rate": 16000,
                "text": t["text"],
            }
            for t in truth
        ]
        reference += [output[0]["label"] for output in classifier(inputs, batch_size=8)]
    reference_seconds = time.perf_counter() - start

    per_recording, totals = [], {}
    for number, (samples, truth) in enumerate(recordings, start=1):
        timeline = recording_timeline(
            samples, classifier, recognizer, sampling_rate=SAMPLING_RATE, name=f"recording{number}"
        )
        scores = score_timeline(timeline["segments"], truth, classes, args.tolerance)
        per_recording.append(
            {
                "recording": number,
                "duration": timeline["duration"],
                "seconds": timeline["seconds"],
                "real_time_factor": timeline["real_time_factor"],
                **scores,
                "truth": truth,
                "timeline": timeline["segments"],
            }
        )
        if number == 1 and args.plot:
            plot_timeline(
                timeline,
                args.plot,
                title=f"recording 1 of Session {args.sessions}: "
                f"{len(truth)} sentences, {len(timeline['segments'])} segments",
            )
        for key, value in scores.items():
            totals[key] = totals.get(key, 0 if not isinstance(value, list) else []) + value
    truth_labels = [t["label"] for _, truth in recordings for t in truth]
    duration = sum(r["duration"] for r in per_recording)
    seconds = sum(r["seconds"] for r in per_recording)
    summary = {
        "recordings": len(recordings),
        "sentences": totals["true_sentences"],
        "segments": totals["segments"],
        "labelled_segments": totals["labelled_segments"],
        "audio_seconds": round(duration, 1),
        "segment_accuracy": totals["segment_hits"] / max(totals["labelled_segments"], 1),
        "time_accuracy": totals["agreeing_steps"] / max(totals["speech_steps"], 1),
        "sentence_accuracy": float(np.mean([p == t for p, t in zip(totals["sentence_predictions"], truth_labels)])),
        "sentence_uar": unweighted_recall(truth_labels, totals["sentence_predictions"], classes),
        "reference_sentence_accuracy": float(np.mean([p == t for p, t in zip(reference, truth_labels)])),
        "reference_sentence_uar": unweighted_recall(truth_labels, reference, classes),
        "sentences_with_own_segment": totals["sentences_with_own_segment"] / totals["true_sentences"],
        "boundaries_within_tolerance": totals["within_tolerance"] / totals["true_sentences"],
        "mean_start_error_s": float(np.mean(totals["start_errors"])) if totals["start_errors"] else None,
        "mean_end_error_s": float(np.mean(totals["end_errors"])) if totals["end_errors"] else None,
        "real_time_factor": seconds / duration,
        "timeline_seconds": round(seconds, 1),
        "reference_seconds": round(reference_seconds, 1),
    }
    result = {
        "command": "fdrl-timeline-eval " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "model": args.model,
        "data_dir": args.data_dir,
        "sessions": args.sessions,
        "pause": args.pause,
        "utterances_per_recording": args.utterances_per_recording,
        "tolerance": args.tolerance,
        **recognizer.describe(),
        "torch_threads": torch.get_num_threads(),
        "summary": summary,
        "per_recording": per_recording,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    for key, value in summary.items():
        logger.info(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
