"""The class list of a run (`--labels`, a builder's own set, a manifest's sorted labels) and official splits."""

import logging

import datasets
import pytest

from fdrl.data.labels import (
    apply_labels,
    has_official_splits,
    label_names,
    official_splits,
    parse_labels,
    resolve_labels,
)
from fdrl.data.manifest import leave_one_session_out


def test_parse_labels():
    assert parse_labels(None) is None and parse_labels(" ") is None
    assert parse_labels("neu, ang,sad") == ("neu", "ang", "sad")
    assert parse_labels(["a", "b"]) == ("a", "b")
    with pytest.raises(ValueError, match="at least two"):
        parse_labels("neu")
    with pytest.raises(ValueError, match="neu more than once"):
        parse_labels("neu,ang,neu")
    with pytest.raises(ValueError, match="non-empty class names"):
        parse_labels("neu,,ang")


def test_explicit_labels_win_then_the_corpus_set_then_the_sorted_labels(caplog):
    caplog.set_level(logging.INFO, logger="fdrl.data.labels")
    found = ["sad", "neu", "sad", "ang"]
    assert resolve_labels(found, labels="sad,neu,ang,hap", corpus_labels=("ang", "hap", "neu", "sad")) == (
        "sad",
        "neu",
        "ang",
        "hap",
    )
    assert resolve_labels(found, corpus_labels=("ang", "hap", "neu", "sad")) == ("ang", "hap", "neu", "sad")
    assert resolve_labels(found, source="m.csv") == ("ang", "neu", "sad")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "classes (4, from --labels): sad, neu, ang, hap",
        "classes (4, from the classes of the data): ang, hap, neu, sad",
        "classes (3, from the sorted labels of m.csv): ang, neu, sad",
    ]


def test_a_label_outside_the_classes_is_refused_with_the_known_ones_and_the_flag():
    with pytest.raises(ValueError) as error:
        resolve_labels(
            ["neu", "fru", "ang", "fru"], labels="neu,ang", source="m.csv", where=["row 1", "row 2", "row 3", "row 4"]
        )
    message = str(error.value)
    assert message.startswith("2 unknown label(s) in m.csv (known: neu, ang, from --labels): 'fru' (2 row(s)). ")
    assert "row 2: 'fru'; row 4: 'fru'" in message and "--labels" in message.split("Fix those rows")[1]


def _corpus():
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neutral", "joy", "anger"]),
        }
    )

    def split(name, labels):
        return datasets.Dataset.from_dict(
            {"id": [f"{name}/{i}" for i in range(len(labels))], "text": ["x"] * len(labels), "label": labels},
            features=features,
        )

    return datasets.DatasetDict(
        {"train": split("train", [0, 1, 2, 0]), "dev": split("dev", [1, 0]), "test": split("test", [2, 2, 0])}
    )


def test_apply_labels_reorders_a_builders_classes():
    corpus = _corpus()
    assert apply_labels(corpus, None) is corpus  # no --labels: the builder's own order
    reordered = apply_labels(corpus, "anger,neutral,joy")
    assert label_names(reordered) == ("anger", "neutral", "joy")
    assert reordered["train"]["label"][:] == [1, 2, 0, 1] and reordered["test"]["label"][:] == [0, 0, 1]
    assert reordered["train"]["id"][:] == corpus["train"]["id"][:]
    with pytest.raises(ValueError, match=r"2 unknown label\(s\) .*'joy' \(2 row\(s\)\).*train row 2: 'joy'"):
        apply_labels(corpus, "anger,neutral")


def test_official_splits_have_the_shape_of_a_fold():
    corpus = _corpus()
    assert has_official_splits(corpus) and not has_official_splits(corpus["train"])
    splits = official_splits(corpus)
    assert list(splits) == ["train", "validation", "test"]  # dev renamed to validation
    assert [len(splits[name]) for name in splits] == [4, 2, 3]
    assert splits["validation"]["id"][:] == ["dev/0", "dev/1"]
    # the same keys and columns as one leave-one-session-out fold
    sessions = corpus["train"].add_column("session", [1, 1, 2, 2])
    fold = leave_one_session_out(sessions, test_session=2, validation_fraction=0.0)
    assert list(fold) == list(splits) and set(fold["train"].column_names) - {"session"} == set(
        splits["train"].column_names
    )
    with pytest.raises(ValueError, match="need a DatasetDict with train, validation"):
        official_splits(datasets.DatasetDict({"train": corpus["train"], "test": corpus["test"]}))
    leaked = datasets.DatasetDict(
        {"train": corpus["train"], "validation": corpus["dev"], "test": corpus["train"].select([3])}
    )
    with pytest.raises(ValueError, match=r"1 id\(s\) are in both the train and the test split: \['train/3'\]"):
        official_splits(leaked)
    empty = datasets.DatasetDict(
        {"train": corpus["train"], "validation": corpus["dev"].select([]), "test": corpus["test"]}
    )
    with pytest.raises(ValueError, match="official validation split is empty"):
        official_splits(empty)


def test_a_fold_with_an_empty_validation_split_is_named_not_a_datasets_error():
    """2 training utterances and --validation_fraction 0.1 leave no validation utterance: the error says which
    split and what to raise (it was datasets' "Failed to concatenate on axis=1", from adding `length`)."""
    from fdrl.data.corpus import fold_splits

    def session(number, labels, ends):  # as the IEMOCAP builder gives them: one split per session
        return datasets.Dataset.from_dict(
            {
                "id": [f"s{number}/{i}" for i in range(len(labels))],
                "text": ["x"] * len(labels),
                "label": labels,
                "session": [number] * len(labels),
                "start": [0.0] * len(labels),
                "end": ends,
            }
        )

    # session 1: two of each class; session 2 is the test session
    sessions = datasets.DatasetDict(
        {
            "session1": session(1, [0, 0, 1, 1, 2, 2], [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]),
            "session2": session(2, [0, 1], [2.5, 3.0]),
        }
    )
    with pytest.raises(ValueError, match=r"the validation split is empty \(raise --validation_fraction\)$"):
        fold_splits(sessions, test_session=2, validation_fraction=0.1, seed=0)  # round(2 x 0.1) = 0 per class
    splits = fold_splits(sessions, test_session=2, validation_fraction=0.5, seed=0)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [3, 3, 2]
    assert splits["test"]["length"][:] == [40000, 48000]  # (end - start) x 16 kHz


def test_the_official_train_split_must_hold_every_class():
    from fdrl.data.corpus import OFFICIAL, check_training_classes, corpus_folds

    corpus = _corpus()
    assert corpus_folds(corpus, None) == [OFFICIAL]
    check_training_classes(corpus, [OFFICIAL], ["neutral", "joy", "anger"])  # train has all three: no error
    corpus["train"] = corpus["train"].select([0, 1, 3])  # anger only in dev and test
    lacking = r"^the official splits: the train split lacks anger \(it has neutral \(2\), joy \(1\)\); every class"
    with pytest.raises(ValueError, match=lacking):
        check_training_classes(corpus, [OFFICIAL], ["neutral", "joy", "anger"])
