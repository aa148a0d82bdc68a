"""Emotion over a whole recording: the recognisers, `MultimodalEmotionRecognitionPipeline.timeline`, the shared entry
point `fdrl.inference.timeline` (JSON, CSV, plot) and `fdrl-timeline`.

The recordings are espeak-ng sentences joined with silences, so the true boundaries and words are known. Tests that
need the real Whisper-base (`make pretrained`'s `whisper-base-ct2`) are marked `pretrained`.
"""

import csv
import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tiny_fdrl_config
from fdrl.inference.recognizer import Recognizer, Segment, load_recognizer, resolve_backend
from fdrl.inference.timeline import check_recording, plot_timeline, recording_timeline, write_csv, write_json
from modeling_fdrl import FDRLModel
from pipeline_fdrl import MultimodalEmotionRecognitionPipeline, save_pipeline
from pretrained_fixture import pretrained, pretrained_dir, speak  # noqa: F401 (pretrained_dir is a fixture)
from processing_fdrl import FDRLProcessor


SENTENCES = [
    "I can't believe you did that.",
    "That is wonderful news.",
    "Please leave me alone.",
    "Why would you say such a thing?",
]
ID2LABEL = {0: "ang", 1: "hap", 2: "neu", 3: "sad"}
LEAD, PAUSE = 0.5, 1.0  # seconds of silence before the first sentence and after each
RATE = 16000


# ----- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random FDRL model saved as `save_pipeline` saves one, and its pipeline."""
    folder = tmp_path_factory.mktemp("timeline") / "model"
    torch.manual_seed(0)
    processor = FDRLProcessor.from_texts([s.lower() for s in SENTENCES], vocab_size=99)
    labels = {"id2label": ID2LABEL, "label2id": {v: k for k, v in ID2LABEL.items()}}
    config = tiny_fdrl_config(initializer_range=0.25, **labels)
    model = FDRLModel(config).eval()
    save_pipeline(model, processor, folder)
    pipe = MultimodalEmotionRecognitionPipeline(model=model, processor=processor, device="cpu")
    return folder, pipe


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """SENTENCES spoken by espeak-ng at 16 kHz, LEAD s of silence first and PAUSE s after each: (path, true spans)."""
    import torchaudio

    root = tmp_path_factory.mktemp("speech")
    parts, spans, time = [np.zeros(int(LEAD * RATE), np.float32)], [], LEAD
    for i, sentence in enumerate(SENTENCES):
        samples, rate = sf.read(speak(sentence, root / f"{i}.wav"), dtype="float32")
        samples = torchaudio.functional.resample(torch.from_numpy(samples), rate, RATE).numpy()
        spans.append((time, time + len(samples) / RATE))
        parts += [samples, np.zeros(int(PAUSE * RATE), np.float32)]
        time += len(samples) / RATE + PAUSE
    path = root / "long.wav"
    sf.write(path, np.concatenate(parts), RATE)
    return path, spans


class FixedSegments(Recognizer):
    """A recogniser whose sentences are given: the timeline's own logic (reasons, order, scores) on known cuts."""

    backend, name = "fixed", "fixed"

    def __init__(self, segments):
        self.found = segments

    def segments(self, waveform, sampling_rate, progress=None):
        return list(self.found)

    def transcribe_clip(self, waveform, sampling_rate):
        return " ".join(segment.text for segment in self.found)


def noise(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


# ----- the timeline's assembly (no recogniser model) -----------------------------------------------------------------
def test_timeline_keeps_every_segment_in_order_with_scores_or_a_reason(tiny):
    _, pipe = tiny
    audio = noise(6.0)
    cuts = [
        Segment(3.0, 4.5, "leave me alone"),
        Segment(0.2, 1.4, "I can't believe you did that"),
        Segment(1.5, 1.8, "that"),
        Segment(2.0, 2.9, "  "),
        Segment(5.0, 9.0, "that is wonderful news"),
    ]
    timeline = recording_timeline(audio, pipe, FixedSegments(cuts), sampling_rate=RATE, min_duration=0.5)
    segments = timeline["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.2, 1.4), (1.5, 1.8), (2.0, 2.9), (3.0, 4.5), (5.0, 6.0)]
    assert segments[1]["reason"] == "too short (0.30 s, under 0.5 s)" and "label" not in segments[1]
    assert segments[2]["reason"] == "no words recognised" and segments[2]["transcript"] == ""
    assert timeline["duration"] == 6.0 and timeline["classes"] == ["ang", "hap", "neu", "sad"]
    for index in (0, 3, 4):  # the same scores as the pipeline gives the same stretch as a single input
        segment = segments[index]
        clip = audio[round(segment["start"] * RATE) : round(segment["end"] * RATE)]
        single = pipe({"audio": clip, "sampling_rate": RATE, "text": segment["transcript"]})
        assert list(segment["scores"]) == ["ang", "hap", "neu", "sad"]
        assert segment["scores"] == pytest.approx({e["label"]: e["score"] for e in single}, abs=1e-6)
        assert segment["label"] == single[0]["label"]
        assert sum(segment["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    # the pipeline option gives the same segments
    option = pipe(audio, timeline=True, recognizer=FixedSegments(cuts), sampling_rate=RATE, min_duration=0.5)
    assert option["segments"] == segments


def test_timeline_csv_and_plot(tiny, tmp_path):
    _, pipe = tiny
    cuts = [Segment(0.0, 1.0, "leave me alone"), Segment(1.2, 1.3, "no"), Segment(2.0, 3.0, "")]
    timeline = recording_timeline(noise(3.0, seed=1), pipe, FixedSegments(cuts), sampling_rate=RATE)
    write_csv(timeline, tmp_path / "t.csv")
    with open(tmp_path / "t.csv", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [r["start"] for r in rows] == ["0.0", "1.2", "2.0"]
    assert [bool(r["reason"]) for r in rows] == [False, True, True]
    assert float(rows[0][f"score_{timeline['segments'][0]['label']}"]) == pytest.approx(
        max(timeline["segments"][0]["scores"].values()), abs=1e-4
    )
    assert rows[1]["label"] == "" and rows[1]["score_ang"] == "" and rows[0]["transcript"] == "leave me alone"
    write_json(timeline, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == timeline
    # a 10-minute timeline of 150 four-second sentences: one figure, 16 inches wide
    long = {
        "duration": 600.0,
        "classes": timeline["classes"],
        "audio": "talk.wav",
        "segments": [
            {
                "start": 4.0 * i,
                "end": 4.0 * i + 3.5,
                "transcript": "w",
                "label": ID2LABEL[i % 4],
                "scores": {c: 0.1 + 0.6 * (c == ID2LABEL[i % 4]) for c in ID2LABEL.values()},
            }
            for i in range(150)
        ],
    }
    figure = plot_timeline(long, tmp_path / "t.png")
    assert tuple(figure.get_size_inches()) == (16.0, 5.0)
    assert (tmp_path / "t.png").stat().st_size > 10_000
    band, lines = figure.axes
    assert len(band.patches) == 150 and len(lines.lines) == 4


def test_bad_recordings_are_named_before_any_model_runs(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio")
    sf.write(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    expected = {
        "empty.wav": "cannot decode the audio",
        "notes.wav": "cannot decode the audio",
        "silent.wav": "the recording is silent",
        "missing.wav": "no such file",
    }
    for name, message in expected.items():
        with pytest.raises(ValueError, match=message) as error:
            check_recording(tmp_path / name)
        assert name in str(error.value)
    with pytest.raises(ValueError, match="contains NaN or infinite samples"):
        check_recording(np.full(RATE, np.nan, np.float32), RATE)
    with pytest.raises(ValueError, match=r"the audio is empty"):
        check_recording(np.zeros(0, np.float32), RATE)


def test_backend_choice(tmp_path):
    ct2 = tmp_path / "whisper-base-ct2"
    ct2.mkdir()
    for name in ("model.bin", "vocabulary.txt"):
        (ct2 / name).write_text("x")
    (tmp_path / "whisper-base").mkdir()
    assert resolve_backend(tmp_path / "whisper-base", "auto", "cpu") == ("faster-whisper", ct2)
    assert resolve_backend(ct2, "auto", "cpu") == ("faster-whisper", ct2)
    assert resolve_backend(tmp_path / "whisper-base", "auto", "cuda") == ("transformers", tmp_path / "whisper-base")
    assert resolve_backend("openai/whisper-base", "auto", "cpu") == ("transformers", "openai/whisper-base")
    with pytest.raises(ValueError, match="transformers cannot read it"):
        resolve_backend(ct2, "transformers", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(ct2, "whisper.cpp", "cpu")


# ----- with the real Whisper-base ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer(pretrained_dir):  # noqa: F811
    return load_recognizer(pretrained_dir / "whisper-base", backend="auto", device="cpu")


@pretrained
def test_faster_whisper_transcribes_a_fixed_sentence_exactly(recognizer, tmp_path, tiny, pretrained_dir):  # noqa: F811
    from fdrl.pretrained.materialize import BACKBONES, is_complete, read_pretrained_lock

    assert recognizer.backend == "faster-whisper" and recognizer.name == "whisper-base-ct2"
    folder = pretrained_dir / "whisper-base-ct2"  # the wheels' two model.bin parts (72,608,766 bytes each), joined
    assert (folder / "model.bin").stat().st_size == 2 * 72_608_766
    assert is_complete(folder, BACKBONES["whisper-base-ct2"], read_pretrained_lock())  # a second run does nothing
    samples, rate = sf.read(speak(SENTENCES[0], tmp_path / "check.wav"), dtype="float32")
    assert recognizer.transcribe_clip(samples, rate) == SENTENCES[0]
    assert recognizer({"raw": samples, "sampling_rate": rate}) == {"text": SENTENCES[0]}
    # bad input: the pipeline's messages; silence gives no words, which the FDRL pipeline reports as usual
    with pytest.raises(ValueError, match=r"^the audio is empty"):
        recognizer.transcribe_clip(np.zeros(0, np.float32), RATE)
    with pytest.raises(ValueError, match=r"^the audio contains NaN or infinite samples"):
        recognizer.transcribe_clip(np.full(RATE, np.nan, np.float32), RATE)
    assert recognizer.transcribe_clip(np.zeros(2 * RATE, np.float32), RATE) == ""
    _, pipe = tiny
    with_asr = MultimodalEmotionRecognitionPipeline(model=pipe.model, processor=pipe.processor, asr_model=recognizer)
    with pytest.raises(ValueError, match="returned an empty transcript"):
        with_asr({"audio": np.zeros(2 * RATE, np.float32), "sampling_rate": RATE})
    assert with_asr({"audio": samples, "sampling_rate": rate})["transcript"] == SENTENCES[0]


@pretrained
def test_long_recording_one_segment_per_sentence(recognizer, long_recording, tiny, pretrained_dir):  # noqa: F811
    path, spans = long_recording
    _, pipe = tiny
    timeline = recording_timeline(path, pipe, recognizer)
    segments = timeline["segments"]
    assert [s["transcript"] for s in segments] == SENTENCES
    assert timeline["duration"] == pytest.approx(spans[-1][1] + PAUSE, abs=1e-3)
    assert set(timeline) >= {"duration", "segments", "classes", "asr_model", "asr_backend", "real_time_factor"}
    for segment, (start, end) in zip(segments, spans):
        assert set(segment) == {"start", "end", "transcript", "label", "scores"}
        assert segment["label"] in ID2LABEL.values() and list(segment["scores"]) == list(ID2LABEL.values())
        overlap = min(end, segment["end"]) - max(start, segment["start"])
        assert overlap > 0.6 * (end - start), (segment, (start, end))  # each segment covers most of its sentence
        assert abs(segment["start"] - start) < 0.7 and abs(segment["end"] - end) < 0.7
    # the pipeline option on the CTranslate2 folder (faster-whisper imported there) finds the same sentences
    option = pipe(str(path), timeline=True, recognizer=pretrained_dir / "whisper-base-ct2")
    assert [s["transcript"] for s in option["segments"]] == SENTENCES


@pretrained
def test_cli_end_to_end(tiny, long_recording, pretrained_dir, tmp_path, caplog):  # noqa: F811
    from fdrl.cli import timeline as cli

    folder, _ = tiny
    path, _ = long_recording
    output, plot, table = tmp_path / "t.json", tmp_path / "t.png", tmp_path / "t.csv"
    argv = [
        str(path),
        "--model",
        str(folder),
        "--asr_model",
        str(pretrained_dir / "whisper-base"),
        "--output",
        str(output),
        "--plot",
        str(plot),
        "--csv",
        str(table),
    ]
    assert cli.main(argv) == 0
    timeline = json.loads(output.read_text())
    assert [s["transcript"] for s in timeline["segments"]] == SENTENCES
    assert timeline["asr_backend"] == "faster-whisper" and timeline["model"] == str(folder)
    with open(table, encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [r["label"] for r in rows] == [s["label"] for s in timeline["segments"]]
    assert plot.stat().st_size > 10_000
    # nothing is overwritten; bad input is named before any model loads
    before = output.read_bytes()
    with caplog.at_level(logging.ERROR, logger="fdrl.cli.timeline"):
        assert cli.main(argv) == 2
        assert "already exists" in caplog.text
        (tmp_path / "blank.wav").write_bytes(b"")
        blank = [str(tmp_path / "blank.wav"), "--model", str(folder), "--output", str(tmp_path / "b.json")]
        assert cli.main(blank) == 2
        assert "blank.wav" in caplog.text and not (tmp_path / "b.json").exists()
        assert (
            cli.main(
                [
                    str(path),
                    "--model",
                    str(folder),
                    "--output",
                    str(path.with_suffix(".json")),
                    "--csv",
                    str(path.with_suffix(".json")),
                ]
            )
            == 2
        )
    assert output.read_bytes() == before


# ----- the web demo's "whole recording" mode -------------------------------------------------------------------------
def test_app_whole_recording_mode(tiny, tmp_path):
    from test_app import app

    _, pipe = tiny
    cuts = [Segment(0.1, 1.1, "leave me alone"), Segment(1.2, 1.4, "no")]
    classifier = MultimodalEmotionRecognitionPipeline(
        model=pipe.model, processor=pipe.processor, asr_model=FixedSegments(cuts)
    )
    demo = app.EmotionDemo(classifier)
    path = tmp_path / "talk.wav"
    sf.write(path, noise(20.0, seed=3), RATE)  # longer than the processor's 16 s: the timeline is not cut
    timeline = demo.timeline(str(path))
    assert timeline["duration"] == 20.0 and timeline["audio"] == "talk.wav"
    rows = app.timeline_table(timeline)
    assert rows[0][:2] == ["0:00.1", "0:01.1"] and rows[0][2] == app.display_name(timeline["segments"][0]["label"])
    assert rows[1][2] == "none: too short (0.20 s, under 0.5 s)" and rows[1][3] is None
    # bad input: the single-clip mode's messages, word for word
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio")
    sf.write(tmp_path / "silent.wav", np.zeros(RATE, np.float32), RATE)
    sf.write(tmp_path / "short.wav", noise(0.2), RATE)
    bad = [
        None,
        str(tmp_path / "empty.wav"),
        str(tmp_path / "notes.wav"),
        str(tmp_path / "silent.wav"),
        str(tmp_path / "short.wav"),
        (RATE, np.full(RATE, np.nan, np.float32)),
    ]
    for audio in bad:
        message = demo.timeline(audio)
        assert isinstance(message, str) and message == demo.predict(audio, "leave me alone"), audio
    assert "silent" in demo.timeline(str(tmp_path / "silent.wav"))


@pretrained
def test_wer_command_with_the_faster_whisper_backend(pretrained_dir, tmp_path):  # noqa: F811
    from fdrl.evaluation.asr import main as asr_main

    speak(SENTENCES[0], tmp_path / "a.wav")
    speak(SENTENCES[2], tmp_path / "b.wav", voice="en-us+f3")
    (tmp_path / "corpus.csv").write_text(f'audio,text,label\na.wav,"{SENTENCES[0]}",ang\nb.wav,{SENTENCES[2]},sad\n')
    assert (
        asr_main(
            [
                "--model",
                str(pretrained_dir / "whisper-base"),
                "--backend",
                "faster-whisper",
                "--manifest",
                str(tmp_path / "corpus.csv"),
                "--output",
                str(tmp_path / "wer.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "wer.json").read_text())
    assert result["backend"] == "faster-whisper" and result["utterances"] == 2 and result["reference_words"] == 10
    assert result["wer"] == 0.0, result["items"]
