import csv
import json
import logging
import os
import re

import datasets
import pytest

from fdrl.data.manifest import DEFAULT_LABEL2ID, leave_one_session_out, load_manifest
from iemocap_fixture import make_iemocap_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_iemocap_fixture(tmp_path_factory.mktemp("iemocap"), sessions=(1, 2, 3), defects=False)


def four_class_rows(fixture):
    """Manifest rows for the fixture's four-class utterances, audio paths relative to data_dir."""
    return [
        {
            "id": u["id"],
            "audio": os.path.relpath(u["wav"], fixture["data_dir"]),
            "text": u["text"],
            "label": u["emotion"],
            "speaker": u["speaker"],
            "session": u["session"],
        }
        for u in fixture["utterances"].values()
        if u["label_4class"]
    ]


def write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_csv_manifest(fixture):
    rows = [row for row in four_class_rows(fixture) if row["label"] != "exc"]
    path = write_csv(fixture["data_dir"] / "manifest.csv", rows)
    dataset = load_manifest(path)
    assert list(dataset.features) == ["id", "audio", "text", "label", "emotion", "session", "speaker"]
    assert dataset.features["audio"] == datasets.Audio(sampling_rate=16000)
    assert dataset.features["label"].names == ["ang", "hap", "neu", "sad"]
    assert dataset["id"][:] == [row["id"] for row in rows]
    assert dataset["emotion"][:] == [row["label"] for row in rows]
    assert dataset["label"][:] == [DEFAULT_LABEL2ID[row["label"]] for row in rows]
    assert dataset["session"][:] == [row["session"] for row in rows]
    assert dataset["speaker"][:] == [row["speaker"] for row in rows]
    first = dataset[0]
    assert first["text"] == "Excuse me."
    assert first["audio"]["sampling_rate"] == 16000
    assert len(first["audio"]["array"]) == fixture["utterances"][first["id"]]["num_samples"]


def test_jsonl_manifest_with_fold_and_merged_labels(fixture, tmp_path):
    rows = four_class_rows(fixture)
    for row in rows:
        row["fold"] = row.pop("session")
        row["audio"] = str(fixture["data_dir"] / row["audio"])  # absolute paths
        del row["id"], row["speaker"]
    path = write_jsonl(tmp_path / "manifest.jsonl", rows)
    label2id = {"ang": 0, "hap": 1, "exc": 1, "neu": 2, "sad": 3}
    dataset = load_manifest(path, label2id=label2id)
    assert dataset.features["label"].names == ["ang", "hap", "neu", "sad"]
    assert dataset["label"][:].count(1) == sum(row["label"] in ("hap", "exc") for row in rows) == 6
    assert dataset["emotion"][:].count("exc") == 3
    assert dataset["session"][:] == [row["fold"] for row in rows]
    assert dataset["id"][:] == [row["audio"] for row in rows]  # no id column: the path as written
    assert set(dataset["speaker"][:]) == {""}


def test_relative_paths_resolve_against_the_manifest_folder_or_base_dir(fixture, tmp_path):
    rows = four_class_rows(fixture)[:3]
    manifest_dir = fixture["data_dir"] / "Session1"
    for row in rows:
        row["audio"] = os.path.relpath(fixture["data_dir"] / row["audio"], manifest_dir)
    dataset = load_manifest(write_csv(manifest_dir / "nested.csv", rows))
    undecoded = dataset.cast_column("audio", datasets.Audio(decode=False))["audio"][:]
    assert [a["path"] for a in undecoded] == [str(fixture["utterances"][row["id"]]["wav"]) for row in rows]
    elsewhere = write_csv(tmp_path / "elsewhere.csv", rows)
    with pytest.raises(FileNotFoundError):
        load_manifest(elsewhere)
    assert len(load_manifest(elsewhere, base_dir=manifest_dir)) == 3


def test_labels_outside_explicit_labels_are_reported_by_row(fixture, tmp_path):
    rows = four_class_rows(fixture)[:4]
    rows[1]["label"], rows[3]["label"] = "bored", "exc"
    for path in (write_csv(tmp_path / "m.csv", rows), write_jsonl(tmp_path / "m.jsonl", rows)):
        with pytest.raises(ValueError) as error:
            load_manifest(path, base_dir=fixture["data_dir"], labels="ang,hap,neu,sad")
        message = str(error.value)
        assert "2 unknown label(s)" in message and "known: ang, hap, neu, sad, from --labels" in message
        assert "'bored' (1 row(s)), 'exc' (1 row(s))" in message and "set the classes with --labels" in message
        header = 1 if path.suffix == ".csv" else 0
        assert f"row 2 (line {2 + header}): 'bored'" in message
        assert f"row 4 (line {4 + header}): 'exc'" in message


def test_missing_audio_is_reported_by_row_and_path(fixture, tmp_path, caplog):
    rows = four_class_rows(fixture)[:4]
    rows[2]["audio"] = "Session1/sentences/wav/nowhere.wav"
    path = write_csv(tmp_path / "m.csv", rows)
    missing = str(fixture["data_dir"] / "Session1" / "sentences" / "wav" / "nowhere.wav")
    with pytest.raises(FileNotFoundError, match="1 audio file") as error:
        load_manifest(path, base_dir=fixture["data_dir"])
    assert f"row 3 (line 4): {missing}" in str(error.value)
    caplog.set_level(logging.WARNING, logger="fdrl.data.manifest")
    dataset = load_manifest(path, base_dir=fixture["data_dir"], strict=False)
    assert dataset["id"][:] == [rows[0]["id"], rows[1]["id"], rows[3]["id"]]
    assert any("Skipped 1 row(s)" in r.getMessage() and missing in r.getMessage() for r in caplog.records)


def test_empty_transcripts_are_reported(fixture, tmp_path, caplog):
    rows = four_class_rows(fixture)[:4]
    rows[0]["text"] = "   "
    path = write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(ValueError, match=r"1 empty transcript\(s\) .*row 1 \(line 2\)"):
        load_manifest(path, base_dir=fixture["data_dir"])
    caplog.set_level(logging.WARNING, logger="fdrl.data.manifest")
    dataset = load_manifest(path, base_dir=fixture["data_dir"], strict=False)
    assert dataset["text"][:][0] == "" and len(dataset) == 4
    assert any("empty transcript" in r.getMessage() and "row 1" in r.getMessage() for r in caplog.records)


def test_missing_columns_and_bad_values(fixture, tmp_path):
    rows = four_class_rows(fixture)[:3]
    with pytest.raises(ValueError, match="no column 'text'"):
        load_manifest(write_csv(tmp_path / "a.csv", rows, ["audio", "label"]), base_dir=fixture["data_dir"])
    with pytest.raises(ValueError, match="no column 'transcript'"):
        load_manifest(write_csv(tmp_path / "b.csv", rows), base_dir=fixture["data_dir"], text_column="transcript")
    rows[1]["session"] = "two"
    with pytest.raises(ValueError, match=r"'session' must be an integer .*row 2 \(line 3\): 'two'"):
        load_manifest(write_csv(tmp_path / "c.csv", rows), base_dir=fixture["data_dir"])
    rows[1]["session"], rows[2]["id"] = 1, rows[0]["id"]
    with pytest.raises(ValueError, match="Duplicate ids"):
        load_manifest(write_csv(tmp_path / "d.csv", rows), base_dir=fixture["data_dir"])
    with pytest.raises(ValueError, match="label2id"):
        load_manifest(tmp_path / "d.csv", label2id={"ang": 0, "sad": 2})
    with pytest.raises(ValueError, match=r"\.csv, \.tsv"):
        load_manifest(write_csv(tmp_path / "e.txt", rows))
    with pytest.raises(FileNotFoundError, match="Manifest not found"):
        load_manifest(tmp_path / "absent.csv")


def test_leave_one_session_out_on_a_manifest(fixture, tmp_path):
    rows = four_class_rows(fixture)
    label2id = {"ang": 0, "hap": 1, "exc": 1, "neu": 2, "sad": 3}
    dataset = load_manifest(write_csv(tmp_path / "m.csv", rows), label2id=label2id, base_dir=fixture["data_dir"])
    fold = leave_one_session_out(dataset, test_session=2, validation_fraction=0.5)
    assert len(fold["test"]) == sum(row["session"] == 2 for row in rows) == 5
    assert len(fold["train"]) + len(fold["validation"]) == len(rows) - 5
    test_ids = set(fold["test"]["id"][:])
    assert not test_ids & (set(fold["train"]["id"][:]) | set(fold["validation"]["id"][:]))
    with pytest.raises(ValueError, match="test_session"):
        leave_one_session_out(dataset, test_session=4)
    without_session = write_csv(tmp_path / "n.csv", rows[:3], ["audio", "text", "label"])
    no_session = load_manifest(without_session, base_dir=fixture["data_dir"])
    assert set(no_session["session"][:]) == {-1}
    with pytest.raises(ValueError, match=r"sessions \[\], got 1"):
        leave_one_session_out(no_session, test_session=1)


def test_hints_name_what_the_user_can_do(fixture, tmp_path):
    """Issue 12, item 8: the hints said "pass strict=False" (run_fdrl.py has no such flag) and "give an 'id' column"
    to manifests that had one."""
    rows = four_class_rows(fixture)[:3]
    rows[2]["id"] = rows[0]["id"]
    with_ids = write_csv(tmp_path / "ids.csv", rows)
    with pytest.raises(ValueError) as error:
        load_manifest(with_ids, base_dir=fixture["data_dir"])
    assert str(error.value) == (
        f"Duplicate ids in {with_ids}, the 'id' column must be unique (a row with an empty id "
        f"takes its audio path): {rows[0]['id']}"
    )

    rows[2]["audio"] = rows[0]["audio"]
    without_ids = write_csv(tmp_path / "paths.csv", rows, ["audio", "text", "label", "session"])
    with pytest.raises(ValueError) as error:
        load_manifest(without_ids, base_dir=fixture["data_dir"])
    assert str(error.value) == (
        f"Duplicate ids in {without_ids}, without an 'id' column the id is the audio path, so "
        f"these files are listed twice; add an 'id' column: {rows[0]['audio']}"
    )

    rows = four_class_rows(fixture)[:2]
    rows[1]["text"] = ""
    empty = write_csv(tmp_path / "empty.csv", rows)
    with pytest.raises(ValueError) as error:
        load_manifest(empty, base_dir=fixture["data_dir"])
    assert str(error.value) == (
        f"1 empty transcript(s) in {empty}: fill them in or remove those rows (from Python, "
        "load_manifest(..., strict=False) keeps them with text ''): row 2 (line 3)"
    )


def test_unreadable_manifests_are_named_by_training(fixture, tmp_path):
    """Issue 18, cause 11: a manifest that is not UTF-8 gave a bare UnicodeDecodeError, a header-only one datasets'
    "Keys mismatch". Cause 17: the unknown-label error says how to set the classes."""
    import run_fdrl

    wav = os.path.abspath(next(iter(fixture["utterances"].values()))["wav"])
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"audio,text,label,session\n{wav},tr\xe8s bien,neu,1\n".encode("latin-1"))
    offset = len(f"audio,text,label,session\n{wav},tr".encode())
    header_only = write_csv(tmp_path / "header.csv", [], columns=["audio", "text", "label", "session"])
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("\n\n")
    cases = {
        latin1: f"{latin1} is not UTF-8 text (line 2: byte 0xe8 at offset {offset}): save it as UTF-8",
        header_only: f"{header_only} has no rows: a manifest needs a header and one row per utterance",
        empty_jsonl: f"{empty_jsonl} has no rows: a manifest needs a header and one row per utterance",
    }
    for manifest, message in cases.items():
        with pytest.raises(ValueError) as error:
            run_fdrl.main(
                [
                    "--manifest",
                    str(manifest),
                    "--folds",
                    "1",
                    "--output_dir",
                    str(tmp_path / "out"),
                    "--model_preset",
                    "tiny",
                    "--use_cpu",
                    "true",
                    "--report_to",
                    "none",
                ]
            )
        assert str(error.value) == message
        with pytest.raises(ValueError, match=re.escape(message)):
            load_manifest(manifest)
    assert not (tmp_path / "out" / "seed42").exists()


SIX_CLASSES = ("ang", "exc", "fru", "hap", "neu", "sad")


def six_class_rows(fixture):
    return [
        {
            "id": u["id"],
            "audio": os.path.relpath(u["wav"], fixture["data_dir"]),
            "text": u["text"],
            "label": u["emotion"],
            "speaker": u["speaker"],
            "session": u["session"],
        }
        for u in fixture["utterances"].values()
        if u["emotion"] in SIX_CLASSES and os.path.isfile(u["wav"])
    ]


def test_a_six_class_manifest_gets_its_sorted_labels_and_logs_them(fixture, tmp_path, caplog):
    rows = six_class_rows(fixture)
    assert {row["label"] for row in rows} == set(SIX_CLASSES)
    caplog.set_level(logging.INFO, logger="fdrl.data.labels")
    dataset = load_manifest(write_csv(tmp_path / "six.csv", rows), base_dir=fixture["data_dir"])
    assert dataset.features["label"].names == list(SIX_CLASSES)  # sorted: ang exc fru hap neu sad
    assert dataset["label"][:] == [SIX_CLASSES.index(row["label"]) for row in rows]
    assert any(
        r.getMessage() == "classes (6, from the sorted labels of " + str(tmp_path / "six.csv") + "): "
        "ang, exc, fru, hap, neu, sad"
        for r in caplog.records
    )


def test_explicit_labels_set_the_order_of_six_classes(fixture, tmp_path):
    rows = six_class_rows(fixture)
    order = ["neu", "fru", "sad", "ang", "hap", "exc"]
    dataset = load_manifest(write_csv(tmp_path / "six.csv", rows), base_dir=fixture["data_dir"], labels=order)
    assert dataset.features["label"].names == order
    assert dataset["label"][:] == [order.index(row["label"]) for row in rows]
    assert dataset["emotion"][:] == [row["label"] for row in rows]
    same = load_manifest(tmp_path / "six.csv", base_dir=fixture["data_dir"], labels=",".join(order))
    assert same["label"][:] == dataset["label"][:]
    # a class more than the data holds is kept (a class may be absent from a corpus), one fewer is refused
    seven = load_manifest(tmp_path / "six.csv", base_dir=fixture["data_dir"], labels=order + ["sur"])
    assert seven.features["label"].names[-1] == "sur" and seven.features["label"].num_classes == 7
    with pytest.raises(ValueError, match=r"unknown label\(s\) .*known: neu, fru, sad, ang, hap, from --labels"):
        load_manifest(tmp_path / "six.csv", base_dir=fixture["data_dir"], labels=order[:5])
    with pytest.raises(ValueError, match="either labels or label2id"):
        load_manifest(tmp_path / "six.csv", labels=order, label2id={"neu": 0, "ang": 1})


def test_rows_without_a_label_are_refused(fixture, tmp_path):
    rows = six_class_rows(fixture)[:3]
    rows[1]["label"] = " "
    with pytest.raises(ValueError, match=r"1 row\(s\) of .* have no label: row 2 \(line 3\)"):
        load_manifest(write_csv(tmp_path / "m.csv", rows), base_dir=fixture["data_dir"])
