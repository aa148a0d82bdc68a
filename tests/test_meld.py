"""The MELD builder on a fixture in MELD.Raw's exact layout, with the release's quirks (see tests/meld_fixture.py)."""

import logging
import shutil
from collections import Counter

import numpy as np
import pytest
from meld_fixture import (
    CORRUPTED,
    DEV_MISSING_VIDEO,
    NO_AUDIO_TRACK,
    have_ffmpeg,
    make_meld_fixture,
)
from test_run_fdrl import TINY

from fdrl.data.audio import decode_audio
from fdrl.data.labels import official_splits
from fdrl.data.meld import (
    EMOTIONS,
    Meld,
    decode_video_audio,
    input_fingerprint,
    load_meld,
)


pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="the MELD fixture's videos are made with the ffmpeg CLI")
SPLITS = {"train": "train", "validation": "dev", "test": "test"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_meld_fixture(tmp_path_factory.mktemp("meld"))


@pytest.fixture(scope="module")
def built(fixture, tmp_path_factory):
    """(dataset, log records of the build)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fdrl.data.meld")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        dataset = load_meld(fixture["data_dir"], cache_dir=str(tmp_path_factory.mktemp("cache")))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return dataset, [record.getMessage() for record in records]


def test_splits_counts_and_classes(built, fixture):
    dataset, _ = built
    assert list(dataset) == ["train", "validation", "test"]
    assert dataset["train"].features["label"].names == list(EMOTIONS)
    assert {name: len(dataset[name]) for name in dataset} == {"train": 12, "validation": 8, "test": 8}
    for name, meld_split in SPLITS.items():
        assert dataset[name]["id"][:] == fixture["kept"][meld_split]  # CSV order, skips left out
        expected = Counter(fixture["utterances"][u]["emotion"] for u in fixture["kept"][meld_split])
        assert Counter(EMOTIONS[label] for label in dataset[name]["label"][:]) == expected
    # the fixture's 31 CSV rows cycle through the seven emotions (5, 5, 5, 4, 4, 4, 4); the skipped rows are
    # dia125_utt3 (row 13: disgust), dev dia110_utt7 (row 21: fear) and test dia1_utt2 (row 28: fear)
    every = Counter(EMOTIONS[label] for name in dataset for label in dataset[name]["label"][:])
    assert every == {"neutral": 5, "joy": 5, "surprise": 5, "anger": 4, "sadness": 4, "disgust": 3, "fear": 2}


def test_every_field_matches_the_csv(built, fixture):
    dataset, _ = built
    for name in dataset:
        for row in dataset[name].remove_columns("audio"):
            expected = fixture["utterances"][row["id"]]
            assert row["text"] == expected["text"] and row["speaker"] == expected["speaker"]
            assert EMOTIONS[row["label"]] == expected["emotion"] and row["sentiment"] == expected["sentiment"]
            assert (row["dialogue_id"], row["utterance_id"]) == (expected["dialogue_id"], expected["utterance_id"])
            assert row["id"] == f"{SPLITS[name]}/dia{row['dialogue_id']}_utt{row['utterance_id']}"


def test_transcripts_exact_and_repaired(built):
    dataset, _ = built
    texts = {row["id"]: row["text"] for name in dataset for row in dataset[name].remove_columns("audio")}
    assert texts["train/dia1_utt1"] == "I don’t know."  # the raw byte 0x92 read as Windows-1252
    assert texts["dev/dia0_utt1"] == "I don’t know."  # U+0092 in a UTF-8 file
    assert texts["train/dia0_utt2"] == 'He said "fine", and left.'  # quoted in the CSV
    assert texts["test/dia2_utt2"] == ""  # an empty Utterance is kept


def test_audio_is_the_videos_track_at_16khz_mono(built, fixture):
    dataset, _ = built
    for name in dataset:
        for row in dataset[name]:
            samples, rate = decode_audio(row["audio"], row["id"])
            expected = fixture["utterances"][row["id"]]
            assert rate == 16000 and samples.ndim == 1
            assert abs(len(samples) - expected["duration"] * 16000) <= 0.03 * 16000  # AAC padding: a few ms
            spectrum = np.abs(np.fft.rfft(samples))
            peak = np.argmax(spectrum) * 16000 / len(samples)
            assert abs(peak - expected["frequency"]) <= 5, row["id"]  # this utterance's tone, not another's


def test_every_quirk_is_counted_in_a_warning(built):
    _, messages = built
    folder = "output_repeated_splits_test"

    def logged(*parts):
        return any(all(part in message for part in parts) for message in messages)

    assert logged(
        "train: skipped 1 utterance(s) whose video has no usable audio track",
        f"{CORRUPTED} (cannot be decoded (Could not open input file",
    )
    assert logged(
        "test: skipped 1 utterance(s) whose video has no usable audio track", f"{NO_AUDIO_TRACK} (has no audio track)"
    )
    assert logged("dev: skipped 1 utterance(s) of the CSV without a video", DEV_MISSING_VIDEO)
    assert logged("dev: ignored 1 video(s)", "without a row in the CSV", "dia66_utt9.mp4")
    assert logged("test: ignored 1 video(s)", "without a row in the CSV", "dia108_utt2.mp4")
    assert logged("test: ignored 1 final_videos_test*.mp4 file(s)", folder, "final_videos_testdia101_utt0.mp4")
    assert logged("test: ignored 2 hidden file(s)", ".DS_Store, ._dia0_utt0.mp4")
    assert logged("train_sent_emo.csv is not UTF-8 on line(s) 6")
    assert logged("train: repaired the text of 1 row(s) of train_sent_emo.csv", "train/dia1_utt1")
    assert logged("dev: repaired the text of 1 row(s) of dev_sent_emo.csv", "dev/dia0_utt1")
    assert logged("test: kept 1 utterance(s) with an empty transcript", "test/dia2_utt2")
    # the published sizes, and the CSV rows the dataset lacks
    assert logged(
        "MELD train: 12 utterances (-9977 against the published 9989) in 4 dialogues (published 1039), "
        "13 rows in train_sent_emo.csv; "
        f"not in the dataset: {CORRUPTED}"
    )
    assert logged(
        "MELD dev: 8 utterances (-1101 against the published 1109) in 3 dialogues (published 114), "
        "9 rows in dev_sent_emo.csv; "
        f"not in the dataset: {DEV_MISSING_VIDEO}"
    )
    assert logged("MELD test: 8 utterances (-2602 against the published 2610)", NO_AUDIO_TRACK)


def test_a_cached_load_still_reports_the_counts(built, fixture, tmp_path, caplog):
    cache = str(tmp_path / "cache")
    load_meld(fixture["data_dir"], cache_dir=cache)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="fdrl.data.meld")
    again = load_meld(fixture["data_dir"], cache_dir=cache)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("ignored" in m for m in messages)  # the cache was read, nothing rebuilt
    assert sum(m.startswith("MELD ") for m in messages) == 3 and any(CORRUPTED in m for m in messages)
    assert again["train"]["id"][:] == built[0]["train"]["id"][:]


def test_official_splits_of_meld(built):
    splits = official_splits(built[0])
    assert {name: len(split) for name, split in splits.items()} == {"train": 12, "validation": 8, "test": 8}


def test_strict_refuses_a_row_without_a_video(fixture, tmp_path):
    message = f"1 utterance\\(s\\) of the dev CSV have no video .*{DEV_MISSING_VIDEO}"
    with pytest.raises(FileNotFoundError, match=message):
        load_meld(fixture["data_dir"], cache_dir=str(tmp_path), strict=True)
    data_dir = fixture["data_dir"]
    assert decode_video_audio(str(data_dir / "train" / "train_splits" / "dia125_utt3.mp4"))[0] is None
    wav, problem = decode_video_audio(str(data_dir / "train" / "train_splits" / "dia0_utt0.mp4"))
    assert problem is None and wav[:4] == b"RIFF"


def test_input_fingerprint_follows_the_inputs(fixture, tmp_path):
    data_dir = tmp_path / "MELD.Raw"
    shutil.copytree(fixture["data_dir"], data_dir)
    before = input_fingerprint(data_dir)
    assert input_fingerprint(data_dir) == before
    csv = data_dir / "dev_sent_emo.csv"
    csv.write_bytes(csv.read_bytes().replace(b"Pivot. Pivot!", b"Pivot! Pivot!"))
    after_csv = input_fingerprint(data_dir)
    video = data_dir / "train" / "train_splits" / "dia125_utt3.mp4"
    shutil.copy(data_dir / "train" / "train_splits" / "dia0_utt0.mp4", video)  # a re-cut video, as in issue 39
    assert len({before, after_csv, input_fingerprint(data_dir)}) == 3
    assert Meld(data_dir=str(data_dir)).config.input_fingerprint == input_fingerprint(data_dir)


def test_layout_errors_name_the_problem(fixture, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_meld(tmp_path / "nowhere", cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="did you mean its MELD.Raw subfolder"):
        load_meld(fixture["data_dir"].parent, cache_dir=str(tmp_path / "c"))
    data_dir = tmp_path / "MELD.Raw"
    data_dir.mkdir()
    for name in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        shutil.copy(fixture["data_dir"] / name, data_dir / name)
    (data_dir / "train.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"No train video folder .*train\.tar\.gz is there: unpack it"):
        load_meld(data_dir, cache_dir=str(tmp_path / "c"))
    shutil.copytree(fixture["data_dir"] / "train", data_dir / "train")
    shutil.copytree(fixture["data_dir"] / "dev_splits_complete", data_dir / "dev_splits_complete")
    shutil.copytree(fixture["data_dir"] / "output_repeated_splits_test", data_dir / "output_repeated_splits_test")
    csv = data_dir / "test_sent_emo.csv"
    csv.write_bytes(csv.read_bytes().replace(b",anger,", b",angry,", 1))
    with pytest.raises(ValueError, match=r"test_sent_emo.csv:4: unknown emotion 'angry' \(known: neutral, joy"):
        load_meld(data_dir, cache_dir=str(tmp_path / "c"))
    csv.write_bytes(csv.read_bytes().replace(b"Sentiment,", b"Feeling,", 1))
    with pytest.raises(ValueError, match="has no column 'Sentiment'"):
        load_meld(data_dir, cache_dir=str(tmp_path / "c"))


def test_the_training_time_audio_check_reads_the_stored_audio(built):
    from fdrl.data.validation import find_bad_audio

    dataset, _ = built
    assert find_bad_audio(dataset["train"], min_samples=400) == []  # 25 ms, the receptive field of wav2vec2
    bad = find_bad_audio(dataset["train"], min_samples=16000)  # 1 s: every fixture utterance is shorter
    assert len(bad) == 12 and bad[0].path == "embedded audio" and bad[0].problem.startswith("too short: ")


def test_strict_stops_at_a_video_without_usable_audio(fixture, tmp_path):
    import datasets

    data_dir = tmp_path / "MELD.Raw"
    shutil.copytree(fixture["data_dir"], data_dir)
    dev = data_dir / "dev_sent_emo.csv"
    dev.write_bytes(b"".join(line for line in dev.read_bytes().splitlines(keepends=True) if b",110,7," not in line))
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        load_meld(data_dir, cache_dir=str(tmp_path / "cache"), strict=True)
    assert isinstance(error.value.__cause__, ValueError)
    cause = str(error.value.__cause__)
    assert f"the audio of {CORRUPTED} (" in cause and "dia125_utt3.mp4" in cause


# ----- the protocol on MELD's official splits (run_fdrl.py --dataset meld) --------------------------------------------
TINY_RUN = [*TINY, "--num_train_epochs", "2", "--per_device_train_batch_size", "4"]  # later flags win


def _weighted_f1_by_hand(matrix):
    """Each class's F1 (2 tp / (support + predicted)) weighted by its support, from a confusion matrix (rows: truth)."""
    total, weighted = 0, 0.0
    for c, row in enumerate(matrix):
        support, predicted = sum(row), sum(r[c] for r in matrix)
        if support:
            weighted += support * 2 * row[c] / (support + predicted)
            total += support
    return weighted / total


@pytest.fixture(scope="module")
def meld_run(fixture, tmp_path_factory):
    import run_fdrl

    output_dir = tmp_path_factory.mktemp("meld_run")
    argv = ["--dataset", "meld", "--data_dir", str(fixture["data_dir"]), "--output_dir", str(output_dir)]
    argv += ["--cache_dir", str(output_dir.parent / "meld_run_cache"), "--seeds", "0", "1"]
    summary = run_fdrl.main([*argv, "--systems", "S0", "text", *TINY_RUN])
    return output_dir, summary


def test_the_protocol_runs_on_the_official_splits_once_per_seed(meld_run, fixture):
    import json

    output_dir, summary = meld_run
    results = json.loads((output_dir / "results.json").read_text())
    assert [(run["seed"], run["fold"]) for run in results["runs"]] == [(0, "official"), (1, "official")]
    assert results["label_names"] == list(EMOTIONS) and list(results["systems"]) == ["S0", "text"]
    # the test split: MELD's test utterances with audio, less test/dia2_utt2 (an empty transcript, skipped)
    expected = [u for u in fixture["kept"]["test"] if u != "test/dia2_utt2"]
    for seed in (0, 1):
        record = json.loads((output_dir / "runs" / f"seed{seed}_official.json").read_text())
        assert record["fold"] == "official" and record["test_ids"] == expected
        splits = json.loads((output_dir / f"seed{seed}" / "official" / "splits.json").read_text())
        assert splits["train"] == fixture["kept"]["train"] and splits["validation"] == fixture["kept"]["dev"]
        for name in ("S0", "text"):
            metrics = record["systems"][name]
            assert metrics["num_samples"] == len(expected) == 7
            assert metrics["weighted_f1"] == pytest.approx(_weighted_f1_by_hand(metrics["confusion_matrix"]))
    for name in ("S0", "text"):
        values = [run["systems"][name]["weighted_f1"] for run in results["runs"]]
        assert results["systems"][name]["mean"]["weighted_f1"] == pytest.approx(sum(values) / 2)
    table = (output_dir / "results.md").read_text()
    assert "| weighted F1 |" in table.splitlines()[0] and "recall disgust" in table
    assert "| seed | test split | S0 | text |" in table and "| 1 | official |" in table
    # the Hub folder: seed 0's S0 model, with MELD's seven classes, and a card that says how it was tested
    config = json.loads((output_dir / "model" / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(7)] == list(EMOTIONS)
    card = (output_dir / "model" / "README.md").read_text()
    assert "official splits" in card and "Labels (7 classes, in label-id order):** " + ", ".join(EMOTIONS) in card
    assert "name: MELD\n      type: meld\n      split: test (2 seeds)" in card and "name: weighted F1" in card


def test_folds_are_refused_for_meld(fixture, tmp_path):
    import run_fdrl
    from fdrl.data.corpus import corpus_folds

    argv = ["--dataset", "meld", "--data_dir", str(fixture["data_dir"]), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=r"--folds 1: MELD has official train / validation / test splits.*drop"):
        run_fdrl.main([*argv, "--folds", "1", *TINY_RUN])
    assert not (tmp_path / "out").exists()  # refused while parsing, before the corpus is read
    with pytest.raises(ValueError, match="--dataset meld reads --data_dir"):
        run_fdrl.main(["--dataset", "meld", "--manifest", __file__, "--output_dir", str(tmp_path), *TINY_RUN])
    # the same refusal from Python, for any corpus with official splits
    corpus = {"train": None, "validation": None, "test": None}
    import datasets

    empty = datasets.Dataset.from_dict({"id": []})
    corpus = datasets.DatasetDict(dict.fromkeys(corpus, empty))
    with pytest.raises(ValueError, match=r"--folds 1 2: the corpus has official train"):
        corpus_folds(corpus, [1, 2])
    assert corpus_folds(corpus, None) == ["official"]


def test_labels_reorder_melds_classes(built, fixture, tmp_path):
    from types import SimpleNamespace

    from fdrl.data.corpus import OFFICIAL, fold_splits, load_corpus

    order = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    data_args = SimpleNamespace(
        data_dir=str(fixture["data_dir"]), manifest=None, dataset="meld", labels=",".join(order), cache_dir=None
    )
    data_args.cache_dir = str(tmp_path / "cache")
    data = load_corpus(data_args)
    assert data["train"].features["label"].names == list(order)
    original = built[0]
    for name in data:
        assert [order[i] for i in data[name]["label"][:]] == [EMOTIONS[i] for i in original[name]["label"][:]]
    splits = fold_splits(data, OFFICIAL, validation_fraction=0.5, seed=3)
    assert {name: len(split) for name, split in splits.items()} == {"train": 12, "validation": 8, "test": 7}
    # lengths for grouped batches come from the stored WAV bytes (the videos' tones last 0.4 to 0.75 s)
    for row in splits["train"].select(range(3)):
        assert row["length"] == len(decode_audio(row["audio"], row["id"])[0])
    data_args.labels = "neutral,joy"
    with pytest.raises(
        ValueError, match=r"unknown label\(s\) in the MELD builder .*known: neutral, joy, from --labels"
    ):
        load_corpus(data_args)
