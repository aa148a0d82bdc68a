import json
import logging
from collections import Counter

import datasets
import pytest

from fdrl.data import iemocap
from fdrl.data.iemocap import ALL_CLASSES, FOUR_CLASSES, Iemocap, leave_one_session_out, load_iemocap
from iemocap_fixture import make_iemocap_fixture


# Counts of the default fixture (48 labelled utterances, codes cycling over the 11 codes), after its
# three defects: a missing WAV (Ses02F_impro02_M001, neu), a missing transcription line
# (Ses04M_script03_2_M000, neu) and an empty transcript (Ses03M_impro05b_F001, neu, kept).
FOUR_CLASS_COUNTS = {"ang": 5, "hap": 9, "neu": 3, "sad": 5}
FOUR_CLASS_SESSIONS = {1: 5, 2: 4, 3: 5, 4: 2, 5: 6}
ALL_COUNTS = {
    "ang": 5, "hap": 5, "exc": 4, "sad": 5, "neu": 3, "fru": 4, "sur": 4, "fea": 4, "dis": 4, "oth": 4, "xxx": 4,
}  # fmt: skip
ALL_SESSIONS = {1: 8, 2: 7, 3: 12, 4: 7, 5: 12}
LOGGER = "fdrl.data.iemocap"


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return make_iemocap_fixture(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def four_class(fixture, cache_dir):
    return load_iemocap(fixture["data_dir"], cache_dir=cache_dir)


@pytest.fixture(scope="module")
def all_codes(fixture, cache_dir):
    return load_iemocap(fixture["data_dir"], config_name="all", cache_dir=cache_dir)


def rows(dataset_dict):
    """Every row without decoding audio, keyed by id."""
    return {row["id"]: row for split in dataset_dict.values() for row in split.remove_columns("audio")}


def class_counts(dataset):
    names = dataset.features["label"].names
    counts = Counter(dataset["label"][:])
    return {name: counts[i] for i, name in enumerate(names)}


def test_fixture_holds_the_traps(fixture):
    emo_dir = fixture["data_dir"] / "Session1" / "dialog" / "EmoEvaluation"
    for folder in ("Categorical", "Attribute", "Self-evaluation"):
        assert any((emo_dir / folder).glob("*.txt"))
    junk = (emo_dir / "._Ses01F_impro01.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        junk.decode("utf-8")
    transcript = (fixture["data_dir"] / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt").read_text()
    assert "Ses01F_impro01_MXX0 [" in transcript and "\nM: [BREATHING]\n" in transcript and "\n\n" in transcript
    assert {"Ses05M_script01_1", "Ses05M_script01_1b"} <= set(fixture["dialogs"][5])
    assert {"Ses03M_impro05a", "Ses03M_impro05b"} <= set(fixture["dialogs"][3])
    assert fixture["missing_wav"] == ["Ses02F_impro02_M001"]
    assert fixture["missing_transcript"] == ["Ses04M_script03_2_M000"]
    assert fixture["empty_transcript"] == ["Ses03M_impro05b_F001"]
    assert fixture["expected"]["4class"]["per_class"] == FOUR_CLASS_COUNTS
    assert fixture["expected"]["all"]["per_class"] == ALL_COUNTS


def test_four_class_counts(four_class, fixture):
    assert list(four_class) == ["session1", "session2", "session3", "session4", "session5"]
    assert {int(name[-1]): len(split) for name, split in four_class.items()} == FOUR_CLASS_SESSIONS
    merged = datasets.concatenate_datasets(list(four_class.values()))
    assert merged.features["label"].names == list(FOUR_CLASSES) == ["ang", "hap", "neu", "sad"]
    assert class_counts(merged) == FOUR_CLASS_COUNTS
    assert sum(four_class[f"session{s}"]["emotion"][:].count("exc") for s in range(1, 6)) == 4
    for session, ids in fixture["expected"]["4class"]["ids"].items():
        assert four_class[f"session{session}"]["id"][:] == ids


def test_all_codes_counts(all_codes, fixture):
    assert {int(name[-1]): len(split) for name, split in all_codes.items()} == ALL_SESSIONS
    merged = datasets.concatenate_datasets(list(all_codes.values()))
    assert merged.features["label"].names == list(ALL_CLASSES)
    assert class_counts(merged) == ALL_COUNTS
    assert merged["emotion"][:] == [merged.features["label"].int2str(i) for i in merged["label"][:]]
    for session, ids in fixture["expected"]["all"]["ids"].items():
        assert all_codes[f"session{session}"]["id"][:] == ids


def test_features(four_class):
    features = four_class["session1"].features
    assert list(features) == [
        "id", "audio", "text", "label", "emotion", "session", "dialog", "speaker", "gender", "method",
        "start", "end", "valence", "arousal", "dominance",
    ]  # fmt: skip
    assert features["audio"] == datasets.Audio(sampling_rate=16000)
    assert features["session"] == datasets.Value("int32")
    assert features["start"] == datasets.Value("float64")
    assert features["valence"] == datasets.Value("float32")


def test_every_field_matches_the_fixture(all_codes, fixture):
    for utterance_id, row in rows(all_codes).items():
        expected = fixture["utterances"][utterance_id]
        for key in ("session", "dialog", "speaker", "gender", "method", "emotion", "text", "start", "end"):
            assert row[key] == expected[key], (utterance_id, key)
        for key in ("valence", "arousal", "dominance"):
            assert row[key] == pytest.approx(expected[key], abs=1e-4)


def test_speaker_is_the_actor_of_the_turn(four_class):
    by_id = rows(four_class)
    assert by_id["Ses01F_impro01_M000"]["speaker"] == "1M"  # a male turn in a dialog named after F
    assert by_id["Ses01F_impro01_M000"]["gender"] == "M"
    assert by_id["Ses01F_impro01_F000"]["speaker"] == "1F"
    assert by_id["Ses03M_impro05b_M001"]["speaker"] == "3M"
    assert by_id["Ses03F_script01_1_M000"]["speaker"] == "3M"
    assert by_id["Ses05F_impro07_M000"]["session"] == 5
    assert {row["speaker"] for row in by_id.values()} == {f"{s}{g}" for s in range(1, 6) for g in "FM"}
    assert by_id["Ses01F_impro01_M000"]["method"] == "improvised"
    assert by_id["Ses01M_script01_1_F000"]["method"] == "scripted"


def test_exact_texts(all_codes):
    by_id = rows(all_codes)
    assert by_id["Ses01F_impro01_M000"]["text"] == "Do you have your forms?"
    assert by_id["Ses01M_script01_1_M001"]["text"] == "I'm sorry [LAUGHTER] that's  not right."
    assert by_id["Ses02F_impro02_F000"]["text"] == "[BREATHING] Okay."
    assert by_id["Ses05M_script01_1_F000"]["text"] == "I can't believe this happened again."
    assert by_id["Ses05M_script01_1b_F000"]["text"] == "Do you have your forms?"
    assert by_id["Ses03M_impro05b_F001"]["text"] == ""  # empty transcript: kept
    assert not any("XX" in utterance_id for utterance_id in by_id)
    assert "Ses04M_script03_2_M000" not in by_id  # no transcription line: skipped
    assert "Ses02F_impro02_M001" not in by_id  # no WAV: skipped


def test_suffixed_dialogs_are_matched_exactly(all_codes, fixture):
    by_id = rows(all_codes)
    for utterance_id, row in by_id.items():
        assert utterance_id.rsplit("_", 1)[0] == row["dialog"]
    assert by_id["Ses05M_script01_1b_F000"]["dialog"] == "Ses05M_script01_1b"
    assert by_id["Ses05M_script01_1_F000"]["dialog"] == "Ses05M_script01_1"
    assert by_id["Ses03M_impro05a_F000"]["emotion"] == "fru"
    assert by_id["Ses03M_impro05b_F000"]["emotion"] == "oth"
    # A decoded example has no path (it is a torchcodec AudioDecoder): read the paths undecoded.
    session5 = all_codes["session5"]
    paths = session5.cast_column("audio", datasets.Audio(decode=False))["audio"][:]
    for index, path in enumerate(paths):
        example = session5[index]
        expected = fixture["utterances"][example["id"]]
        assert path["path"] == str(expected["wav"])
        assert f"/{expected['dialog']}/{example['id']}.wav" in path["path"]
        assert len(example["audio"]["array"]) == expected["num_samples"]


def test_audio_decodes_to_the_right_length(four_class, fixture):
    for split in four_class.values():
        for index in range(len(split)):
            example = split[index]
            audio = example["audio"]
            assert audio["sampling_rate"] == 16000
            assert audio["array"].ndim == 1
            assert len(audio["array"]) == fixture["utterances"][example["id"]]["num_samples"]


def test_strip_tags(fixture, tmp_path):
    dataset = load_iemocap(fixture["data_dir"], config_name="all", cache_dir=str(tmp_path), strip_tags=True)
    by_id = rows(dataset)
    assert by_id["Ses01M_script01_1_M001"]["text"] == "I'm sorry that's not right."
    assert by_id["Ses02F_impro02_F000"]["text"] == "Okay."
    assert by_id["Ses02F_impro02_M000"]["text"] == "Fine, thank you."
    assert not any("[" in row["text"] for row in by_id.values())


def test_builder_class_and_config_ids(fixture, tmp_path):
    data_dir, cache_dir = str(fixture["data_dir"]), str(tmp_path)
    builder = Iemocap(config_name="4class", data_dir=data_dir, cache_dir=cache_dir)
    stripped = Iemocap(config_name="4class", data_dir=data_dir, cache_dir=cache_dir, strip_tags=True)
    assert builder.config.strip_tags is False and stripped.config.strip_tags is True
    assert builder.config_id != stripped.config_id  # distinct caches
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    assert sum(len(split) for split in dataset.values()) == 22
    assert Iemocap(data_dir=data_dir, cache_dir=cache_dir).config.name == "4class"


def relabel(fixture, utterance_id, code):
    """Change one utterance's emotion code in its EmoEvaluation file, as a corrected annotation would."""
    utterance = fixture["utterances"][utterance_id]
    session_dir = fixture["data_dir"] / f"Session{utterance['session']}"
    path = session_dir / "dialog" / "EmoEvaluation" / f"{utterance['dialog']}.txt"
    text = path.read_text()
    old = f"\t{utterance_id}\t{utterance['emotion']}\t"
    assert text.count(old) == 1
    path.write_text(text.replace(old, f"\t{utterance_id}\t{code}\t"))


def test_rebuild_after_the_folder_changed(tmp_path):
    small = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    assert len(load_iemocap(small["data_dir"], cache_dir=str(tmp_path / "cache"))["session1"]) == 5
    large = make_iemocap_fixture(tmp_path / "data", sessions=(1,), utterances_per_dialog=8, defects=False)
    builder = Iemocap(data_dir=large["data_dir"], cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    assert len(builder.as_dataset()["session1"]) == large["expected"]["4class"]["total"] == 10


def test_a_corrected_label_is_loaded_next_time(tmp_path):
    """Issue 12, item 5: the cache was keyed by the path only, so a corrected label still loaded the old one."""
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    cache_dir = str(tmp_path / "cache")
    before = rows(load_iemocap(fixture["data_dir"], cache_dir=cache_dir))["Ses01F_impro01_F000"]
    assert (before["emotion"], before["label"]) == ("neu", FOUR_CLASSES.index("neu"))
    relabel(fixture, "Ses01F_impro01_F000", "sad")  # same length: only the bytes tell the files apart
    after = rows(load_iemocap(fixture["data_dir"], cache_dir=cache_dir))["Ses01F_impro01_F000"]
    assert (after["emotion"], after["label"]) == ("sad", FOUR_CLASSES.index("sad"))


def test_a_deleted_wav_is_skipped_next_time(tmp_path, caplog):
    """Issue 12, item 5: a WAV deleted after the first load stayed in the cache and crashed when decoded."""
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    cache_dir = str(tmp_path / "cache")
    assert "Ses01F_impro01_M000" in rows(load_iemocap(fixture["data_dir"], cache_dir=cache_dir))
    wav = fixture["utterances"]["Ses01F_impro01_M000"]["wav"]
    wav.unlink()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    dataset = load_iemocap(fixture["data_dir"], cache_dir=cache_dir)
    assert "Ses01F_impro01_M000" not in dataset["session1"]["id"][:]
    assert len(dataset["session1"]) == 4
    warning = next(r.getMessage() for r in caplog.records if "WAV file is missing" in r.getMessage())
    assert warning.startswith("Skipped 1 utterance(s)") and f"Ses01F_impro01_M000 ({wav})" in warning
    assert all(example["audio"].get_all_samples().data.numel() > 0 for example in dataset["session1"])


def test_rebuild_true_rebuilds_what_the_fingerprint_cannot_see(tmp_path, monkeypatch):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    cache_dir = str(tmp_path / "cache")
    monkeypatch.setattr(iemocap, "input_fingerprint", lambda data_dir: "unchanged")
    load_iemocap(fixture["data_dir"], cache_dir=cache_dir)
    relabel(fixture, "Ses01F_impro01_F000", "sad")
    stale = rows(load_iemocap(fixture["data_dir"], cache_dir=cache_dir))["Ses01F_impro01_F000"]
    assert stale["emotion"] == "neu"  # the same cache key: the cache is reused as it is
    rebuilt = rows(load_iemocap(fixture["data_dir"], cache_dir=cache_dir, rebuild=True))["Ses01F_impro01_F000"]
    assert rebuilt["emotion"] == "sad"


def test_input_fingerprint_follows_the_inputs(tmp_path):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1, 2), defects=False)
    data_dir = fixture["data_dir"]
    first = iemocap.input_fingerprint(data_dir)
    assert iemocap.input_fingerprint(data_dir) == first and len(first) == 16
    (data_dir / "Session1" / "dialog" / "EmoEvaluation" / "Categorical" / "extra.txt").write_text("ignored")
    (data_dir / "Session1" / "sentences" / "wav" / "._junk.wav").write_bytes(b"\0")
    assert iemocap.input_fingerprint(data_dir) == first  # what the builder does not read does not count
    transcript = data_dir / "Session2" / "dialog" / "transcriptions" / "Ses02F_impro02.txt"
    said = fixture["utterances"]["Ses02F_impro02_F000"]["text"]
    assert said in transcript.read_text()
    transcript.write_text(transcript.read_text().replace(said, said.upper()))
    second = iemocap.input_fingerprint(data_dir)
    assert second != first
    fixture["utterances"]["Ses02F_impro02_F000"]["wav"].unlink()
    assert iemocap.input_fingerprint(data_dir) not in (first, second)


def test_incomplete_data_is_logged(fixture, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path))
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    wav = next(m for m in messages if "WAV file is missing" in m)
    assert "Skipped 1 utterance(s)" in wav and "Ses02F_impro02_M001" in wav
    assert str(fixture["utterances"]["Ses02F_impro02_M001"]["wav"]) in wav
    assert any("without a transcription line" in m and "Ses04M_script03_2_M000" in m for m in messages)
    assert any("empty transcript" in m and "Ses03M_impro05b_F001" in m for m in messages)
    counts = next(m for m in messages if "5531" in m)
    assert "22 utterances" in counts


def test_matching_counts_are_not_logged(fixture, tmp_path, caplog, monkeypatch):
    expected = fixture["expected"]["4class"]
    published = {"per_class": expected["per_class"], "per_session": expected["per_session"]}
    monkeypatch.setattr(iemocap, "FULL_RELEASE_4CLASS", published)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path))
    assert not any("5531" in record.getMessage() for record in caplog.records)


def test_strict_raises_on_a_missing_wav(fixture, tmp_path):
    path = str(fixture["utterances"]["Ses02F_impro02_M001"]["wav"])
    with pytest.raises(FileNotFoundError, match="Ses02F_impro02_M001") as error:
        load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path), strict=True)
    assert path in str(error.value)


def test_strict_raises_on_a_missing_transcription(tmp_path):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    transcript = fixture["data_dir"] / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    lines = transcript.read_text().splitlines(keepends=True)
    transcript.write_text("".join(line for line in lines if not line.startswith("Ses01F_impro01_M000 ")))
    with pytest.raises(ValueError, match="Ses01F_impro01_M000"):
        load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache1"), strict=True)
    transcript.unlink()
    with pytest.raises(FileNotFoundError, match="transcriptions/Ses01F_impro01.txt"):
        load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache2"), strict=True)
    lenient = load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache3"))
    assert lenient["session1"]["id"][:] == ["Ses01M_script01_1_F000"]  # the only 4-class turn left


def test_subset_of_sessions_and_no_count_warning(tmp_path, caplog):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(2, 4), utterances_per_dialog=6, defects=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    dataset = load_iemocap(fixture["data_dir"], config_name="all", cache_dir=str(tmp_path / "cache"))
    assert list(dataset) == ["session2", "session4"]
    assert {s: len(dataset[f"session{s}"]) for s in (2, 4)} == {2: 12, 4: 12}
    messages = [record.getMessage() for record in caplog.records if record.name == LOGGER]
    assert messages == [
        f"Session1, Session3, Session5 missing from {fixture['data_dir']} (found Session2, Session4); a fold that "
        "tests on a missing session cannot run"
    ]


def test_a_missing_session_is_warned_and_its_fold_refused(tmp_path, caplog):
    """Issue 12, item 6: with Session2 absent the builder returned sessions 1, 3, 4, 5 without a word."""
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1, 3, 4, 5), utterances_per_dialog=2, defects=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    dataset = load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache"))
    assert list(dataset) == ["session1", "session3", "session4", "session5"]
    missing = [r.getMessage() for r in caplog.records if r.name == LOGGER and "missing from" in r.getMessage()]
    assert missing == [
        f"Session2 missing from {fixture['data_dir']} (found Session1, Session3, Session4, Session5); a fold that "
        "tests on a missing session cannot run"
    ]
    with pytest.raises(ValueError, match=r"test_session must be one of the dataset's sessions \[1, 3, 4, 5\], got 2"):
        leave_one_session_out(dataset, test_session=2)


def test_expected_sessions_of_other_layouts(tmp_path, caplog):
    """Gaps count everywhere; Session5 only in a folder named as the release; a demo corpus expects its own."""
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1, 2, 4), utterances_per_dialog=2, defects=False)
    release = fixture["data_dir"]
    custom = release.rename(tmp_path / "data" / "my_corpus")
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def missing_warning(data_dir, cache):
        caplog.clear()
        load_iemocap(data_dir, cache_dir=str(tmp_path / cache))
        found = [r.getMessage() for r in caplog.records if r.name == LOGGER and "missing from" in r.getMessage()]
        return found[0].split(" missing from")[0] if found else None

    assert missing_warning(custom, "c1") == "Session3"
    (custom / "demo_corpus.json").write_text(json.dumps({"settings": {"sessions": [1, 2, 4]}}))
    assert missing_warning(custom, "c2") is None
    (custom / "demo_corpus.json").write_text(json.dumps({"settings": {"sessions": [1, 2, 3, 4, 5]}}))
    assert missing_warning(custom, "c3") == "Session3, Session5"
    (custom / "demo_corpus.json").unlink()
    assert missing_warning(custom.rename(release), "c4") == "Session3, Session5"


def test_a_session_without_utterances_gets_no_split(tmp_path, caplog):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1, 2), defects=False)
    for path in (fixture["data_dir"] / "Session2" / "dialog" / "EmoEvaluation").glob("Ses*.txt"):
        text = path.read_text()
        for code in ("ang", "hap", "exc", "neu", "sad"):
            text = text.replace(f"\t{code}\t", "\tfru\t")
        path.write_text(text)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    dataset = load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache"))
    assert list(dataset) == ["session1"]
    assert any("in Session2: no split" in record.getMessage() for record in caplog.records)


def test_unknown_emotion_code_names_the_line(tmp_path):
    fixture = make_iemocap_fixture(tmp_path / "data", sessions=(1,), defects=False)
    path = fixture["data_dir"] / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    path.write_text(path.read_text().replace("\tang\t", "\tbored\t"))
    with pytest.raises(ValueError, match=r"Ses01F_impro01.txt:10: unknown emotion code 'bored'"):
        load_iemocap(fixture["data_dir"], cache_dir=str(tmp_path / "cache"))


def test_data_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_iemocap(tmp_path / "does-not-exist", cache_dir=str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No Session1\.\.Session5 folder in .*empty"):
        load_iemocap(tmp_path / "empty", cache_dir=str(tmp_path / "cache"))
    make_iemocap_fixture(tmp_path / "parent", sessions=(1,))
    with pytest.raises(FileNotFoundError, match="did you mean its IEMOCAP_full_release subfolder"):
        load_iemocap(tmp_path / "parent", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="data_dir"):
        Iemocap(cache_dir=str(tmp_path / "cache")).download_and_prepare()


def test_leave_one_session_out_sizes_and_disjointness(four_class):
    total = sum(FOUR_CLASS_SESSIONS.values())
    for session in range(1, 6):
        fold = leave_one_session_out(four_class, test_session=session)
        assert list(fold) == ["train", "validation", "test"]
        assert len(fold["test"]) == FOUR_CLASS_SESSIONS[session]
        assert len(fold["train"]) + len(fold["validation"]) == total - FOUR_CLASS_SESSIONS[session]
        assert set(fold["test"]["session"][:]) == {session}
        assert session not in set(fold["train"]["session"][:]) | set(fold["validation"]["session"][:])
        train, validation, test = (set(fold[split]["id"][:]) for split in ("train", "validation", "test"))
        assert not train & validation and not train & test and not validation & test


def test_leave_one_session_out_is_stratified(four_class):
    fold = leave_one_session_out(four_class, test_session=5, validation_fraction=0.5, seed=0)
    # Pool (sessions 1-4): ang 4, hap 7, neu 2, sad 3 -> round(n / 2) each to validation.
    assert class_counts(fold["validation"]) == {"ang": 2, "hap": 4, "neu": 1, "sad": 2}
    assert class_counts(fold["train"]) == {"ang": 2, "hap": 3, "neu": 1, "sad": 1}
    assert class_counts(leave_one_session_out(four_class, 5)["validation"]) == {"ang": 0, "hap": 1, "neu": 0, "sad": 0}
    again = leave_one_session_out(four_class, test_session=5, validation_fraction=0.5, seed=0)
    assert again["validation"]["id"][:] == fold["validation"]["id"][:]
    seeds = {tuple(leave_one_session_out(four_class, 5, 0.5, seed=s)["validation"]["id"][:]) for s in range(5)}
    assert len(seeds) > 1


def test_leave_one_session_out_keeps_singleton_classes_in_train(all_codes):
    fold = leave_one_session_out(all_codes, test_session=1, validation_fraction=0.5)
    pool = datasets.concatenate_datasets([fold["train"], fold["validation"]])
    for name, n in class_counts(pool).items():
        expected = min(int(n * 0.5 + 0.5), n - 1) if n else 0
        assert class_counts(fold["validation"])[name] == expected, name
        assert n == 0 or class_counts(fold["train"])[name] >= 1


def test_leave_one_session_out_rejects_bad_arguments(four_class):
    with pytest.raises(ValueError, match=r"test_session must be one of .* sessions \[1, 2, 3, 4, 5\], got 6"):
        leave_one_session_out(four_class, test_session=6)
    with pytest.raises(ValueError, match="validation_fraction"):
        leave_one_session_out(four_class, test_session=1, validation_fraction=1.0)
    only_two = datasets.DatasetDict({"session1": four_class["session1"], "session2": four_class["session2"]})
    with pytest.raises(ValueError, match="test_session"):
        leave_one_session_out(only_two, test_session=3)


def test_count_check_only_compares_the_release_folder(tmp_path, caplog):
    """The published counts belong to IEMOCAP_full_release; a corpus in the same layout under another name
    (the demo corpus) is not warned about."""
    import shutil as _shutil

    info = make_iemocap_fixture(tmp_path / "a", utterances_per_dialog=1, defects=False)
    renamed = tmp_path / "IEMOCAP_demo"
    _shutil.copytree(info["data_dir"], renamed)
    with caplog.at_level("WARNING"):
        load_iemocap(info["data_dir"], cache_dir=str(tmp_path / "c1"))
    assert "instead of 5531" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_iemocap(renamed, cache_dir=str(tmp_path / "c2"))
    assert "instead of 5531" not in caplog.text
