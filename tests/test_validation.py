"""Tests for fdrl/data/validation.py: each kind of unusable audio gets its own exact problem text (issue 12, item 2)."""

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from fdrl.data.validation import BadAudio, check_file, find_bad_audio, minimum_samples
from fdrl.presets import preset_backbone_configs


RATE = 16000


def tiny_wav2vec2_config():
    """The wav2vec2-style front end of the project's tiny preset: receptive field 420 samples (26.25 ms)."""
    return preset_backbone_configs("tiny", vocab_size=99)[0]


@pytest.fixture(scope="module")
def min_samples():
    return minimum_samples(tiny_wav2vec2_config())


def tone(seconds, rate=RATE):
    return (0.1 * np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 220 / rate)).astype(np.float32)


def write(path, samples, rate=RATE, subtype="PCM_16"):
    sf.write(path, samples, rate, subtype=subtype)
    return path


def truncate(path, keep_fraction=0.5):
    """Cut a valid WAV short: its header still declares every sample."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def test_minimum_samples_is_the_receptive_field(min_samples):
    assert min_samples == 420
    lengths = Wav2Vec2Model(tiny_wav2vec2_config())._get_feat_extract_output_lengths(torch.tensor([419, 420]))
    assert lengths.tolist() == [0, 1]  # one sample fewer gives no frame: the clip would pool to a zero vector
    assert minimum_samples(Wav2Vec2Config()) == 400  # wav2vec2-base: 25 ms
    assert minimum_samples(object()) == 320  # no conv front end (Whisper-like): one 20 ms frame


def test_good_audio_has_no_problem(tmp_path, min_samples):
    assert check_file(write(tmp_path / "pcm.wav", tone(0.5)), min_samples) is None
    assert check_file(write(tmp_path / "float.wav", tone(0.5), subtype="FLOAT"), min_samples) is None
    assert check_file(write(tmp_path / "stereo.wav", np.stack([tone(0.5)] * 3, axis=1)), min_samples) is None
    assert check_file(write(tmp_path / "clip.flac", tone(0.5), subtype="PCM_16"), min_samples) is None
    assert check_file(write(tmp_path / "long_enough.wav", tone(420 / RATE)), min_samples) is None


def test_nan_wav(tmp_path, min_samples):
    samples = tone(0.5)
    samples[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    path = write(tmp_path / "nan.wav", samples, subtype="FLOAT")
    assert check_file(path, min_samples) == "holds 3 NaN or infinite sample(s)"


def test_empty_wav_with_a_header(tmp_path, min_samples):
    path = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    assert path.stat().st_size == 44
    assert check_file(path, min_samples) == "holds no samples"


def test_zero_byte_file(tmp_path, min_samples):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    assert check_file(path, min_samples) == "the file is empty (0 bytes)"


def test_undecodable_file(tmp_path, min_samples):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file renamed .wav\n")
    assert check_file(path, min_samples) == "cannot be decoded (Error opening the file: Format not recognised.)"


@pytest.mark.parametrize("subtype, channels, held", [("PCM_16", 1, 7989), ("FLOAT", 1, 7990), ("PCM_16", 3, 7996)])
def test_truncated_wav(tmp_path, min_samples, subtype, channels, held):
    """libsndfile reads what is there without a word; PCM, float and extensible (3-channel) WAVs are all caught."""
    samples = np.stack([tone(1.0)] * channels, axis=1)
    path = truncate(write(tmp_path / "cut.wav", samples, subtype=subtype))
    assert sf.info(str(path)).frames == held  # what soundfile alone would accept
    assert check_file(path, min_samples) == f"truncated: the WAV header declares 16000 samples, the file holds {held}"


def test_too_short_for_the_speech_encoder(tmp_path, min_samples):
    path = write(tmp_path / "ten_ms.wav", tone(0.010))
    assert check_file(path, min_samples) == (
        "too short: 10.0 ms, the speech backbone needs at least 26.2 ms for one frame"
    )
    eight_khz = write(tmp_path / "ten_ms_8k.wav", tone(0.010, rate=8000), rate=8000)  # counted at 16 kHz
    assert check_file(eight_khz, min_samples).startswith("too short: 10.0 ms")


def test_missing_file_and_folder(tmp_path, min_samples):
    assert check_file(tmp_path / "absent.wav", min_samples) == "the file does not exist"
    (tmp_path / "folder.wav").mkdir()
    assert check_file(tmp_path / "folder.wav", min_samples) == "not a file"


def test_encoded_bytes(tmp_path, min_samples):
    good = write(tmp_path / "good.wav", tone(0.5)).read_bytes()
    assert check_file(good, min_samples) is None
    assert check_file(good[: len(good) // 2], min_samples) == (
        "truncated: the WAV header declares 8000 samples, the file holds 3989"
    )
    assert check_file(b"", min_samples) == "the audio bytes are empty (0 bytes)"
    assert check_file(b"not audio", min_samples) == (
        "cannot be decoded (Error opening the audio bytes: Format not recognised.)"
    )


def test_find_bad_audio_names_every_bad_utterance(tmp_path, min_samples):
    paths = {
        "good": write(tmp_path / "good.wav", tone(0.5)),
        "nan": write(tmp_path / "nan.wav", np.full(8000, np.nan, dtype=np.float32), subtype="FLOAT"),
        "short": write(tmp_path / "short.wav", tone(0.010)),
        "cut": truncate(write(tmp_path / "cut.wav", tone(1.0))),
        "gone": tmp_path / "gone.wav",
    }
    split = datasets.Dataset.from_dict({"id": list(paths), "audio": [str(p) for p in paths.values()]})
    split = split.cast_column("audio", datasets.Audio(sampling_rate=RATE))
    bad = find_bad_audio(split, min_samples)
    assert bad == [
        BadAudio("nan", str(paths["nan"]), "holds 8000 NaN or infinite sample(s)"),
        BadAudio(
            "short", str(paths["short"]), "too short: 10.0 ms, the speech backbone needs at least 26.2 ms for one frame"
        ),
        BadAudio("cut", str(paths["cut"]), "truncated: the WAV header declares 16000 samples, the file holds 7989"),
        BadAudio("gone", str(paths["gone"]), "the file does not exist"),
    ]
    assert str(bad[0]) == f"{paths['nan']} (id nan): holds 8000 NaN or infinite sample(s)"
    assert split[0]["audio"] is not None  # the caller's split keeps decoding its audio


def test_find_bad_audio_checks_embedded_bytes(tmp_path, min_samples):
    """A dataset that embeds its audio keeps only the original file name as the path: check the bytes, not that."""
    good = write(tmp_path / "good.wav", tone(0.5)).read_bytes()
    audio = [{"bytes": good, "path": "good.wav"}, {"bytes": good[:100], "path": "cut.wav"}]
    split = datasets.Dataset.from_dict({"id": ["a", "b"], "audio": audio})
    split = split.cast_column("audio", datasets.Audio(sampling_rate=RATE))
    assert find_bad_audio(split, min_samples) == [
        BadAudio("b", "cut.wav", "truncated: the WAV header declares 8000 samples, the file holds 28")
    ]
