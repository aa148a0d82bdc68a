"""Bring your own data: a CSV or JSON-lines manifest as a `Dataset` shaped like the IEMOCAP builder's.

One row per utterance:

    audio,text,label,speaker,session
    wavs/a.wav,Excuse me.,neu,1F,1
    /data/b.wav,Do you have your forms?,ang,1M,1

Required columns: the audio path (relative paths are resolved against the manifest's folder, or
`base_dir`), the transcript and the label name. Optional: `id` (defaults to the audio path as
written), `speaker` (defaults to ""), `session` or, if there is none, `fold` (an integer; -1 when the
manifest has neither, so that every dataset has the same columns). Other columns are dropped.
`.csv` and `.tsv` are read as delimited text, `.jsonl`, `.ndjson` and `.json` as JSON lines (a
`.json` file holding one array of objects also works).

The classes (`fdrl.data.labels.resolve_labels`): `labels` (`--labels`) in that order if given, else the sorted set
of the manifest's labels (`ang, hap, neu, sad` for an IEMOCAP-like manifest); the list is logged.

Every problem is reported at once, by row (1 = first data row) and line of the file:
- empty labels, labels outside `labels`, and bad session values: ValueError.
- missing audio files: FileNotFoundError; with `load_manifest(..., strict=False)`, the rows are skipped
  and counted in a logged warning.
- empty transcripts: ValueError; with `strict=False`, the rows are kept with text "" and logged.
- duplicate ids: ValueError (without an `id` column the id is the audio path, so a file listed twice).

`leave_one_session_out` splits such a dataset, or the IEMOCAP builder's `DatasetDict`, into
train / validation / test for one fold of the leave-one-session-out protocol.
"""

import csv
import io
import json
import logging
import os
from pathlib import Path

import datasets
import numpy as np

from .audio import SAMPLING_RATE
from .labels import LABELS_HINT, resolve_labels


logger = logging.getLogger(__name__)

# The four IEMOCAP classes, in the order a manifest holding exactly them gets (sorted).
DEFAULT_LABEL2ID = {"ang": 0, "hap": 1, "neu": 2, "sad": 3}
NO_SESSION = -1
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_JSON_LINES = (".jsonl", ".ndjson", ".json")


def load_manifest(
    path,
    label2id=None,
    audio_column="audio",
    text_column="text",
    label_column="label",
    base_dir=None,
    strict=True,
    labels=None,
):
    """Read a manifest into a `Dataset` with the columns id, audio, text, label, emotion, session, speaker.

    Args:
        path (`str` or `Path`): the manifest, `.csv`, `.tsv`, `.jsonl`, `.ndjson` or `.json`.
        label2id (`dict[str, int]`, *optional*):
            label name -> id, ids 0..n-1, for merging names: the ClassLabel names are the ids' names in id
            order; several names may share an id (`{"hap": 1, "exc": 1}`), the first one then names the
            class. The raw name stays in the `emotion` column. Not together with `labels`.
        audio_column, text_column, label_column (`str`): names of the required columns.
        base_dir (`str` or `Path`, *optional*): folder relative audio paths start from (defaults to
            the manifest's folder).
        strict (`bool`, *optional*, defaults to `True`): raise on missing audio files and empty
            transcripts; otherwise skip the former and keep the latter, with a logged warning.
        labels (`str` or sequence of `str`, *optional*): the classes in label-id order (`--labels`, "neu,ang,sad");
            a row labelled otherwise is refused. Defaults to the sorted set of the manifest's labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest not found: {path}")
    if label2id is not None and labels is not None:
        raise ValueError("give load_manifest either labels or label2id, not both")
    rows, columns = read_rows(path)
    missing = [c for c in (audio_column, text_column, label_column) if c not in columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(map(repr, missing))} (its columns: {columns})")
    label2id = label2id if label2id is not None else _resolve_label2id(path, rows, label_column, labels)
    class_names = _class_names(label2id)
    session_column = "session" if "session" in columns else "fold" if "fold" in columns else None
    base_dir = Path(base_dir) if base_dir is not None else path.parent

    examples, unknown, bad_session, no_audio, empty = [], [], [], [], []
    for row, (line, values) in enumerate(rows, start=1):
        where = f"row {row} (line {line})"
        label = _as_str(values.get(label_column))
        if label not in label2id:
            unknown.append(f"{where}: {label!r}")
        session = _as_session(values.get(session_column)) if session_column else NO_SESSION
        if session is None:
            bad_session.append(f"{where}: {values.get(session_column)!r}")
        written = _as_str(values.get(audio_column))
        audio = Path(os.path.abspath(base_dir / Path(written).expanduser())) if written else None
        if audio is None or not audio.is_file():
            no_audio.append(f"{where}: {audio if audio else 'no path'}")
            continue
        text = _as_str(values.get(text_column))
        if not text:
            empty.append(where)
        examples.append(
            {
                "id": _as_str(values.get("id")) or written,
                "audio": str(audio),
                "text": text,
                "label": label2id.get(label),
                "emotion": label,
                "session": session,
                "speaker": _as_str(values.get("speaker")),
            }
        )

    if unknown:
        raise ValueError(
            f"{len(unknown)} unknown label(s) in {path} (known: {', '.join(label2id)}): "
            + "; ".join(unknown)
            + f". Fix those rows, or {LABELS_HINT}"
        )
    if bad_session:
        raise ValueError(f"{session_column!r} must be an integer in {path}: " + "; ".join(bad_session))
    if no_audio and strict:
        raise FileNotFoundError(f"{len(no_audio)} audio file(s) of {path} not found: " + "; ".join(no_audio))
    if no_audio:
        logger.warning(f"Skipped {len(no_audio)} row(s) of {path} whose audio file is missing: " + _preview(no_audio))
    if empty and strict:
        raise ValueError(
            f"{len(empty)} empty transcript(s) in {path}: fill them in or remove those rows (from Python, "
            "load_manifest(..., strict=False) keeps them with text ''): " + "; ".join(empty)
        )
    if empty:
        logger.warning(f"Kept {len(empty)} row(s) of {path} with an empty transcript: " + _preview(empty))
    _check_unique_ids(examples, path, has_id_column="id" in columns)
    return datasets.Dataset.from_list(examples, features=manifest_features(class_names))


def manifest_features(class_names):
    """The features of `load_manifest`'s datasets, for the given ClassLabel names."""
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "audio": datasets.Audio(sampling_rate=SAMPLING_RATE),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(class_names)),
            "emotion": datasets.Value("string"),
            "session": datasets.Value("int32"),
            "speaker": datasets.Value("string"),
        }
    )


def leave_one_session_out(dataset_dict, test_session, validation_fraction=0.1, seed=0):
    """One fold of leave-one-session-out: test on one session, train and validate on the others.

    The validation split is drawn from the training sessions, stratified by `label`: from each class
    of n utterances, round(n * validation_fraction) go to validation (at most n - 1, so that every
    class stays in train). Rows keep their order. Rows without a session (-1) are left out.

    Args:
        dataset_dict (`DatasetDict` or `Dataset`): all the data (splits are concatenated), e.g. the
            IEMOCAP builder's session1..session5 or a manifest's dataset. Sessions come from the
            `session` column, or `fold` if there is none.
        test_session (`int`): the held-out session.
        validation_fraction (`float`, *optional*, defaults to 0.1): in [0, 1).
        seed (`int`, *optional*, defaults to 0): seeds the validation draw.

    Returns:
        `DatasetDict` with `train`, `validation` and `test`.
    """
    dataset = dataset_dict
    if isinstance(dataset_dict, datasets.DatasetDict):
        dataset = datasets.concatenate_datasets([dataset_dict[split] for split in dataset_dict])
    column = next((c for c in ("session", "fold") if c in dataset.column_names), None)
    if column is None:
        raise ValueError(f"dataset_dict needs a 'session' or 'fold' column, got columns {dataset.column_names}")
    plain = dataset.with_format(None)  # python lists, whatever format the caller set
    sessions = plain[column][:]
    available = sorted(set(sessions) - {NO_SESSION})
    if test_session not in available:
        raise ValueError(f"test_session must be one of the dataset's sessions {available}, got {test_session!r}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if NO_SESSION in sessions:
        logger.warning(f"Left out {sessions.count(NO_SESSION)} row(s) without a session ({column} = -1)")

    test = [i for i, s in enumerate(sessions) if s == test_session]
    pool = [i for i, s in enumerate(sessions) if s not in (test_session, NO_SESSION)]
    labels = plain["label"][:] if "label" in dataset.column_names else [0] * len(sessions)
    rng = np.random.default_rng(seed)
    validation = []
    for label in sorted({labels[i] for i in pool}):
        members = [i for i in pool if labels[i] == label]
        count = min(int(np.floor(len(members) * validation_fraction + 0.5)), len(members) - 1)
        validation += [members[j] for j in rng.permutation(len(members))[:count]]
    validation_set = set(validation)
    train = [i for i in pool if i not in validation_set]
    return datasets.DatasetDict(
        {
            "train": dataset.select(train),
            "validation": dataset.select(sorted(validation)),
            "test": dataset.select(test),
        }
    )


def _resolve_label2id(path, rows, label_column, labels):
    """`{name: id}` from `--labels` or the manifest's sorted labels; empty labels are refused first."""
    found = [_as_str(values.get(label_column)) for _, values in rows]
    where = [f"row {row} (line {line})" for row, (line, _) in enumerate(rows, start=1)]
    empty = [where[i] for i, label in enumerate(found) if not label]
    if empty:
        raise ValueError(f"{len(empty)} row(s) of {path} have no label: " + _preview(empty))
    names = resolve_labels(found, labels=labels, source=str(path), where=where)
    return {name: i for i, name in enumerate(names)}


def _class_names(label2id):
    ids = sorted(set(label2id.values()))
    if not label2id or ids != list(range(len(ids))) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"label2id must map names to the ids 0..n-1, got {label2id}")
    return [next(name for name, i in label2id.items() if i == index) for index in ids]


def read_rows(path):
    """`([(line number, row dict)], column names)` of a delimited or JSON-lines manifest. A file that is not UTF-8
    text, or that holds no row (nothing, or a header alone), is a `ValueError` naming it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _DELIMITERS and suffix not in _JSON_LINES:
        raise ValueError(f"Manifest must be .csv, .tsv, .jsonl, .ndjson or .json, got {path}")
    content = _read_utf8(path)
    if suffix in _DELIMITERS:
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=_DELIMITERS[suffix])
        rows = [(reader.line_num, row) for row in reader]
        return _with_rows(path, rows), list(reader.fieldnames or [])
    if suffix == ".json" and content.lstrip().startswith("["):
        rows = [(1, row) for row in json.loads(content)]
    else:
        rows = []
        for line, text in enumerate(content.splitlines(), start=1):
            if not text.strip():
                continue
            try:
                rows.append((line, json.loads(text)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line}: not a JSON object ({error})") from None
    bad = [line for line, row in rows if not isinstance(row, dict)]
    if bad:
        raise ValueError(f"{path}: lines {bad} are not JSON objects")
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    return _with_rows(path, rows), columns


def _read_utf8(path):
    """The manifest's text (a byte-order mark dropped); not UTF-8: an error naming the file, line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path} is not UTF-8 text (line {line}: byte 0x{data[error.start]:02x} at offset "
            f"{error.start}): save it as UTF-8"
        ) from None


def _with_rows(path, rows):
    if not rows:
        raise ValueError(f"{path} has no rows: a manifest needs a header and one row per utterance")
    return rows


def _as_str(value):
    return "" if value is None else str(value).strip()


def _as_session(value):
    """An integer session, or `None` when the value is not one."""
    try:
        number = float(_as_str(value))
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _check_unique_ids(examples, path, has_id_column):
    seen, duplicates = set(), []
    for example in examples:
        if example["id"] in seen:
            duplicates.append(example["id"])
        seen.add(example["id"])
    if not duplicates:
        return
    if has_id_column:
        hint = "the 'id' column must be unique (a row with an empty id takes its audio path)"
    else:
        hint = "without an 'id' column the id is the audio path, so these files are listed twice; add an 'id' column"
    raise ValueError(f"Duplicate ids in {path}, {hint}: {_preview(duplicates)}")


def _preview(items, limit=5):
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


__all__ = ["DEFAULT_LABEL2ID", "leave_one_session_out", "load_manifest", "manifest_features", "read_rows"]
