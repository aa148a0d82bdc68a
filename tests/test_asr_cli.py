"""fdrl-wer (fdrl/evaluation/asr.py) as a user calls it: `main(argv)` on a manifest with a tiny speech recogniser.
Issue 18, causes 7, 10 and 15: every argument is checked before the first utterance, and bad audio is skipped and
counted as training's audio check does, never transcribed."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tiny_fdrl_config
from fdrl.evaluation import asr
from fdrl.evaluation.asr import normalize_text
from modeling_fdrl import FDRLModel
from pipeline_fdrl import save_pipeline
from processing_fdrl import FDRLProcessor
from test_pipeline_fdrl import TEXTS, save_tiny_asr, write_audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of three good clips (sessions 1-3), one with NaN samples and one that is not audio."""
    root = tmp_path_factory.mktemp("wer")
    rows = []
    for session, text in enumerate(TEXTS[:3], start=1):
        rows.append(
            {
                "id": f"good{session}",
                "audio": write_audio(root / f"good{session}.wav", 0.5, 16000, seed=session),
                "text": text,
                "label": "neu",
                "session": session,
            }
        )
    nan = 0.1 * np.ones(8000, dtype=np.float32)
    nan[100:103] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    (root / "junk.wav").write_bytes(b"these are my notes\n" * 100)
    rows += [
        {"id": "nan", "audio": str(root / "nan.wav"), "text": TEXTS[3], "label": "neu", "session": 1},
        {"id": "junk", "audio": str(root / "junk.wav"), "text": TEXTS[3], "label": "neu", "session": 2},
    ]
    manifest = root / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    torch.manual_seed(0)
    fdrl = save_pipeline(
        FDRLModel(tiny_fdrl_config()).eval(), FDRLProcessor.from_texts(TEXTS, vocab_size=99), root / "fdrl"
    )
    return root, manifest, save_tiny_asr(root / "asr"), fdrl


def run(caplog, *argv):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fdrl.evaluation.asr"):
        status = asr.main([str(arg) for arg in argv])
    return status, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_bad_audio_is_skipped_and_counted_not_transcribed(corpus, caplog):
    """Cause 7 (a NaN clip was transcribed and counted in the WER) and cause 15 (an undecodable row aborted the whole
    run with a torchcodec traceback)."""
    root, manifest, recogniser, _ = corpus
    output = root / "wer.json"
    status, errors = run(caplog, "--model", recogniser, "--manifest", manifest, "--output", output)
    assert (status, errors) == (0, [])
    result = json.loads(output.read_text())
    assert [item["id"] for item in result["items"]] == ["good1", "good2", "good3"]
    assert result["utterances"] == 3
    assert result["reference_words"] == sum(len(normalize_text(text).split()) for text in TEXTS[:3])  # 6 + 4 + 3
    assert result["reference_words"] == 13
    skipped = {item["id"]: item["problem"] for item in result["skipped"]}
    assert skipped == {
        "nan": "holds 3 NaN or infinite sample(s)",
        "junk": "cannot be decoded (Error opening the file: Format not recognised.)",
    }
    assert "skipped 2 utterance(s) with unusable audio" in caplog.text


def test_arguments_are_checked_before_the_first_utterance(corpus, caplog, tmp_path):
    """Cause 7 (`--limit -1` meant "all but the last"), cause 10 (a missing folder gave "Repo id must be in the
    form ...") and cause 15 (`--sessions 9` said "the references hold no words", an `--output` folder failed after
    every utterance was transcribed, an emotion model as `--model` gave advice about trust_remote_code)."""
    root, manifest, recogniser, fdrl = corpus
    output = tmp_path / "wer.json"
    missing = tmp_path / "no-such-model"
    cases = [
        (["--limit", "-1"], "fdrl-wer: --limit must be a positive number of utterances, got -1"),
        (["--limit", "0"], "fdrl-wer: --limit must be a positive number of utterances, got 0"),
        (["--sessions", "9", "2"], "fdrl-wer: --sessions 9: the corpus has no such session (its sessions: 1, 2, 3)"),
        (
            ["--output", str(tmp_path)],
            f"fdrl-wer: --output {tmp_path} is a folder: give a file name such as {tmp_path / 'wer.json'}",
        ),
        (["--model", str(missing)], f"fdrl-wer: --model {missing}: the model folder {missing} does not exist"),
        (
            ["--model", str(fdrl)],
            f"fdrl-wer: --model {fdrl}: {fdrl} is an FDRL emotion model (model_type fdrl), not a speech recogniser",
        ),
    ]
    for extra, message in cases:
        argv = ["--model", recogniser, "--manifest", manifest, "--output", output, *extra]
        assert run(caplog, *argv) == (2, [message])
        assert "transcribed" not in caplog.text and "WER" not in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_limit_and_sessions_select_what_they_say(corpus, caplog, tmp_path):
    root, manifest, recogniser, _ = corpus
    output = tmp_path / "wer.json"
    assert run(
        caplog,
        "--model",
        recogniser,
        "--manifest",
        manifest,
        "--sessions",
        "2",
        "3",
        "--limit",
        "1",
        "--output",
        output,
    ) == (0, [])
    result = json.loads(output.read_text())
    assert [item["id"] for item in result["items"]] == ["good2"]
    assert [item["id"] for item in result["skipped"]] == ["junk"]  # session 2's bad row; the NaN clip is session 1
