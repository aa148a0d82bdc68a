#!/usr/bin/env python
"""Emotion over a whole recording, sentence by sentence: `fdrl-timeline` (or `python -m fdrl.cli.timeline`).

    fdrl-timeline meeting.wav --model demo_output/model --output timeline.json --plot timeline.png --csv timeline.csv
    fdrl-timeline talk.mp3 --model my-fdrl --asr_model openai/whisper-small --device cuda --output talk.json

The speech recogniser (`--asr_model`, default `pretrained/whisper-base`: faster-whisper on the CPU with
`pretrained/whisper-base-ct2`, transformers' pipeline for Hub ids and GPUs; `--asr_backend` to choose) cuts the
recording into timed sentences and transcribes them; FDRL classifies each sentence from its speech and its words.

Output, `--output` (JSON): `duration` (s), `classes`, the recogniser, the wall time and real-time factor, and
`segments` in time order, each `{"start", "end", "transcript", "label", "scores": {class: probability}}`, or with a
`reason` instead of `label` and `scores` when the sentence is too short (`--min_duration`), has no words or cannot be
classified: no sentence is dropped. `--csv`: one row per segment; `--plot`: a PNG of emotion over time.

Any length and any format the project reads (WAV, FLAC, MP3, OGG with soundfile; M4A, WebM, ... with torchcodec);
recordings of a minute or more show a progress bar. Bad input (a missing, empty, undecodable, NaN or silent
recording, a missing model, an output file that exists or is the input) is reported before any model is loaded,
with exit status 2; nothing is overwritten unless `--overwrite` is given. Exit status 1: no speech was recognised.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from fdrl.inference.recognizer import BACKENDS


logger = logging.getLogger(__name__)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="fdrl-timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", help="The recording (any length; WAV, FLAC, MP3, OGG, M4A, ...).")
    parser.add_argument("--model", required=True, help="A saved FDRL model folder (run_fdrl.py's model/) or Hub id.")
    parser.add_argument("--output", required=True, help="The timeline, a .json file.")
    parser.add_argument("--plot", default=None, help="Also draw emotion over time into this .png file.")
    parser.add_argument("--csv", default=None, help="Also write one row per segment into this .csv file.")
    parser.add_argument(
        "--asr_model",
        default=None,
        help="Speech recogniser: a CTranslate2 or transformers folder, or a Hub id (default: "
        "pretrained/whisper-base, read through pretrained/whisper-base-ct2 on the CPU).",
    )
    parser.add_argument(
        "--asr_backend",
        default="auto",
        choices=BACKENDS,
        help="faster-whisper (CTranslate2, CPU), transformers, or auto (faster-whisper on the CPU "
        "when a CTranslate2 folder is at hand).",
    )
    parser.add_argument("--language", default=None, help="The spoken language, e.g. en (default: detected).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu).")
    parser.add_argument("--batch_size", type=int, default=8, help="Sentences per FDRL forward pass.")
    parser.add_argument(
        "--min_duration",
        type=float,
        default=0.5,
        help="Sentences shorter than this many seconds get a reason instead of a label.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace existing output files.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    if not args.min_duration >= 0:
        parser.error(f"--min_duration must be 0 or more, got {args.min_duration}")
    return args


def check_outputs(args):
    """Suffixes right, never the input, never an existing file without --overwrite, never two outputs the same."""
    outputs = {"--output": (args.output, ".json"), "--plot": (args.plot, ".png"), "--csv": (args.csv, ".csv")}
    seen = {}
    for flag, (path, suffix) in outputs.items():
        if path is None:
            continue
        path = Path(path)
        if path.suffix.lower() != suffix:
            raise ValueError(f"{flag} must end in {suffix}, got {path}")
        if path.is_dir():
            raise ValueError(f"{flag} {path} is a folder: give a file name")
        if path.exists() and Path(args.audio).exists() and os.path.samefile(path, args.audio):
            raise ValueError(f"{flag} {path} is the input recording: write to another file")
        if path.exists() and not args.overwrite:
            raise ValueError(f"{flag} {path} already exists: pass --overwrite to replace it, or choose another file")
        if path.resolve() in seen:
            raise ValueError(f"{flag} and {seen[path.resolve()]} are the same file {path}")
        seen[path.resolve()] = flag


def main(argv=None):
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=logging.INFO,
    )
    args = parse_arguments(argv)
    from fdrl.cli.predict import _check_model
    from fdrl.inference.timeline import (
        check_recording,
        load_timeline,
        plot_timeline,
        recording_timeline,
        write_csv,
        write_json,
    )

    try:  # everything a user can get wrong, before any model loads
        check_outputs(args)
        _check_model(args.model)
        waveform, rate = check_recording(args.audio)
    except ValueError as error:
        logger.error(str(error))
        return 2
    logger.info(f"{args.audio}: {waveform.shape[0] / rate:.1f} s at {rate} Hz")
    try:
        classifier, recognizer = load_timeline(args.model, args.asr_model, args.asr_backend, args.device, args.language)
    except (OSError, ValueError) as error:
        logger.error(f"cannot load the models: {error}")
        return 2
    timeline = recording_timeline(
        waveform,
        classifier,
        recognizer,
        sampling_rate=rate,
        batch_size=args.batch_size,
        min_duration=args.min_duration,
        name=str(args.audio),
    )
    timeline["model"] = str(args.model)
    write_json(timeline, args.output)
    if args.csv:
        write_csv(timeline, args.csv)
    if args.plot:
        plot_timeline(timeline, args.plot)
    written = ", ".join(p for p in (args.output, args.csv, args.plot) if p)
    segments = timeline["segments"]
    logger.info(f"{len(segments)} segment(s), {sum('label' in s for s in segments)} labelled; wrote {written}")
    if not segments:
        logger.warning(f"{args.audio}: the speech recogniser heard no speech, so there is no segment")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
