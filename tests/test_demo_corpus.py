"""The espeak-ng demo corpus: IEMOCAP layout, class design, determinism, and the builder reading it."""

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fdrl.data import demo_corpus as demo


needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)

SMALL = {"sessions": (1,), "utterances_per_session": 12}
# 3 per class, a third of hap labelled exc, one fru and one xxx on top.
SMALL_LABELS = {"ang": 3, "hap": 2, "exc": 1, "neu": 3, "sad": 3, "fru": 1, "xxx": 1}
_EMO_LINE = re.compile(r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t(\w+)\t\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$")
_TRANSCRIPT_LINE = re.compile(r"^(\S+) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.+)$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return demo.make_demo_corpus(tmp_path_factory.mktemp("demo"), seed=0, workers=1, **SMALL)


def read_evaluations(root):
    """`{utterance id: (dialog, start, end, label, (v, a, d))}` from every EmoEvaluation file."""
    rows = {}
    for path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        lines = path.read_text().splitlines()
        assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
        for i, line in enumerate(lines):
            if line.startswith("["):
                assert lines[i - 1] == "", "every utterance block starts after a blank line"
                start, end, utterance_id, label, *vad = _EMO_LINE.match(line).groups()
                rows[utterance_id] = (path.stem, float(start), float(end), label, tuple(map(float, vad)))
                assert re.match(r"^C-E\d:\t\w+;\t\(\)$", lines[i + 1])
                assert re.match(r"^A-E\d:\tval [1-5]; act [1-5]; dom  [1-5];\t\(\)$", lines[i + 4])
    return rows


def read_transcriptions(root):
    rows = {}
    for path in sorted(root.glob("Session*/dialog/transcriptions/*.txt")):
        for line in path.read_text().splitlines():
            utterance_id, start, end, text = _TRANSCRIPT_LINE.match(line).groups()
            rows[utterance_id] = (path.stem, float(start), float(end), text)
    return rows


def all_files(root):
    """Every file's bytes; the stamp is left out (it records how long the run took)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "demo_corpus.json")
    return {path.relative_to(root): path.read_bytes() for path in files}


@needs_espeak
def test_file_counts(corpus):
    assert corpus.name == "IEMOCAP_demo"
    assert sorted(p.name for p in corpus.iterdir()) == ["Session1", "demo_corpus.json"]
    assert len(list(corpus.glob("Session1/sentences/wav/*/*.wav"))) == 14
    assert [p.name for p in corpus.glob("Session1/dialog/EmoEvaluation/*.txt")] == ["Ses01F_impro01.txt"]
    assert [p.name for p in corpus.glob("Session1/dialog/transcriptions/*.txt")] == ["Ses01F_impro01.txt"]
    assert len([p for p in corpus.rglob("*") if p.is_file()]) == 14 + 2 + 1


@needs_espeak
def test_wavs_are_16khz_mono_speech(corpus):
    for path in corpus.glob("Session1/sentences/wav/*/*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        audio, _ = sf.read(path, dtype="float32")
        assert np.isfinite(audio).all()
        assert np.abs(audio).max() > 0.05, path
        assert np.mean(np.abs(audio) > 0.999) < 1e-3, f"{path} clips"
        assert 0.8 < len(audio) / 16000 < 6.0, path


@needs_espeak
def test_every_utterance_has_transcription_and_wav(corpus):
    evaluations, transcriptions = read_evaluations(corpus), read_transcriptions(corpus)
    assert set(evaluations) == set(transcriptions)
    wavs = {p.stem: p for p in corpus.glob("Session1/sentences/wav/*/*.wav")}
    assert set(wavs) == set(evaluations)
    previous_end = {}
    for utterance_id, (dialog, start, end, _label, vad) in evaluations.items():
        assert re.match(rf"^{dialog}_[FM]\d{{3}}$", utterance_id)
        assert wavs[utterance_id].parent.name == dialog
        assert transcriptions[utterance_id][:3] == (dialog, start, end)
        assert start >= previous_end.get(dialog, 0.0) and end > start, "consecutive turns within a dialog"
        previous_end[dialog] = end
        assert end - start == pytest.approx(sf.info(wavs[utterance_id]).duration, abs=1e-4)
        assert all(1.0 <= v <= 5.0 for v in vad)


@needs_espeak
def test_class_counts_and_valence_text(corpus):
    evaluations, transcriptions = read_evaluations(corpus), read_transcriptions(corpus)
    assert demo.label_counts(12) == SMALL_LABELS
    assert Counter(label for *_, label, _ in evaluations.values()) == SMALL_LABELS
    banks = {"hap": demo.POSITIVE_SENTENCES, "exc": demo.POSITIVE_SENTENCES, "ang": demo.NEGATIVE_SENTENCES}
    banks.update(sad=demo.NEGATIVE_SENTENCES, fru=demo.NEGATIVE_SENTENCES, neu=demo.CALM_SENTENCES)
    emotional = Counter()
    for utterance_id, (*_, label, _) in evaluations.items():
        text = transcriptions[utterance_id][3]
        if label != "xxx" and text not in demo.SHARED_SENTENCES:
            assert text in banks[label], f"{label} spoke {text!r}"
            emotional[demo.FOUR_CLASS.get(label, label)] += 1
    # 3 per class: 2 emotional sentences in odd sessions (1 in even ones).
    assert emotional == {"ang": 2, "hap": 2, "neu": 2, "sad": 2, "fru": 1}


def test_plan_is_stratified_at_demo_size():
    for session in (1, 2):
        plan = demo.plan_session(session, 100, seed=0)
        assert Counter(demo.FOUR_CLASS.get(u.label, u.label) for u in plan) == {
            "ang": 25,
            "hap": 25,
            "neu": 25,
            "sad": 25,
            "fru": 5,
            "xxx": 5,
        }
        assert Counter(u.label for u in plan)["exc"] == 5
        for label in demo.CLASSES:
            group = [u for u in plan if demo.FOUR_CLASS.get(u.label) == label]
            assert sum(u.emotional_text for u in group) == 12 + session % 2  # exactly half, odd split by session
            assert abs(sum(u.speaker == "F" for u in group) - len(group) / 2) <= 1
        ids = [u.utterance_id for u in plan]
        assert len(set(ids)) == len(ids)
        assert {demo.voice_of(session, "F"), demo.voice_of(session, "M")} == {f"en-us+f{session}", f"en-us+m{session}"}


@needs_espeak
def test_same_seed_same_bytes_whatever_the_workers(corpus, tmp_path):
    reference = all_files(corpus)
    again = demo.make_demo_corpus(tmp_path, seed=0, workers=2, **SMALL)
    assert all_files(again) == reference

    # Different settings in a folder this script wrote: regenerated without --overwrite.
    other = all_files(demo.make_demo_corpus(tmp_path, seed=1, workers=1, **SMALL))
    wav = Path("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert other[wav] != reference[wav]
    for name in ("EmoEvaluation", "transcriptions"):
        text = Path(f"Session1/dialog/{name}/Ses01F_impro01.txt")
        assert other[text] != reference[text]


@needs_espeak
def test_complete_corpus_is_not_regenerated(corpus, caplog):
    stamp = (corpus / "demo_corpus.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger=demo.logger.name):
        assert demo.make_demo_corpus(corpus.parent, seed=0, workers=1, **SMALL) == corpus
    assert "not regenerating" in caplog.text
    assert (corpus / "demo_corpus.json").stat().st_mtime_ns == stamp


def test_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_espeak_version", lambda: "espeak-ng (faked)")
    (tmp_path / "IEMOCAP_demo").mkdir()
    (tmp_path / "IEMOCAP_demo" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.make_demo_corpus(tmp_path, **SMALL)
    assert (tmp_path / "IEMOCAP_demo" / "notes.txt").read_text() == "mine"


def test_missing_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        demo.make_demo_corpus(tmp_path, **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"utterances_per_session": 3}, "utterances_per_session"),
        ({"sessions": ()}, "sessions"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        demo.make_demo_corpus(tmp_path, **{**SMALL, **kwargs})


@needs_espeak
def test_iemocap_builder_reads_the_demo_corpus(corpus, tmp_path):
    from fdrl.data.iemocap import load_iemocap

    dataset = load_iemocap(corpus, config_name="4class", cache_dir=str(tmp_path / "cache"))
    assert list(dataset) == ["session1"]
    session = dataset["session1"]
    names = session.features["label"].names
    assert Counter(names[label] for label in session["label"]) == {"ang": 3, "hap": 3, "neu": 3, "sad": 3}
    assert Counter(session["emotion"])["exc"] == 1  # merged into hap, raw code kept
    assert set(session["speaker"]) == {"1F", "1M"}
    example = session[0]
    assert example["audio"]["sampling_rate"] == 16000 and example["text"]


@needs_espeak
def test_the_web_demos_example_clips_are_regenerated(tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("make_app_examples", REPO / "examples" / "make_app_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output_dir", str(tmp_path)])
    for name, (_, _, transcript) in module.CLIPS.items():
        info = sf.info(tmp_path / f"{name}.wav")
        assert (info.samplerate, info.channels) == (16000, 1) and 1.0 < info.duration < 6.0
        assert (tmp_path / f"{name}.txt").read_text().strip() == transcript
