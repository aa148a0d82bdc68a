"""The audio check that runs before any training: every utterance of every split is decoded once and must be
readable, non-empty, complete (a WAV whose header promises more samples than the file holds is truncated), finite,
and long enough for the speech backbone to produce at least one frame.

Each bad utterance is an error that names its file and id, or, with `--skip_bad_audio true`, a counted skip named
in the log and in the results (`skipped_audio` in `results.json`).

Cost, measured on 200 generated 3 s 16-bit WAVs (warm page cache, 2 shared CPU cores): 0.75 ms per utterance, about
half of it soundfile's decoding; IEMOCAP's 5531 utterances take about 5 s. A wav2vec2-base + BERT training step on
the same CPU takes 17 s per utterance (bench/results/train_step_cpu.json), so the check costs well under 0.1% of an
epoch there.
"""

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import soundfile
from transformers import AutoConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)
SAMPLING_RATE = 16000


@dataclass
class BadAudio:
    id: str
    path: str
    problem: str

    def __str__(self):
        return f"{self.path} (id {self.id}): {self.problem}"


def minimum_samples(audio_config):
    """The fewest 16 kHz samples from which the speech backbone produces one frame: the receptive field of a
    wav2vec2-family convolutional front end; 20 ms (one encoder frame) for Whisper-like log-mel front ends."""
    kernels, strides = getattr(audio_config, "conv_kernel", None), getattr(audio_config, "conv_stride", None)
    if kernels and strides:
        length = 1
        for kernel, stride in reversed(list(zip(kernels, strides))):
            length = (length - 1) * stride + kernel
        return length
    return int(0.02 * SAMPLING_RATE)


def _declared_frames(handle, size):
    """(frames the WAV header declares, frames the file holds), read from the RIFF chunks of any WAV (PCM, float,
    extensible); None for other formats and unreadable headers (soundfile then says what is wrong). libsndfile reads
    a truncated WAV without complaint, so this is the only place that notices one."""
    if handle.read(4) != b"RIFF" or len(handle.read(4)) < 4 or handle.read(4) != b"WAVE":
        return None
    block_align = None
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return None
        chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
        if chunk_id == b"data":
            if not block_align or chunk_size == 0xFFFFFFFF:  # 0xFFFFFFFF: a streamed WAV of unknown length
                return None
            return chunk_size // block_align, min(chunk_size, size - handle.tell()) // block_align
        body = handle.read(chunk_size + (chunk_size & 1))  # chunks are padded to an even size
        if chunk_id == b"fmt " and len(body) >= 14:
            block_align = int.from_bytes(body[12:14], "little")  # bytes per frame, all channels


def check_file(path, min_samples):
    """The problem with one audio file, or None. `path` may also be the encoded bytes of a file (datasets that embed
    their audio)."""
    if isinstance(path, (bytes, bytearray)):
        if not path:
            return "the audio bytes are empty (0 bytes)"
        source, size = io.BytesIO(path), len(path)
    else:
        if not Path(path).exists():
            return "the file does not exist"
        if not Path(path).is_file():
            return "not a file"
        source, size = path, Path(path).stat().st_size
        if size == 0:
            return "the file is empty (0 bytes)"
    handle = source if isinstance(source, io.BytesIO) else open(source, "rb")
    with handle:
        frames = _declared_frames(handle, size)
        handle.seek(0)
        if frames and frames[1] < frames[0]:
            return f"truncated: the WAV header declares {frames[0]} samples, the file holds {frames[1]}"
        try:
            data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
        except Exception as error:  # libsndfile's own message says what is wrong, after the handle's repr
            name = "the audio bytes" if isinstance(source, io.BytesIO) else "the file"
            return f"cannot be decoded ({str(error).replace(repr(handle), name)})"
    return check_samples(data, rate, min_samples)


def check_samples(data, rate, min_samples):
    """The problem with decoded audio, or None: `data` is (samples, channels) or (samples,) at `rate` Hz. Shared by
    `check_file` and builders that decode audio themselves (the MELD builder reads the track of a video)."""
    data = np.asarray(data)
    if data.shape[0] == 0:
        return "holds no samples"
    if not np.isfinite(data).all():
        return f"holds {int((~np.isfinite(data)).sum())} NaN or infinite sample(s)"
    samples = int(math.floor(data.shape[0] * SAMPLING_RATE / rate))
    if samples < min_samples:
        return (f"too short: {1000 * data.shape[0] / rate:.1f} ms, the speech backbone needs at least "
                f"{1000 * min_samples / SAMPLING_RATE:.1f} ms for one frame")
    return None


def find_bad_audio(split, min_samples):
    """Every utterance of `split` whose audio fails `check_file`."""
    raw = split.cast_column("audio", datasets.Audio(decode=False))
    bad = []
    for utterance, audio in zip(raw["id"][:], raw["audio"][:]):
        if audio.get("bytes") is not None:  # embedded audio: its path, if any, is only the original file name
            problem, where = check_file(audio["bytes"], min_samples), audio.get("path") or "embedded audio"
        else:
            problem, where = check_file(audio["path"], min_samples), audio["path"]
        if problem:
            bad.append(BadAudio(utterance, where, problem))
    return bad


def audio_config_of(model_args):
    """The speech backbone's config, whichever way the model is given (no weights are loaded)."""
    if model_args.audio_model:
        return AutoConfig.from_pretrained(model_args.audio_model)
    if model_args.model_name_or_path:
        return AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=True).audio_config
    from fdrl.training.protocol import preset_backbone_configs

    return preset_backbone_configs(model_args.model_preset, 2)[0]


def check_corpus_audio(data, model_args, data_args):
    """Check every utterance before training. Returns (data without the bad utterances, a report with the count,
    the seconds it took and the skipped ones); raises, naming each bad file, unless skipping is allowed."""
    start = time.perf_counter()
    min_samples = minimum_samples(audio_config_of(model_args))
    splits = dict(data) if isinstance(data, datasets.DatasetDict) else {"data": data}
    bad = {name: find_bad_audio(split, min_samples) for name, split in splits.items()}
    found = [item for items in bad.values() for item in items]
    count = sum(len(split) for split in splits.values())
    logger.info(f"audio check: {count} utterances in {time.perf_counter() - start:.1f} s, {len(found)} bad")
    report = {"utterances": count, "seconds": round(time.perf_counter() - start, 2),
              "skipped_audio": [vars(item) for item in found]}
    if found and not data_args.skip_bad_audio:
        listing = "\n  ".join(str(item) for item in found[:20]) + ("\n  ..." if len(found) > 20 else "")
        raise ValueError(f"{len(found)} utterance(s) have unusable audio:\n  {listing}\n"
                         f"Fix or remove them, or pass --skip_bad_audio true to leave them out (they are counted and "
                         f"named in the results).")
    if not found:
        return data, report
    logger.warning(f"skipping {len(found)} utterance(s) with unusable audio: " + "; ".join(map(str, found[:10])))
    kept = {name: split.select([i for i, u in enumerate(split["id"][:]) if u not in {b.id for b in bad[name]}])
            for name, split in splits.items()}
    return (datasets.DatasetDict(kept) if isinstance(data, datasets.DatasetDict) else kept["data"]), report
