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
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import soundfile
from transformers import AutoConfig
from transformers.utils import logging

from fdrl.presets import preset_backbone_configs
from processing_fdrl import audio_problem, minimum_samples, wav_truncation_problem


logger = logging.get_logger(__name__)


@dataclass
class BadAudio:
    id: str
    path: str
    problem: str

    def __str__(self):
        return f"{self.path} (id {self.id}): {self.problem}"


def check_file(path, min_samples):
    """The problem with one audio file, or None. `path` may also be the encoded bytes of a file (datasets that embed
    their audio). The rules (truncated WAV, empty, NaN, too short) are processing_fdrl's, which inference applies
    too."""
    if isinstance(path, (bytes, bytearray)):
        if not path:
            return "the audio bytes are empty (0 bytes)"
        source = bytes(path)
    else:
        if not Path(path).exists():
            return "the file does not exist"
        if not Path(path).is_file():
            return "not a file"
        if Path(path).stat().st_size == 0:
            return "the file is empty (0 bytes)"
        source = path
    truncated = wav_truncation_problem(source)
    if truncated:
        return truncated
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    with handle:
        try:
            data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
        except Exception as error:  # libsndfile's own message says what is wrong, after the handle's repr
            name = "the audio bytes" if isinstance(source, bytes) else "the file"
            return f"cannot be decoded ({str(error).replace(repr(handle), name)})"
    return audio_problem(data.T, rate, min_samples)


def check_samples(data, rate, min_samples):
    """The problem with decoded audio, or None: `data` is (samples, channels) or (samples,) at `rate` Hz. Shared by
    `check_file` and builders that decode audio themselves (the MELD builder reads the track of a video)."""
    return audio_problem(np.asarray(data).T, rate, min_samples)


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
    report = {
        "utterances": count,
        "seconds": round(time.perf_counter() - start, 2),
        "skipped_audio": [vars(item) for item in found],
    }
    if found and not data_args.skip_bad_audio:
        listing = "\n  ".join(str(item) for item in found[:20]) + ("\n  ..." if len(found) > 20 else "")
        raise ValueError(
            f"{len(found)} utterance(s) have unusable audio:\n  {listing}\n"
            f"Fix or remove them, or pass --skip_bad_audio true to leave them out (they are counted and "
            f"named in the results)."
        )
    if not found:
        return data, report
    logger.warning(f"skipping {len(found)} utterance(s) with unusable audio: " + "; ".join(map(str, found[:10])))
    kept = {
        name: split.select([i for i, u in enumerate(split["id"][:]) if u not in {b.id for b in bad[name]}])
        for name, split in splits.items()
    }
    return (datasets.DatasetDict(kept) if isinstance(data, datasets.DatasetDict) else kept["data"]), report
