"""Tests for processing_fdrl.py: batching, resampling, truncation, validation, remote-code round trip, tokenizer."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, RobertaTokenizer, Wav2Vec2FeatureExtractor

from processing_fdrl import FDRLProcessor, train_wordpiece_tokenizer


REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = [
    "I am so happy today, this is wonderful!",
    "This is terrible news and I am angry.",
    "Okay, fine, whatever you say.",
    "Why would you do that to me?",
    "I feel sad and tired of everything.",
]
AUDIO_KEYS = {"input_values", "audio_attention_mask"}
TEXT_KEYS = {"input_ids", "token_type_ids", "text_attention_mask"}


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(CORPUS, vocab_size=200)


@pytest.fixture(scope="module")
def processor(tokenizer):
    # do_normalize=False keeps the samples as given, so values can be compared exactly
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=False, return_attention_mask=True)
    return FDRLProcessor(feature_extractor, tokenizer)


def noise(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def build_roberta_tokenizer(texts):
    """A tiny byte-level BPE tokenizer wrapped as RobertaTokenizer (no token_type_ids)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    return RobertaTokenizer(vocab=model["vocab"], merges=[tuple(merge) for merge in model["merges"]])


# ---------------------------------------------------------------- shapes and masks


def test_variable_length_batch_pads_to_longest_with_exact_masks(processor, tokenizer):
    lengths = [16000, 7000, 12345]
    audio = [noise(n, seed=i) for i, n in enumerate(lengths)]
    texts = ["I am so happy", "terrible", "why would you do that to me"]
    batch = processor(audio=audio, text=texts, sampling_rate=16000)

    assert set(batch.keys()) == AUDIO_KEYS | TEXT_KEYS
    assert batch["input_values"].shape == (3, 16000)
    assert batch["input_values"].dtype == torch.float32
    assert batch["audio_attention_mask"].sum(dim=1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert batch["audio_attention_mask"][i, :n].eq(1).all() and batch["audio_attention_mask"][i, n:].eq(0).all()
        assert torch.equal(batch["input_values"][i, :n], torch.from_numpy(audio[i]))
        assert batch["input_values"][i, n:].eq(0).all()

    token_counts = [len(tokenizer(text)["input_ids"]) for text in texts]
    assert batch["input_ids"].shape == (3, max(token_counts))
    assert batch["text_attention_mask"].sum(dim=1).tolist() == token_counts
    assert batch["input_ids"][1, token_counts[1] :].eq(tokenizer.pad_token_id).all()
    assert batch["token_type_ids"].eq(0).all()


def test_audio_padded_to_a_multiple_of_seconds_keeps_every_sample_and_mask(processor):
    """`audio_pad_to_multiple_of_s=0.5`: the longest item, 12,345 samples, pads to 16,000 (two 8,000-sample halves),
    with the same samples and masks as padding to the longest, and zeros after; the text is untouched."""
    lengths = [7000, 12345]
    audio = [noise(n, seed=i) for i, n in enumerate(lengths)]
    plain = processor(audio=audio, text=["happy", "sad"], sampling_rate=16000)
    padded = processor(audio=audio, text=["happy", "sad"], sampling_rate=16000, audio_pad_to_multiple_of_s=0.5)
    assert plain["input_values"].shape == (2, 12345) and padded["input_values"].shape == (2, 16000)
    assert torch.equal(padded["input_values"][:, :12345], plain["input_values"])
    assert padded["input_values"][:, 12345:].eq(0).all() and padded["audio_attention_mask"][:, 12345:].eq(0).all()
    assert padded["audio_attention_mask"].sum(dim=1).tolist() == lengths
    assert torch.equal(padded["input_ids"], plain["input_ids"])
    exact = processor(audio=noise(16000), sampling_rate=16000, audio_pad_to_multiple_of_s=1)  # already a multiple
    assert exact["input_values"].shape == (1, 16000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"audio_pad_to_multiple_of_s": 0}, "audio_pad_to_multiple_of_s must be a positive number of seconds, got 0"),
        ({"audio_pad_to_multiple_of_s": "1"}, "positive number of seconds, got '1'"),
        ({"audio_pad_to_multiple_of_s": float("nan")}, "positive number of seconds, got nan"),
        ({"audio_pad_to_multiple_of_s": 1, "padding": False, "return_tensors": None}, "needs padding=True"),
    ],
)
def test_bad_pad_multiple_is_refused_naming_the_argument(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(audio=noise(800), sampling_rate=16000, **kwargs)


def test_model_input_names_match_the_keys(processor):
    batch = processor(audio=noise(800), text="happy", sampling_rate=16000)
    assert set(processor.model_input_names) == set(batch.keys())


def test_single_item_of_each_input_type_gives_the_same_batch_of_one(processor):
    as_float = np.arange(-300, 300, dtype=np.float32) / 32768
    expected = processor(audio=as_float, sampling_rate=16000)["input_values"]
    assert expected.shape == (1, 600)
    for audio in (as_float.astype(np.float64), torch.from_numpy(as_float), as_float.tolist(), [as_float]):
        assert torch.equal(processor(audio=audio, sampling_rate=16000)["input_values"], expected)


def test_integer_samples_are_scaled_by_their_full_range(processor):
    """Issue 18, cause 4: integer arrays were cast to float unscaled (an int16 clip 32768 times louder than the same
    clip as floats). int16 and int32 are divided by their full scale, 8-bit unsigned samples centred on 128 first,
    as soundfile reads the same WAV files."""
    pcm16 = np.array([-32768, -16384, -1, 0, 1, 16384, 32767] * 100, dtype=np.int16)
    expected = processor(audio=pcm16.astype(np.float64) / 32768, sampling_rate=16000)["input_values"]
    assert expected[0, :7].tolist() == [-1.0, -0.5, -1 / 32768, 0.0, 1 / 32768, 0.5, 32767 / 32768]
    for audio in (pcm16, torch.from_numpy(pcm16), pcm16.astype(np.int32) * 65536, [pcm16]):
        assert torch.equal(processor(audio=audio, sampling_rate=16000)["input_values"], expected)
    pcm8 = np.array([0, 64, 128, 192, 255] * 100, dtype=np.uint8)
    scaled = processor(audio=pcm8, sampling_rate=16000)["input_values"][0, :5].tolist()
    assert scaled == [-1.0, -0.5, 0.0, 0.5, 127 / 128]


def test_audio_only_and_text_only_calls_return_only_their_keys(processor):
    assert set(processor(audio=noise(500), sampling_rate=16000).keys()) == AUDIO_KEYS
    assert set(processor(text=["happy", "sad"]).keys()) == TEXT_KEYS


def test_roberta_tokenizer_gives_no_token_type_ids():
    feature_extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    processor = FDRLProcessor(feature_extractor, build_roberta_tokenizer(CORPUS))
    texts = ["I am happy", "news"]
    batch = processor(audio=[noise(500), noise(300)], text=texts, sampling_rate=16000)
    assert set(batch.keys()) == {"input_values", "audio_attention_mask", "input_ids", "text_attention_mask"}
    assert set(processor.model_input_names) == set(batch.keys())
    token_counts = [len(processor.tokenizer(text)["input_ids"]) for text in texts]
    assert batch["text_attention_mask"].sum(dim=1).tolist() == token_counts
    assert batch["input_ids"][:, 0].eq(processor.tokenizer.bos_token_id).all()


def test_default_feature_extractor_normalizes_each_item_over_its_own_samples():
    processor = FDRLProcessor.from_texts(CORPUS, vocab_size=200)
    audio = [3.0 + 5.0 * noise(4000, seed=1), -2.0 + 0.1 * noise(1000, seed=2)]
    batch = processor(audio=audio, sampling_rate=16000)
    for i, n in enumerate([4000, 1000]):
        valid = batch["input_values"][i, :n].double()
        assert abs(valid.mean().item()) < 1e-4 and abs(valid.std(unbiased=False).item() - 1.0) < 1e-3
    assert batch["input_values"][1, 1000:].eq(0).all()


def test_tokenizer_kwargs_and_numpy_tensors(processor):
    batch = processor(text=["why would you do that to me"], truncation=True, max_length=4, return_tensors="np")
    assert isinstance(batch["input_ids"], np.ndarray) and batch["input_ids"].shape == (1, 4)


# ---------------------------------------------------------------- resampling, mixing, truncation


def test_stereo_22050_is_mixed_to_mono_then_resampled_like_torchaudio(processor):
    n = 22050 // 2 + 7
    stereo = np.stack([noise(n, seed=3), 0.5 * noise(n, seed=4)])  # (channels, samples)
    batch = processor(audio=stereo, sampling_rate=22050)

    length = batch["audio_attention_mask"].sum().item()
    assert abs(length - round(n * 16000 / 22050)) <= 1
    assert batch["input_values"].shape == (1, length)
    mono = torch.from_numpy(stereo).mean(dim=0)
    expected = torchaudio.functional.resample(mono, orig_freq=22050, new_freq=16000)
    assert torch.equal(batch["input_values"][0], expected)
    left_only = torchaudio.functional.resample(torch.from_numpy(stereo[0]), orig_freq=22050, new_freq=16000)
    assert (batch["input_values"][0] - left_only).abs().max() > 0.1


def test_per_item_sampling_rates(processor):
    batch = processor(audio=[noise(1600), noise(800, seed=1)], sampling_rate=[16000, 8000])
    assert batch["audio_attention_mask"].sum(dim=1).tolist() == [1600, 1600]
    expected = torchaudio.functional.resample(torch.from_numpy(noise(800, seed=1)), orig_freq=8000, new_freq=16000)
    assert torch.equal(batch["input_values"][1], expected)


def test_truncation_to_max_duration(processor, tokenizer):
    assert processor.max_duration == 16.0
    long_audio = noise(20 * 16000)
    assert processor(audio=long_audio, sampling_rate=16000)["input_values"].shape == (1, 16 * 16000)

    batch = processor(audio=[long_audio, noise(8000)], sampling_rate=16000, max_duration=1.5)
    assert batch["input_values"].shape == (2, 24000)
    assert batch["audio_attention_mask"].sum(dim=1).tolist() == [24000, 8000]
    assert torch.equal(batch["input_values"][0], torch.from_numpy(long_audio[:24000]))

    resampled = processor(audio=noise(3 * 22050), sampling_rate=22050, max_duration=1.0)
    assert resampled["input_values"].shape == (1, 16000)
    untruncated = processor(audio=long_audio, sampling_rate=16000, max_duration=float("inf"))
    assert untruncated["input_values"].shape == (1, 20 * 16000)

    never = FDRLProcessor(processor.feature_extractor, tokenizer, max_duration=None)
    assert never(audio=long_audio, sampling_rate=16000)["input_values"].shape == (1, 20 * 16000)


# ---------------------------------------------------------------- validation

GOOD = noise(800)
BAD_CALLS = {
    "empty audio": (dict(audio=[GOOD, np.zeros(0, np.float32)], sampling_rate=16000), "audio item 1 is empty"),
    "empty stereo": (dict(audio=np.zeros((2, 0)), sampling_rate=16000), "audio item 0 is empty"),
    "nan": (dict(audio=[GOOD, GOOD, np.array([0.1, np.nan])], sampling_rate=16000), "audio item 2 contains NaN"),
    "inf": (dict(audio=torch.tensor([0.0, float("inf")]), sampling_rate=16000), "audio item 0 contains NaN or inf"),
    "float32 overflow": (dict(audio=np.array([1e300, 0.0]), sampling_rate=16000), "beyond float32's range"),
    "path string": (dict(audio="speech.wav", sampling_rate=16000), "audio must be arrays of samples"),
    "string in batch": (dict(audio=[GOOD, "speech.wav"], sampling_rate=16000), "audio item 1 must be an array"),
    "object array": (dict(audio=np.array([0.1, None], dtype=object), sampling_rate=16000), "item 0 must hold real"),
    "list of strings": (dict(audio=[GOOD, ["0.1", "0.2"]], sampling_rate=16000), "audio item 1 must hold real"),
    "bool samples": (dict(audio=np.ones(10, dtype=bool), sampling_rate=16000), "audio item 0 must hold real"),
    "complex samples": (dict(audio=np.ones(10, dtype=np.complex64), sampling_rate=16000), "item 0 must hold real"),
    "ragged item": (dict(audio=[[[0.1, 0.2], [0.3]]], sampling_rate=16000), "audio item 0 is not a regular array"),
    "3-d audio": (dict(audio=np.zeros((2, 2, 100)), sampling_rate=16000), r"item 0 must be 1-D .* \(2, 2, 100\)"),
    "samples first": (dict(audio=[GOOD, np.zeros((800, 2))], sampling_rate=16000), r"item 1 has shape \(800, 2\)"),
    "audio not array": (dict(audio=42, sampling_rate=16000), "audio must be an array"),
    "empty audio list": (dict(audio=[], sampling_rate=16000), "audio is an empty list"),
    "count mismatch": (dict(audio=[GOOD] * 3, text=["a", "b"], sampling_rate=16000), "3 audio items and 2 texts"),
    "no sampling_rate": (dict(audio=GOOD), "sampling_rate is required"),
    "zero rate": (dict(audio=GOOD, sampling_rate=0), "sampling_rate for audio item 0"),
    "fractional rate": (dict(audio=GOOD, sampling_rate=22050.5), "sampling_rate for audio item 0"),
    "string rate": (dict(audio=GOOD, sampling_rate="16000"), "sampling_rate for audio item 0"),
    "bool rate": (dict(audio=GOOD, sampling_rate=True), "sampling_rate for audio item 0"),
    "bad rate in list": (dict(audio=[GOOD, GOOD], sampling_rate=[16000, -8000]), "sampling_rate for audio item 1"),
    "rate count": (dict(audio=[GOOD, GOOD], sampling_rate=[16000]), "sampling_rate has 1 values for 2 audio items"),
    "empty text": (dict(text=["fine", ""]), "text item 1 is empty"),
    "blank text": (dict(audio=GOOD, text=" \t\n", sampling_rate=16000), "text item 0 is empty or whitespace-only"),
    "text not str": (dict(text=["fine", 3]), "text item 1 must be a str, got int"),
    "pretokenized text": (dict(text=[["fine", "words"]]), "text item 0 must be a str, got list"),
    "text scalar": (dict(text=5), "text must be a str or a list of str, got int"),
    "empty text list": (dict(text=[]), "text is an empty list"),
    "nothing": (dict(), "audio, text, or both"),
    "zero max_duration": (dict(audio=GOOD, sampling_rate=16000, max_duration=0), "max_duration"),
    "string max_duration": (dict(audio=GOOD, sampling_rate=16000, max_duration="16"), "max_duration"),
    "padding max_length": (dict(text="fine", padding="max_length"), "padding must be one of"),
}


@pytest.mark.parametrize("kwargs, message", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_input_raises_value_error_naming_the_item(processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


def test_bad_constructor_and_tokenizer_arguments(processor, tokenizer):
    with pytest.raises(ValueError, match="max_duration must be a positive number"):
        FDRLProcessor(processor.feature_extractor, tokenizer, max_duration=-1.0)
    with pytest.raises(ValueError, match="texts must be a non-empty list of str, got str"):
        train_wordpiece_tokenizer("one sentence")
    with pytest.raises(ValueError, match="texts item 1 must be a str"):
        train_wordpiece_tokenizer(["fine", None])
    with pytest.raises(ValueError, match="vocab_size must be larger"):
        train_wordpiece_tokenizer(CORPUS, vocab_size=5)


# ---------------------------------------------------------------- tokenizer


def test_trained_tokenizer_knows_the_corpus_words(tokenizer, tmp_path):
    words = ["happy", "terrible", "angry", "sad", "tired", "whatever"]
    for word in words:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert ids and tokenizer.unk_token_id not in ids, (word, ids)
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    assert tokenizer.tokenize("I am SO Happy") == ["i", "am", "so", "happy"]

    encoded = tokenizer("happy news")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert tokenizer("ж")["input_ids"] == [tokenizer.cls_token_id, tokenizer.unk_token_id, tokenizer.sep_token_id]

    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(CORPUS)["input_ids"] == tokenizer(CORPUS)["input_ids"]


TRAIN_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import random, sys
    from processing_fdrl import FDRLProcessor

    words = ("excuse me do you have your forms yeah let see them problem who told line sorry okay fine thank "
             "believe happened again beach wonderful news going went").split()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(300)]
    # a small vocabulary stops the merges among many equally frequent pairs, where ties decide
    FDRLProcessor.from_texts(texts, vocab_size=120).tokenizer.save_pretrained(sys.argv[1])
    """
)


def test_trained_vocabulary_is_the_same_in_every_process(tmp_path):
    """Issue 12, item 3: the trainer's hash maps are seeded per process; the vocabulary must not depend on it."""
    saved = []
    for hash_seed in ("0", "1"):
        folder = tmp_path / f"hashseed{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
        subprocess.run(
            [sys.executable, "-c", TRAIN_IN_FRESH_PROCESS, str(folder)], check=True, cwd=REPO_ROOT, env=env, timeout=300
        )
        saved.append((folder / "tokenizer.json").read_bytes())
    assert saved[0] == saved[1]
    assert len(json.loads(saved[0])["model"]["vocab"]) == 120


# ---------------------------------------------------------------- save / remote-code round trip

LOAD_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.util, os, sys
    # the project's editable install would make `processing_fdrl` importable: hide it, so only remote code can load
    sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
    assert importlib.util.find_spec("processing_fdrl") is None, "processing_fdrl importable outside remote code"
    assert not any(os.path.isdir(p) and os.path.samefile(p, sys.argv[4]) for p in sys.path), sys.path

    import numpy as np
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
    assert "processing_fdrl" not in sys.modules
    inputs = np.load(sys.argv[2])
    audio = [inputs["stereo"], inputs["long"], inputs["short"]]
    batch = processor(audio=audio, text=[str(t) for t in inputs["texts"]], sampling_rate=[22050, 16000, 16000])
    np.savez(sys.argv[3], max_duration=processor.max_duration, **{k: v.numpy() for k, v in batch.items()})
    """
)


def test_save_pretrained_then_auto_processor_in_fresh_process_gives_identical_outputs(tmp_path):
    processor = FDRLProcessor.from_texts(CORPUS, vocab_size=200, max_duration=2.5)
    save_dir = tmp_path / "fdrl-processor"
    processor.save_pretrained(save_dir)

    assert (save_dir / "processing_fdrl.py").read_bytes() == (REPO_ROOT / "processing_fdrl.py").read_bytes()
    assert (save_dir / "tokenizer.json").is_file()
    config = json.loads((save_dir / "processor_config.json").read_text())
    assert config["max_duration"] == 2.5
    assert config["auto_map"]["AutoProcessor"] == "processing_fdrl.FDRLProcessor"

    inputs = dict(
        stereo=np.stack([noise(30000, seed=5), noise(30000, seed=6)]),
        long=noise(3 * 16000, seed=7),
        short=np.arange(-400, 400, dtype=np.int16),
        texts=np.array(["I am so happy today", "terrible news, I am angry", "okay"]),
    )
    np.savez(tmp_path / "inputs.npz", **inputs)
    audio = [inputs["stereo"], inputs["long"], inputs["short"]]
    expected = processor(audio=audio, text=list(inputs["texts"]), sampling_rate=[22050, 16000, 16000])
    assert expected["input_values"].shape == (3, 40000)  # the 3 s item cut to 2.5 s

    (tmp_path / "load.py").write_text(LOAD_IN_FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "load.py", str(save_dir), "inputs.npz", "outputs.npz", str(REPO_ROOT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "modules").rglob("processing_fdrl.py")), "remote code not loaded from the modules cache"

    loaded = np.load(tmp_path / "outputs.npz")
    assert float(loaded["max_duration"]) == 2.5
    assert set(loaded.files) - {"max_duration"} == set(expected.keys())
    for key, value in expected.items():
        assert loaded[key].dtype == value.numpy().dtype, key
        assert np.abs(loaded[key] - value.numpy()).max() == 0, key
    assert loaded["input_ids"].tolist() == expected["input_ids"].tolist()


def test_loading_a_model_folder_never_prompts_for_remote_code(tmp_path):
    """A model folder's config.json carries an auto_map; FDRLProcessor.from_pretrained must not ask about it."""
    processor = FDRLProcessor.from_texts(["a calm sentence", "an angry sentence"], vocab_size=50)
    processor.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "fdrl", "auto_map": {"AutoConfig": "configuration_fdrl.FDRLConfig"}})
    )
    script = (
        f"from processing_fdrl import FDRLProcessor; FDRLProcessor.from_pretrained({str(tmp_path)!r}); print('LOADED')"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED" in result.stdout and "Do you wish to run the custom code" not in result.stdout + result.stderr
