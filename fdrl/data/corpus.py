"""The corpus as every caller sees it: one loader for IEMOCAP, MELD or a manifest (with the run's classes), the
session of each utterance, the splits of one fold (leave-one-session-out, or a corpus's official train /
validation / test as the one pseudo-fold `OFFICIAL`), and transcripts from elsewhere (a speech recogniser's) for the
test split.
"""

import io
import json
from collections import Counter
from pathlib import Path

import datasets
from transformers.utils import logging

from processing_fdrl import transcript_problem

from .audio import SAMPLING_RATE
from .labels import apply_labels, has_official_splits, official_splits
from .manifest import NO_SESSION, leave_one_session_out, load_manifest, read_rows


logger = logging.get_logger(__name__)

# The one pseudo-fold of a corpus with official train / validation / test splits (MELD): a run is (seed, OFFICIAL).
OFFICIAL = "official"
DATASETS = ("iemocap", "meld")


def load_corpus(data_args, label2id=None):
    """The whole corpus with the run's classes (`fdrl.data.labels`: `data_args.labels` in that order, else the
    builder's own set, else a manifest's sorted labels; the list is logged). From the IEMOCAP builder
    (`data_args.data_dir`, a `DatasetDict` with one split per session), the MELD builder (`data_args.dataset ==
    "meld"`, a `DatasetDict` with MELD's train / validation / test) or a manifest (`data_args.manifest`, a `Dataset`
    with a `session` or `fold` column). `data_args` is `DataArguments` or any object with `data_dir` and `manifest`;
    its optional `dataset` ("iemocap"), `labels`, `dataset_config`, `cache_dir`, `strip_tags` and `rebuild_cache`
    default to the IEMOCAP builder's defaults."""
    labels = getattr(data_args, "labels", None)
    if data_args.manifest:
        return load_manifest(data_args.manifest, label2id=label2id, labels=labels)
    dataset = getattr(data_args, "dataset", None) or "iemocap"
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    cache_dir, rebuild = getattr(data_args, "cache_dir", None), getattr(data_args, "rebuild_cache", False)
    if dataset == "meld":
        from .meld import load_meld

        data = load_meld(data_args.data_dir, cache_dir=cache_dir, rebuild=rebuild)
        return apply_labels(data, labels, source=f"the MELD builder ({data_args.data_dir})")
    from .iemocap import load_iemocap

    data = load_iemocap(
        data_args.data_dir,
        config_name=getattr(data_args, "dataset_config", "4class"),
        cache_dir=cache_dir,
        strip_tags=getattr(data_args, "strip_tags", False),
        rebuild=rebuild,
    )
    return apply_labels(data, labels, source=f"the IEMOCAP builder ({data_args.data_dir})")


def fold_name(fold):
    """The folder and record name of a fold: `fold3` for test session 3, `official` for the official splits."""
    return OFFICIAL if fold == OFFICIAL else f"fold{fold}"


def fold_title(fold):
    """A fold in words, for logs and plot titles."""
    return "the official splits" if fold == OFFICIAL else f"test session {fold}"


def run_title(seed, fold):
    """A (seed, fold) run in words, for logs and figure titles."""
    return f"{fold_title(fold)}, seed {seed}"


FOLDS_NEEDED = "Give --folds, e.g. `--folds 1 2 3 4 5` (the protocol) or `--folds 1` (one fold)"


def folds_refused(folds, source):
    """The error for `--folds` given with a corpus that has official splits."""
    return ValueError(
        f"--folds {' '.join(map(str, folds))}: {source} has official train / validation / test splits, so there "
        "are no folds to choose: drop --folds (every seed of --seeds runs once on the official splits)"
    )


def corpus_folds(data, folds, source="the corpus"):
    """The folds a run goes through: `[OFFICIAL]` for a corpus with official splits (where `folds` must not be
    given), else `folds`, each a session of the corpus."""
    if has_official_splits(data):
        if folds:
            raise folds_refused(folds, source)
        return [OFFICIAL]
    if not folds:
        raise ValueError(FOLDS_NEEDED)
    sessions = available_sessions(data)
    unknown = [f for f in folds if f not in sessions]
    if unknown:
        raise ValueError(f"--folds: test session(s) {unknown} not in the data, whose sessions are {sessions}")
    return list(folds)


def splits_of(data):
    """The splits of a `DatasetDict`, or `[data]` for a single `Dataset`."""
    return list(data.values()) if isinstance(data, (dict, datasets.DatasetDict)) else [data]


def session_column(split):
    """The column that names each row's session: `session`, else `fold` (manifests without sessions)."""
    column = next((c for c in ("session", "fold") if c in split.column_names), None)
    if column is None:
        raise ValueError(f"the corpus needs a 'session' or 'fold' column, got columns {split.column_names}")
    return column


def available_sessions(data):
    """The sorted sessions of the corpus (rows without one, -1, left out)."""
    sessions = set()
    for split in splits_of(data):
        sessions.update(split[session_column(split)][:])
    return sorted(s for s in sessions if s != NO_SESSION and s >= 0)


def label_names(data):
    """The class names of the corpus's `label` column."""
    return splits_of(data)[0].features["label"].names


def session_examples(data, sessions=None):
    """Every example (a dict) of the given sessions, in corpus order; all of them without `sessions`."""
    examples = []
    for split in splits_of(data):
        column = session_column(split)
        examples += [example for example in split if not sessions or example[column] in sessions]
    return examples


def column(split, name):
    """One column of a split as a list, for a `Dataset` or a list of examples (the cached features)."""
    return split[name][:] if hasattr(split, "column_names") else [example[name] for example in split]


def drop_empty_transcripts(split, name, tokenizer=None):
    """Utterances whose transcript the text branch cannot read are skipped, counted and named in a warning. The
    rule is inference's, `processing_fdrl.transcript_problem`: blank, or (given the run's `tokenizer`) nothing but
    its unknown token, e.g. emoji only."""
    problems = {i: transcript_problem(tokenizer, text) for i, text in enumerate(split["text"][:])}
    bad = [i for i, problem in problems.items() if problem]
    if bad:
        ids = split.select(bad[:5])["id"][:] if "id" in split.column_names else bad[:5]
        examples = "; ".join(f"{uid}: {problems[i]}" for uid, i in zip(ids, bad))
        logger.warning(f"{name}: skipped {len(bad)} utterance(s) whose transcript has no word to read, e.g. {examples}")
        split = split.select(sorted(set(range(len(split))) - set(bad)))
    return split


def add_length_column(split, sampling_rate=SAMPLING_RATE):
    """`length` in samples, for length-grouped batches: from IEMOCAP's times, else from the audio's header (a file,
    or the WAV bytes a builder stored, as MELD's)."""
    if "length" in split.column_names:
        return split
    if {"start", "end"} <= set(split.column_names):
        lengths = [int(round((end - start) * sampling_rate)) for start, end in zip(split["start"][:], split["end"][:])]
    else:
        import soundfile

        def duration(audio):
            if audio.get("bytes"):
                return soundfile.info(io.BytesIO(audio["bytes"])).duration
            return soundfile.info(audio["path"]).duration if audio.get("path") else 0

        raw = split.cast_column("audio", datasets.Audio(decode=False))["audio"][:]
        lengths = [int(round(duration(audio) * sampling_rate)) for audio in raw]
    return split.add_column("length", lengths)


def fold_splits(data, test_session, validation_fraction, seed):
    """train / validation / test of one fold, without empty transcripts, with `length`: leave-one-session-out, or
    for `test_session == OFFICIAL` the corpus's own splits (`validation_fraction` and `seed` play no part). An empty
    split or a test utterance in training is an error."""
    if test_session == OFFICIAL:
        splits = official_splits(data)
    else:
        splits = leave_one_session_out(data, test_session, validation_fraction=validation_fraction, seed=seed)
    splits = type(splits)({name: drop_empty_transcripts(split, name) for name, split in splits.items()})
    _check_not_empty(splits, test_session)  # before `length`: datasets cannot add a column to an empty split
    splits = type(splits)({name: add_length_column(split) for name, split in splits.items()})
    ids = {name: set(split["id"][:]) for name, split in splits.items()}
    if ids["test"] & (ids["train"] | ids["validation"]):
        raise RuntimeError(f"{fold_title(test_session)}: the test split leaked into training or validation")
    return splits


def _classes(labels, names):
    counts = Counter(labels)
    present = ", ".join(f"{names[i]} ({counts[i]})" for i in sorted(counts)) or "none"
    missing = [name for i, name in enumerate(names) if i not in counts]
    return present, missing


def _lacking(test_session, split_name, present, missing):
    return f"{fold_title(test_session)}: the {split_name} split lacks {', '.join(missing)} (it has {present})"


def check_fold_classes(splits, names, test_session):
    """A training split lacking a class is refused (a model trained on it never predicts that class, and a split of
    one class scores 100% on itself); a validation or test split lacking one is named in a warning."""
    for split_name, split in splits.items():
        present, missing = _classes(column(split, "label"), names)
        if not missing:
            continue
        message = _lacking(test_session, split_name, present, missing)
        if split_name == "train":
            raise ValueError(f"{message}; every class must be trained on: fix the labels or sessions of the data")
        logger.warning(f"{message}; its per-class figures leave those out")


def check_training_classes(data, test_sessions, names):
    """`check_fold_classes`'s refusal for the training split of every fold at once, before the first one trains:
    a fold trains on every session but its test session (the validation draw keeps each class in training), less
    utterances without a transcript. For the official splits (`test_sessions == [OFFICIAL]`): their train split."""
    if list(test_sessions) == [OFFICIAL]:
        train = official_splits(data)["train"]
        texts = train["text"][:]
        labels = [y for y, text in zip(train["label"][:], texts) if not transcript_problem(None, text)]
        present, missing = _classes(labels, names)
        if missing:
            raise ValueError(
                _lacking(OFFICIAL, "train", present, missing) + "; every class must be trained on: fix the labels of "
                "the data, or leave the missing classes out of --labels"
            )
        return
    rows = []
    for split in splits_of(data):
        texts, sessions = split["text"][:], split[session_column(split)][:]
        rows += [(s, y) for s, y, text in zip(sessions, split["label"][:], texts) if not transcript_problem(None, text)]
    problems = []
    for test_session in test_sessions:
        labels = [label for session, label in rows if session not in (test_session, NO_SESSION)]
        present, missing = _classes(labels, names)
        if missing:
            problems.append(_lacking(test_session, "train", present, missing))
    if problems:
        raise ValueError(
            "\n".join(problems) + "\nEvery class must be trained on (a model trained without a class never predicts "
            "it): fix the labels or sessions of the data, or leave those test sessions out of --folds"
        )


def _check_not_empty(splits, test_session):
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(
                f"{fold_title(test_session)}: the {name} split is empty"
                + (" (raise --validation_fraction)" if name == "validation" and test_session != OFFICIAL else "")
            )


def drop_unreadable_transcripts(splits, tokenizer, test_session):
    """The fold's splits less the utterances whose transcript the run's `tokenizer` reads as unknown tokens only
    (`drop_empty_transcripts`), once the fold's tokenizer exists; a split left empty is an error."""
    splits = type(splits)({name: drop_empty_transcripts(split, name, tokenizer) for name, split in splits.items()})
    _check_not_empty(splits, test_session)
    return splits


def read_transcripts(path):
    """{id: transcript} from `fdrl-wer --output` JSON (items with id and hypothesis) or a manifest-like file with
    id and text columns."""
    path = Path(path)
    if path.suffix == ".json":
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and "items" in payload:
            return {item["id"]: item["hypothesis"] for item in payload["items"]}
    rows, columns = read_rows(path)
    missing = [c for c in ("id", "text") if c not in columns]
    if missing:
        raise ValueError(f"--test_transcripts {path} needs columns 'id' and 'text', it lacks {missing}")
    return {row["id"]: row["text"] for _, row in rows}


def replace_test_transcripts(splits, transcripts, source):
    """The test split with its text from `transcripts`; every test utterance must have one."""
    test = splits["test"]
    missing = [u for u in test["id"][:] if u not in transcripts]
    if missing:
        raise ValueError(
            f"--test_transcripts {source} has no transcript for {len(missing)} test utterance(s), e.g. {missing[:5]}"
        )
    texts = [transcripts[u] for u in test["id"][:]]
    splits["test"] = test.remove_columns("text").add_column("text", texts)
    return splits
