#!/usr/bin/env python
"""Predict emotions for many recordings with a trained FDRL model, into a CSV or JSON-lines file.

    fdrl-predict --model outputs/fdrl-iemocap/fold1 --input clips/ --output predictions.csv
    python -m fdrl.cli.predict --model outputs/fdrl-iemocap/fold1 --input manifest.jsonl --output predictions.jsonl \\
        --batch_size 16 --device cuda --asr_model openai/whisper-small

Inputs, `--input`:
- a folder: every file matching `--pattern` (default `*.wav`; `**/*.wav` descends), with its transcript in a text
  file of the same name beside it (`a.wav` + `a.txt`). The id is the path relative to the folder, without suffix.
- a manifest, `.csv`, `.tsv`, `.jsonl`, `.ndjson` or `.json`: one row per recording with the columns `audio` (a path,
  relative ones from the manifest's folder), `text` and optionally `id` (defaults to the audio path as written).
  A column named by `--audio_column`, `--text_column` or a non-default `--id_column` that the manifest lacks is an
  error listing the columns it has (with `--asr_model`, a missing text column is a warning: everything is transcribed).
Without `--asr_model` every recording needs a non-empty transcript; with it, recordings without one are transcribed.

Output, `--output` (`.csv`, `.tsv`, or `.jsonl`/`.ndjson`/`.json` for JSON lines): one row per predicted recording,
in input order, with `id`, `audio`, `label`, `score` and `score_<label>` for every class (plus `transcript` and
`transcript_source` with `--asr_model`). Recordings that cannot be used (missing, unreadable or corrupt file,
empty or NaN audio, no transcript) are skipped without stopping the run: they are logged by name at the end and
listed in `<output>.errors.json` (`{"predicted": n, "failed": m, "errors": [{"id", "audio", "error"}, ...]}`).
No command overwrites what a user gave it: an `--output` that is the `--input` manifest (under any spelling, a
symlink or a hard link) is refused whatever the flags, and an existing `--output` file only with `--overwrite true`
(its `.errors.json` goes with it).

Exit status: 0 when at least one recording was predicted, 1 when none was (no input found, or every one failed),
2 for bad arguments (a missing `--model` folder, a folder that is not an FDRL model, a damaged `model.safetensors`, an
`--output` that exists or is the input, a missing column), an unreadable manifest (not UTF-8, no rows) or a model
that cannot be loaded. Nothing is written before the arguments are checked.

The model is loaded with this repository's classes (`FDRLModel`, `FDRLProcessor`), so no remote code runs.
"""

import csv
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import transformers
from safetensors import SafetensorError
from tqdm import tqdm
from transformers import HfArgumentParser

from fdrl.data.manifest import read_rows
from modeling_fdrl import FDRLModel
from pipeline_fdrl import MultimodalEmotionRecognitionPipeline, check_model_folder
from processing_fdrl import FDRLProcessor


logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


@dataclass
class PredictionArguments:
    model: str = field(metadata={"help": "A saved FDRL model: a run_fdrl.py / save_pipeline folder, or a Hub id."})
    input: str = field(metadata={"help": "A folder of recordings with .txt transcripts, or a CSV/JSONL manifest."})
    output: str = field(metadata={"help": "Predictions file: .csv, .tsv, or .jsonl (JSON lines)."})
    batch_size: int = field(default=8, metadata={"help": "Recordings per forward pass."})
    device: Optional[str] = field(
        default=None, metadata={"help": "'cpu', 'cuda', 'cuda:1', ... (default: the first GPU if any, else the CPU)."}
    )
    asr_model: Optional[str] = field(
        default=None, metadata={"help": "Speech-recognition model (Hub id or folder) for recordings without text."}
    )
    pattern: str = field(default="*.wav", metadata={"help": "Glob of the recordings in a folder input."})
    audio_column: str = field(default="audio", metadata={"help": "Manifest column with the audio path."})
    text_column: str = field(default="text", metadata={"help": "Manifest column with the transcript."})
    id_column: str = field(default="id", metadata={"help": "Manifest column with the id (optional)."})
    max_text_length: Optional[int] = field(
        default=None, metadata={"help": "Truncate transcripts to this many tokens (default: the text model's limit)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an existing --output file (never the --input, whatever this says)."}
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {self.batch_size}")
        if Path(self.output).suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"--output must end in one of {OUTPUT_SUFFIXES}, got {self.output}")
        source = Path(self.input)
        if not source.exists():
            raise ValueError(f"--input {source} does not exist")
        if source.is_file() and source.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"--input must be a folder or a manifest ending in {MANIFEST_SUFFIXES}, got {source}")
        _check_model(self.model)
        _check_output(Path(self.output), source, self.overwrite)


def _check_model(model):
    """A local FDRL model folder with intact weights (pipeline_fdrl's check), or something that can only be a Hub id."""
    try:
        check_model_folder(model, fdrl=True)
    except ValueError as error:
        raise ValueError(f"--model {model}: {error}") from None


def _check_output(output, source, overwrite):
    """Never write over the input; write over an earlier output only when asked to."""
    errors_file = Path(f"{output}.errors.json")
    for written in (output, errors_file):
        if written.exists() and source.is_file() and os.path.samefile(written, source):
            raise ValueError(
                f"--output {output} would overwrite the --input manifest {source} (the same file): "
                "write the predictions to another file"
            )
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: give a file name such as {output / 'predictions.csv'}")
    if output.exists() and not overwrite:
        raise ValueError(
            f"--output {output} already exists: pass --overwrite true to replace it, or choose another file"
        )


@dataclass
class Recording:
    id: str
    audio: str
    text: Optional[str]  # None: no transcript
    missing_text: str = ""  # why there is none, for the error report


# ----- inputs --------------------------------------------------------------------------------------------------------
def folder_recordings(folder, pattern):
    """Recordings matching `pattern` in `folder`, each with the `.txt` beside it as its transcript."""
    folder = Path(folder)
    recordings = []
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        transcript = path.with_suffix(".txt")
        text = transcript.read_text(encoding="utf-8").strip() if transcript.is_file() else None
        reason = f"no transcript file {transcript}" if not transcript.is_file() else f"empty transcript {transcript}"
        recordings.append(
            Recording(
                path.relative_to(folder).with_suffix("").as_posix(), str(path), text or None, "" if text else reason
            )
        )
    return recordings


def manifest_recordings(path, audio_column="audio", text_column="text", id_column="id", transcribe=False):
    """Recordings from a CSV/TSV or JSON-lines manifest; relative audio paths start at the manifest's folder.
    `transcribe`: an ASR model will transcribe recordings without text, so a missing text column is no error."""
    path = Path(path)
    numbered, columns = read_rows(path)
    rows = [row for _, row in numbered]
    if rows:
        _check_columns(path, columns, audio_column, text_column, id_column, transcribe)
    recordings = []
    for number, row in enumerate(rows, start=1):
        audio = str(row.get(audio_column) or "").strip()
        text = str(row.get(text_column) or "").strip() or None
        audio_path = path.parent / audio if audio and not Path(audio).is_absolute() else Path(audio)
        record_id = str(row.get(id_column) or "").strip() or audio or f"row {number}"
        reason = "" if text else f"no {text_column!r} in manifest row {number}"
        recordings.append(Recording(record_id, str(audio_path) if audio else "", text, reason))
    return recordings


def _check_columns(path, columns, audio_column, text_column, id_column, transcribe):
    """A misnamed column would skip every row (or silently use other ids): name it and the columns there are."""
    present = f"its columns: {', '.join(map(repr, columns))}"
    if audio_column not in columns:
        raise ValueError(f"{path} has no {audio_column!r} column ({present}); pass --audio_column <name>")
    if text_column not in columns and not transcribe:
        raise ValueError(
            f"{path} has no {text_column!r} column ({present}); pass --text_column <name>, or "
            "--asr_model to transcribe the speech"
        )
    if text_column not in columns:
        logger.warning(f"{path} has no {text_column!r} column ({present}): every recording is transcribed")
    if id_column not in columns and id_column != "id":  # "id" is optional; a column asked for by name is not
        raise ValueError(f"{path} has no {id_column!r} column ({present}); pass --id_column <name>")


# ----- outputs -------------------------------------------------------------------------------------------------------
class PredictionWriter:
    """Streams rows to CSV/TSV or JSON lines, so what was predicted survives an interrupted run."""

    def __init__(self, path, columns):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w", newline="", encoding="utf-8")
        suffix = self.path.suffix.lower()
        self.csv = None
        if suffix in (".csv", ".tsv"):
            self.csv = csv.DictWriter(self.file, fieldnames=columns, delimiter="," if suffix == ".csv" else "\t")
            self.csv.writeheader()

    def write(self, row):
        if self.csv is not None:
            self.csv.writerow(row)
        else:
            self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


# ----- prediction ----------------------------------------------------------------------------------------------------
def predict(pipe, recordings, writer, batch_size, with_transcript, class_names, max_text_length=None):
    """Predicts every usable recording, writing rows as it goes; returns (number predicted, [error dicts])."""
    errors, predicted = [], 0
    usable = []
    for recording in recordings:
        if recording.text is None and pipe.asr_pipeline is None:
            errors.append(_error(recording, recording.missing_text or "no transcript"))
        elif not recording.audio:
            errors.append(_error(recording, "no audio path"))
        else:
            usable.append(recording)
    call_kwargs = {"return_transcript": True}
    if max_text_length is not None:
        call_kwargs["max_text_length"] = max_text_length

    chunk_size = 4 * batch_size
    with tqdm(total=len(recordings), desc="predicting", unit="file") as progress:
        progress.update(len(recordings) - len(usable))
        for start in range(0, len(usable), chunk_size):
            chunk = usable[start : start + chunk_size]
            inputs = [{"audio": r.audio, "text": r.text} for r in chunk]
            try:  # a bad input comes back as {"input", "error"} in its place
                outputs = pipe(inputs, batch_size=batch_size, **call_kwargs)
            except Exception:  # the batch itself failed (out of memory, say): one input at a time
                outputs = []
                for recording, single in zip(chunk, inputs):
                    try:
                        outputs.append(pipe(single, **call_kwargs))
                    except Exception as error:  # its message starts with the pipeline's "input (path): "
                        outputs.append({"error": str(error).removeprefix(f"input ({recording.audio}): ")})
            for recording, output in zip(chunk, outputs):
                if "error" in output:
                    errors.append(_error(recording, output["error"]))
                else:
                    writer.write(_row(recording, output, with_transcript, class_names))
                    predicted += 1
            progress.update(len(chunk))
    return predicted, errors


def _row(recording, prediction, with_transcript, class_names):
    scores = {entry["label"]: entry["score"] for entry in prediction["scores"]}
    best = prediction["scores"][0]
    row = {"id": recording.id, "audio": recording.audio, "label": best["label"], "score": best["score"]}
    row.update({f"score_{name}": scores[name] for name in class_names})
    if with_transcript:
        row.update(transcript=prediction["transcript"], transcript_source=prediction["transcript_source"])
    return row


def _error(recording, message):
    return {"id": recording.id, "audio": recording.audio, "error": message}


def report(errors, predicted, output):
    """Logs every failure by name and writes `<output>.errors.json`; returns its path."""
    path = Path(f"{output}.errors.json")
    path.write_text(
        json.dumps({"predicted": predicted, "failed": len(errors), "errors": errors}, indent=2, ensure_ascii=False)
    )
    for error in errors:
        logger.warning(f"skipped {error['id']} ({error['audio'] or 'no audio'}): {error['error']}")
    logger.info(
        f"predicted {predicted} recording(s), skipped {len(errors)}; predictions in {output}, failures in {path}"
    )
    return path


def parse_arguments(argv=None):
    parser = HfArgumentParser(PredictionArguments)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=argv[0])[0]
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=argv[0])[0]
    return parser.parse_args_into_dataclasses(args=argv)[0]


def main(argv=None) -> int:
    # Arguments and logging
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=logging.INFO,
    )
    try:
        args = parse_arguments(argv)
        source = Path(args.input)
        recordings = (
            folder_recordings(source, args.pattern)
            if source.is_dir()
            else manifest_recordings(
                source, args.audio_column, args.text_column, args.id_column, transcribe=args.asr_model is not None
            )
        )
    except (ValueError, csv.Error) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        logger.error(str(error))
        return 2
    transformers.utils.logging.set_verbosity_warning()
    logger.info(f"{len(recordings)} recording(s) from {source}")

    # The model, its processor and the pipeline (this repository's classes: no remote code)
    try:
        model = FDRLModel.from_pretrained(args.model).eval()
        # trust_remote_code=False: the classes are local; without it AutoTokenizer, seeing the folder's auto_map, asks
        processor = FDRLProcessor.from_pretrained(args.model, trust_remote_code=False)
    except (OSError, ValueError, SafetensorError) as error:  # not found on the Hub, no weights, a broken config
        logger.error(f"--model {args.model}: cannot load the model ({error})")
        return 2
    device = int(args.device) if args.device is not None and args.device.lstrip("-").isdigit() else args.device
    pipe = MultimodalEmotionRecognitionPipeline(
        model=model, processor=processor, device=device, asr_model=args.asr_model
    )
    class_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    with_transcript = args.asr_model is not None
    columns = ["id", "audio", "label", "score", *(f"score_{name}" for name in class_names)]
    columns += ["transcript", "transcript_source"] if with_transcript else []

    # Prediction, streamed to the output file
    writer = PredictionWriter(args.output, columns)
    try:
        predicted, errors = predict(
            pipe, recordings, writer, args.batch_size, with_transcript, class_names, args.max_text_length
        )
    finally:
        writer.close()

    # The report: failures by name, in the log and in <output>.errors.json
    report(errors, predicted, args.output)
    return 0 if predicted > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
