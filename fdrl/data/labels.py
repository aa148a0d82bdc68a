"""The class list of a run, and the official train / validation / test splits of a corpus that defines them.

Which classes a run has, in label-id order (`resolve_labels`):
1. `labels` given explicitly (`--labels neu,ang,sad` on the command line, `labels=[...]` in Python): those, in that
   order. A label in the data that is not among them is refused, naming the known ones and how to set them.
2. else a corpus builder's own set: the IEMOCAP builder's four (ang, hap, neu, sad) or eleven codes, MELD's seven.
3. else (a manifest) the sorted set of the labels it holds, so `ang, hap, neu, sad` for an IEMOCAP-like manifest.
The list is logged before training, so a typo in the data shows up there as an extra class.

`apply_labels` re-encodes a builder's dataset in an explicit order; `official_splits` returns a corpus's own splits
in the shape `fdrl.data.manifest.leave_one_session_out` gives one fold.
"""

import logging
from collections import Counter

import datasets


logger = logging.getLogger(__name__)

LABELS_HINT = "set the classes with --labels (labels=[...] in Python), in label-id order, e.g. --labels neu,ang,sad"


def parse_labels(value):
    """`--labels` as a tuple of names: a comma-separated string or a sequence; `None` (or "") when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    names = [name.strip() for name in (value.split(",") if isinstance(value, str) else value)]
    if any(not isinstance(name, str) or not name for name in names):
        raise ValueError(f"--labels must be non-empty class names separated by commas, got {value!r}")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"--labels names each class once, got {', '.join(repeated)} more than once in {value!r}")
    if len(names) < 2:
        raise ValueError(f"--labels needs at least two classes (one class leaves nothing to learn), got {value!r}")
    return tuple(names)


def resolve_labels(found, labels=None, corpus_labels=None, source="the data", where=None):
    """The classes of a run, in label-id order (see the module docstring), logged.

    Args:
        found (iterable of `str`): the label name of every row of the data.
        labels (`str` or sequence of `str`, *optional*): explicit classes (`--labels`); they win.
        corpus_labels (sequence of `str`, *optional*): a corpus builder's own classes, used when `labels` is not given.
        source (`str`): what the data is, for the messages ("manifest.csv", "the MELD builder").
        where (sequence of `str`, *optional*): one description per row ("row 3 (line 4)"), parallel to `found`,
            named in the refusal of unknown labels.
    """
    found = list(found)
    explicit = parse_labels(labels)
    if explicit is not None:
        names, origin = explicit, "--labels"
    elif corpus_labels is not None:
        names, origin = tuple(corpus_labels), f"the classes of {source}"
    else:
        names, origin = tuple(sorted(set(found))), f"the sorted labels of {source}"
    unknown = [i for i, label in enumerate(found) if label not in names]
    if unknown:
        counts = Counter(found[i] for i in unknown)
        listed = ", ".join(f"{label!r} ({count} row(s))" for label, count in sorted(counts.items()))
        rows = "; ".join(f"{where[i]}: {found[i]!r}" for i in unknown[:5]) if where is not None else ""
        rows += f"; ... ({len(unknown)} in all)" if where is not None and len(unknown) > 5 else ""
        raise ValueError(
            f"{len(unknown)} unknown label(s) in {source} (known: {', '.join(names)}, from {origin}): "
            f"{listed}{'. ' + rows if rows else ''}. Fix those rows, or {LABELS_HINT}"
        )
    if len(names) < 2:
        logger.warning(f"{source} has {len(names)} class(es) ({', '.join(names)}): a classifier needs at least two")
    logger.info(f"classes ({len(names)}, from {origin}): {', '.join(names)}")
    return names


def label_names(data):
    """The ClassLabel names of the `label` column of a `Dataset` or `DatasetDict`."""
    dataset = next(iter(data.values())) if isinstance(data, datasets.DatasetDict) else data
    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"the data needs a ClassLabel 'label' column, got {feature!r}")  # noqa: TRY004
    return tuple(feature.names)


def apply_labels(data, labels, source="the data"):
    """A builder's `Dataset`/`DatasetDict` re-encoded with the classes `labels` in that order (`--labels`): the
    same rows, `label` ids following the new order. A row whose class is not in `labels` is refused."""
    old = label_names(data)
    splits = dict(data) if isinstance(data, datasets.DatasetDict) else {"data": data}
    found, where = [], []
    for name, split in splits.items():
        for row, label in enumerate(split.with_format(None)["label"][:], start=1):
            found.append(old[label])
            where.append(f"{name} row {row}")
    names = resolve_labels(found, labels=labels, corpus_labels=old, source=source, where=where)
    if names == old:
        return data
    new_id = {old_id: names.index(name) for old_id, name in enumerate(old) if name in names}
    relabelled = {}
    for name, split in splits.items():
        features = split.features.copy()
        features["label"] = datasets.ClassLabel(names=list(names))
        relabelled[name] = split.cast_column("label", datasets.Value("int64")).map(
            lambda batch: {"label": [new_id[i] for i in batch["label"]]}, batched=True, features=features
        )
    return datasets.DatasetDict(relabelled) if isinstance(data, datasets.DatasetDict) else relabelled["data"]


OFFICIAL_SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "dev"), "test": ("test",)}


def has_official_splits(data):
    """Whether `data` is a `DatasetDict` with the corpus's own train, validation (or dev) and test splits."""
    return isinstance(data, datasets.DatasetDict) and all(
        any(name in data for name in names) for names in OFFICIAL_SPLIT_NAMES.values()
    )


def official_splits(dataset_dict):
    """The corpus's own train / validation / test splits (MELD's train, dev and test), as the `DatasetDict` one fold
    of `leave_one_session_out` gives: model selection on validation, the test split reported. A `dev` split is
    renamed `validation`; other splits are left out. Raises when a split is missing or empty, or when an id is in
    more than one split."""
    if not has_official_splits(dataset_dict):
        got = list(dataset_dict) if isinstance(dataset_dict, datasets.DatasetDict) else type(dataset_dict).__name__
        raise ValueError(f"official splits need a DatasetDict with train, validation (or dev) and test, got {got}")
    splits = {}
    for target, names in OFFICIAL_SPLIT_NAMES.items():
        splits[target] = dataset_dict[next(name for name in names if name in dataset_dict)]
        if len(splits[target]) == 0:
            raise ValueError(f"the official {target} split is empty")
    ids = {name: set(split.with_format(None)["id"][:]) for name, split in splits.items()}
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        shared = sorted(ids[first] & ids[second])
        if shared:
            raise ValueError(f"{len(shared)} id(s) are in both the {first} and the {second} split: {shared[:5]}")
    return datasets.DatasetDict(splits)


__all__ = ["apply_labels", "has_official_splits", "label_names", "official_splits", "parse_labels", "resolve_labels"]
