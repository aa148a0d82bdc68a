"""Speech recognisers behind one interface: faster-whisper (CTranslate2, int8 on the CPU) and transformers' ASR
pipeline (Hub ids, GPUs).

    from fdrl.inference.recognizer import load_recognizer

    recogniser = load_recognizer()                        # pretrained/whisper-base-ct2 with faster-whisper on CPU
    recogniser.transcribe_clip(samples, 16000)            # "I can't believe you did that."
    recogniser.segments(samples, 16000)                   # [Segment(start=0.0, end=2.1, text="..."), ...]
    recogniser({"raw": samples, "sampling_rate": 16000})  # {"text": ...}: what the FDRL pipeline's asr_model calls

`load_recognizer(asr_model, backend="auto")` picks faster-whisper for a CTranslate2 folder (`model.bin` +
`vocabulary.txt`) on the CPU, and for `pretrained/whisper-base` when `make pretrained` wrote its CTranslate2 twin
`pretrained/whisper-base-ct2` beside it (the same weights, no conversion, no download); transformers' pipeline for Hub
ids, other transformers folders and GPUs. Both decode greedily (beam size 1), as transformers' pipeline does by
default, so their word error rates are comparable. faster-whisper's sentence times come from its word timestamps
(cross-attention alignment), which are tighter than Whisper's segment timestamps.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio
from tqdm import tqdm

from fdrl.data.audio import SAMPLING_RATE  # what Whisper hears


logger = logging.getLogger(__name__)
logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every call at INFO

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ASR_MODEL = REPO / "pretrained" / "whisper-base"
CTRANSLATE2_SUFFIX = "-ct2"  # pretrained/whisper-base -> pretrained/whisper-base-ct2
BACKENDS = ("auto", "faster-whisper", "transformers")
PROGRESS_MIN_SECONDS = 60.0  # recordings at least this long show a progress bar


@dataclass(frozen=True)
class Segment:
    """A stretch of speech the recogniser heard, in seconds from the start of the recording."""

    start: float
    end: float
    text: str


def to_16k_mono(waveform, sampling_rate):
    """A `(samples,)` or `(channels, samples)` array / tensor at any rate -> float32 numpy `(samples,)` at 16 kHz.
    Bad audio (empty, NaN, wrong shape or dtype) is a `ValueError` with the FDRL pipeline's own message."""
    from pipeline_fdrl import _load_waveform

    waveform, rate = _load_waveform(waveform, sampling_rate)
    if rate != SAMPLING_RATE:
        waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=SAMPLING_RATE)
    return waveform.numpy()


class Recognizer:
    """The interface: `segments` (timed sentences of a recording), `transcribe_clip` (one utterance's text) and
    `__call__` (transformers' ASR pipeline's `{"raw", "sampling_rate"} -> {"text"}`, so the FDRL pipeline's
    `asr_model` accepts a recogniser)."""

    backend = None
    name = None  # what the app and the outputs call it: the folder's name or the Hub id

    def segments(self, waveform, sampling_rate, progress=None):
        raise NotImplementedError

    def transcribe_clip(self, waveform, sampling_rate):
        raise NotImplementedError

    def __call__(self, inputs):
        return {"text": self.transcribe_clip(inputs["raw"], inputs["sampling_rate"])}

    def describe(self):
        return {"asr_model": self.name, "asr_backend": self.backend}


class FasterWhisperRecognizer(Recognizer):
    """faster-whisper on a CTranslate2 Whisper folder, int8 on the CPU, greedy decoding.

    Args:
        folder (`str` or `os.PathLike`): `model.bin`, `config.json`, `tokenizer.json`, `vocabulary.txt`.
        device (`str`, *optional*, defaults to `"cpu"`).
        compute_type (`str`, *optional*, defaults to `"int8"`): CTranslate2's weight type.
        cpu_threads (`int`, *optional*): defaults to torch's thread count.
        language (`str`, *optional*): e.g. `"en"`; detected from the first 30 s when not given.
    """

    backend = "faster-whisper"

    def __init__(self, folder, device="cpu", compute_type="int8", cpu_threads=None, language=None):
        from faster_whisper import WhisperModel

        self.folder = Path(folder)
        missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (self.folder / f).is_file()]
        if missing:
            raise ValueError(f"{folder} is not a CTranslate2 Whisper folder: it lacks {missing}")
        self.name, self.language = self.folder.name, language
        self.model = WhisperModel(
            str(self.folder),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads or torch.get_num_threads(),
            local_files_only=True,
        )

    def _transcribe(self, samples, **options):
        segments, _ = self.model.transcribe(
            samples,
            language=self.language,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            **options,
        )
        return segments

    def segments(self, waveform, sampling_rate, progress=None):
        samples = to_16k_mono(waveform, sampling_rate)
        duration = len(samples) / SAMPLING_RATE
        progress = duration >= PROGRESS_MIN_SECONDS if progress is None else progress
        found = []
        with tqdm(total=round(duration, 1), unit="s", desc="recognising", disable=not progress) as bar:
            for segment in self._transcribe(samples, word_timestamps=True):
                words = segment.words or []  # the words' times are tighter than the segment's (whole seconds)
                start, end = (words[0].start, words[-1].end) if words else (segment.start, segment.end)
                found.append(Segment(round(float(start), 2), round(min(float(end), duration), 2), segment.text.strip()))
                bar.update(round(min(segment.end, duration) - bar.n, 1))
        return found

    def transcribe_clip(self, waveform, sampling_rate):
        samples = to_16k_mono(waveform, sampling_rate)
        return " ".join(s.text.strip() for s in self._transcribe(samples, without_timestamps=True)).strip()


class TransformersRecognizer(Recognizer):
    """transformers' "automatic-speech-recognition" pipeline (any Hub id or folder, any device). Long recordings
    are read in 30 s chunks with timestamps, so a segment is what Whisper timestamps within a chunk."""

    backend = "transformers"

    def __init__(self, model, device=None, language=None):
        from transformers import pipeline

        self.name = Path(str(model).rstrip("/")).name if Path(str(model)).is_dir() else str(model)
        self.pipeline = pipeline("automatic-speech-recognition", model=os.fspath(model), device=device)
        self.generate_kwargs = {"language": language} if language else {}

    def segments(self, waveform, sampling_rate, progress=None):
        samples = to_16k_mono(waveform, sampling_rate)
        duration = len(samples) / SAMPLING_RATE
        result = self.pipeline(
            {"raw": samples, "sampling_rate": SAMPLING_RATE},
            chunk_length_s=30,
            return_timestamps=True,
            generate_kwargs=self.generate_kwargs,
        )
        found = []
        for chunk in result.get("chunks", []):
            start, end = chunk["timestamp"]
            start = 0.0 if start is None else start
            end = duration if end is None else min(end, duration)
            found.append(Segment(round(start, 2), round(end, 2), chunk["text"].strip()))
        return found

    def transcribe_clip(self, waveform, sampling_rate):
        samples = to_16k_mono(waveform, sampling_rate)
        return self.pipeline({"raw": samples, "sampling_rate": SAMPLING_RATE}, generate_kwargs=self.generate_kwargs)[
            "text"
        ].strip()


def is_ctranslate2_folder(path):
    path = Path(path)
    return path.is_dir() and (path / "model.bin").is_file() and (path / "vocabulary.txt").is_file()


def resolve_backend(asr_model=None, backend="auto", device="cpu"):
    """(backend, model) that `load_recognizer` would use; see the module docstring."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model = Path(asr_model) if asr_model is not None else DEFAULT_ASR_MODEL
    on_cpu = device is None and not torch.cuda.is_available() or str(device) in ("cpu", "-1")
    twin = model.with_name(model.name + CTRANSLATE2_SUFFIX) if asr_model is None or model.is_dir() else None
    if backend == "auto":
        backend = (
            "faster-whisper"
            if on_cpu and (is_ctranslate2_folder(model) or (twin is not None and is_ctranslate2_folder(twin)))
            else "transformers"
        )
    if backend == "faster-whisper":
        if is_ctranslate2_folder(model):
            return backend, model
        if twin is not None and is_ctranslate2_folder(twin):
            return backend, twin
        raise ValueError(
            f"--asr_model {model}: faster-whisper needs a CTranslate2 folder (model.bin, "
            f"vocabulary.txt); neither it nor {twin} is one (`make pretrained` writes "
            f"pretrained/whisper-base-ct2)"
        )
    if is_ctranslate2_folder(model):
        raise ValueError(
            f"--asr_model {model} is a CTranslate2 folder: transformers cannot read it (use the faster-whisper backend)"
        )
    if asr_model is None and not model.is_dir():
        raise ValueError(
            f"no speech recogniser: {model} does not exist (run `make pretrained`) and no --asr_model was given"
        )
    return backend, (model if model.is_dir() else asr_model)


def load_recognizer(asr_model=None, backend="auto", device="cpu", language=None, compute_type="int8"):
    """
    A [`Recognizer`] for `asr_model` (a folder or Hub id; default `pretrained/whisper-base`).

    Args:
        asr_model (`str` or `os.PathLike`, *optional*): a CTranslate2 folder, a transformers folder or a Hub id.
        backend (`str`, *optional*, defaults to `"auto"`): `"faster-whisper"`, `"transformers"` or `"auto"`
            (faster-whisper on the CPU when a CTranslate2 folder is at hand, else transformers).
        device (`str`, *optional*, defaults to `"cpu"`): `"cpu"`, `"cuda"`, ...
        language (`str`, *optional*): the spoken language (`"en"`); detected when not given.
        compute_type (`str`, *optional*, defaults to `"int8"`): faster-whisper's weight type (`"float32"`, ...).
    """
    backend, model = resolve_backend(asr_model, backend, device)
    logger.info(f"speech recogniser: {model} with {backend}")
    if backend == "faster-whisper":
        return FasterWhisperRecognizer(
            model,
            device="cpu" if device is None else str(device).split(":")[0],
            compute_type=compute_type,
            language=language,
        )
    return TransformersRecognizer(model, device=device, language=language)


__all__ = [
    "FasterWhisperRecognizer",
    "Recognizer",
    "Segment",
    "TransformersRecognizer",
    "load_recognizer",
    "resolve_backend",
    "to_16k_mono",
]
