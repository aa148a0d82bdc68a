"""Pipeline for FDRL: speech + transcript -> emotion scores, registered as "multimodal-emotion-recognition".

    from transformers import pipeline

    classifier = pipeline("multimodal-emotion-recognition", model="path/or/hub-id", trust_remote_code=True)
    classifier({"audio": "clip.wav", "text": "I can't believe you did that."})
    # [{'label': 'ang', 'score': 0.71}, {'label': 'neu', 'score': 0.17}, {'label': 'sad', 'score': 0.08}, ...]

An input is a dict with "audio" (a file path, encoded bytes, a numpy array or torch tensor, `(samples,)` or
`(channels, samples)`), "text" (the transcript) and, for arrays and tensors, "sampling_rate"; or a list of them.
Files and bytes are decoded with soundfile (torchcodec for the formats it lacks) and every waveform is resampled by
the processor. With `asr_model=...` the transcript of an input without text comes from that speech recogniser.
Every input problem is reported naming the input (its index in the list and, for files, the path): a single input
raises a `ValueError`; in a list, dataset or generator the bad input gives `{"input": name, "error": message}` in its
place and the others are classified as usual.

A recording of any length: `classifier("meeting.wav", timeline=True, recognizer="pretrained/whisper-base-ct2")`
returns `{"duration", "segments"}`, one segment per sentence the recogniser finds, each with its times, transcript,
label and scores (see `MultimodalEmotionRecognitionPipeline.timeline`).

`save_pipeline(model, processor, folder)` writes a folder (a Hub model repository) that the call above loads.
"""

import io
import json
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers import pipeline as load_pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging


try:
    from .modeling_fdrl import check_weight_files
    from .processing_fdrl import (
        audio_problem,
        minimum_samples,
        to_mono_waveform,
        transcript_problem,
        wav_truncation_problem,
    )
except ImportError:
    from modeling_fdrl import check_weight_files
    from processing_fdrl import (
        audio_problem,
        minimum_samples,
        to_mono_waveform,
        transcript_problem,
        wav_truncation_problem,
    )

try:  # optional: without it, files are decoded by torchcodec alone
    import soundfile
except ImportError:
    soundfile = None


logger = logging.get_logger(__name__)

TASK = "multimodal-emotion-recognition"
REPRESENTATIONS = ("shared_audio", "shared_text", "private_audio", "private_text")
INPUT_KEYS = ("audio", "text", "sampling_rate")
TORCHCODEC_SOURCE_LOCATION = re.compile(r"^\w+, \S+:\d+, ")  # "SingleStreamDecoder, /path/x.cpp:51, " in its errors
REMOTE_CODE_FILES = ("configuration_fdrl.py", "modeling_fdrl.py", "processing_fdrl.py", "pipeline_fdrl.py")
HUB_ID = re.compile(r"^(?![.-])[\w.-]{1,96}(/(?![.-])[\w.-]{1,96})?$")  # "name" or "org/name"


@dataclass(frozen=True)
class _IndexedInput:
    """One input and its position in the caller's list (None for a single input), so errors can name it."""

    index: int | None
    value: Any


class _IndexedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return _IndexedInput(index, self.dataset[index])


class MultimodalEmotionRecognitionPipeline(Pipeline):
    r"""
    Emotion recognition from speech and its transcript with [`FDRLModel`] and [`FDRLProcessor`].

    Each input gives a list of `{"label", "score"}` over the classes, best first (all of them unless `top_k`). With
    `return_representations=True` or `return_transcript=True` (the default when the pipeline has an ASR model), each
    input gives a dict instead:

        {"scores": [{"label": ..., "score": ...}, ...],
         "transcript": "the text the model read", "transcript_source": "input" or "asr",  # with return_transcript
         "representations": {"shared_audio": [...], "shared_text": [...],               # with return_representations
                             "private_audio": [...], "private_text": [...]}}

    Bad inputs: a single input that cannot be used (missing, undecodable or truncated file, empty, NaN or too short
    audio by the rule training's audio check applies, no transcript or one without a readable word, unknown keys,
    ...) raises a `ValueError` whose message starts with its name. In a list, a dataset or a
    generator, each bad input gives, in its place and in input order,

        {"input": "input 2 (clips/b.wav)", "error": "cannot decode the audio (...)"}

    so one bad file does not lose the results of the others; check `"error" in output` before reading scores. Wrong
    call arguments (`top_k=0`, ...) raise in every case.

    Batching (`batch_size=...`) pads speech and text across inputs; with a layer-norm speech backbone (wav2vec2
    large-lv60, HuBERT, WavLM, the tiny test models) batched and unbatched scores agree to float precision, with a
    group-norm one (wav2vec2-base) padding changes the features slightly, as in transformers' own wav2vec2.

    Args:
        asr_model (`str`, `os.PathLike` or [`Pipeline`], *optional*):
            A speech recogniser for inputs without text: a transformers speech-recognition model (Hub id or local
            folder, loaded on the pipeline's device) or an existing "automatic-speech-recognition" pipeline (build
            it yourself to set `chunk_length_s`, `generate_kwargs` or its device), or any callable taking
            `{"raw": samples, "sampling_rate": rate}` and returning `{"text": ...}` (such as
            `fdrl.inference.recognizer.load_recognizer()`, faster-whisper on the CPU).
        sampling_rate (`int`, *optional*):
            Default rate of array and tensor inputs that do not give their own "sampling_rate".
        max_text_length (`int`, *optional*):
            Transcripts are truncated to this many tokens; defaults to the text backbone's limit (512 for BERT).
        top_k (`int`, *optional*):
            How many classes to return per input; all of them by default.
        return_representations (`bool`, *optional*, defaults to `False`):
            Add FDRL's four vectors S_a, S_t, P_a, P_t (eq. 3) as lists of floats.
        return_transcript (`bool`, *optional*):
            Add the transcript the model read and where it came from; defaults to whether `asr_model` is set.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, asr_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        model_type = getattr(self.model.config, "model_type", None)
        if model_type != "fdrl":
            raise ValueError(
                f"{getattr(self.model, 'name_or_path', '') or 'the model'} is not an FDRL model "
                f"(model_type {model_type})"
            )
        if self.processor is None:
            raise ValueError(f"{type(self).__name__} needs the model's FDRLProcessor: pass processor=...")
        # the fewest samples the speech backbone reads: the rule training's audio check applies
        self.min_samples = minimum_samples(
            self.model.config.audio_config, self.processor.feature_extractor.sampling_rate
        )
        self.asr_pipeline = self._load_asr_pipeline(asr_model)

    def _load_asr_pipeline(self, asr_model):
        if asr_model is None or isinstance(asr_model, Pipeline) or callable(asr_model):  # a pipeline-like callable
            return asr_model
        if isinstance(asr_model, (str, os.PathLike)):
            return load_pipeline("automatic-speech-recognition", model=os.fspath(asr_model), device=self.device)
        raise ValueError(
            "asr_model must be a speech-recognition model id or folder, or an automatic-speech-recognition pipeline, "
            f"got {type(asr_model).__name__}"
        )

    def __call__(self, inputs, **kwargs):
        """
        Classify the emotion of one input or a list of inputs (see the class docstring for the output).

        Args:
            inputs (`dict`, a list of dicts, a generator or a `torch.utils.data.Dataset` of them):
                `{"audio": path | bytes | np.ndarray | torch.Tensor, "text": str, "sampling_rate": int}`; "text" may
                be left out (or empty) when the pipeline has an ASR model, "sampling_rate" for files and bytes. A bare
                path, bytes or array stands for `{"audio": ...}`. Audio arrays are `(samples,)` or
                `(channels, samples)`; datasets' decoded audio (`{"array", "sampling_rate"}` or a torchcodec
                `AudioDecoder`) also works.
            sampling_rate, max_text_length, top_k, return_representations, return_transcript: see the class docstring.
            batch_size (`int`, *optional*): how many inputs go through the model together.
        """
        if kwargs.pop("timeline", False):
            return self.timeline(inputs, **kwargs)
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 0:
                raise ValueError("inputs is an empty list")
            inputs = [_IndexedInput(index, value) for index, value in enumerate(inputs)]
        elif isinstance(inputs, torch.utils.data.Dataset):
            inputs = _IndexedDataset(inputs)
        elif hasattr(inputs, "__next__"):  # a generator: streamed, outputs come back lazily
            inputs = (_IndexedInput(index, value) for index, value in enumerate(inputs))
        else:
            inputs = _IndexedInput(None, inputs)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        sampling_rate=None,
        max_text_length=None,
        top_k=None,
        return_representations=None,
        return_transcript=None,
        **unexpected,
    ):
        if unexpected:
            raise ValueError(f"{type(self).__name__} got unexpected arguments {sorted(unexpected)}")
        preprocess_params, postprocess_params = {}, {}
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = _check_sampling_rate(sampling_rate)
        if max_text_length is not None:
            if not isinstance(max_text_length, int) or isinstance(max_text_length, bool) or max_text_length < 3:
                raise ValueError(f"max_text_length must be an int of at least 3 tokens, got {max_text_length!r}")
            preprocess_params["max_text_length"] = max_text_length
        if top_k is not None:
            if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
                raise ValueError(f"top_k must be a positive int, got {top_k!r}")
            postprocess_params["top_k"] = top_k
        if return_representations is not None:
            postprocess_params["return_representations"] = bool(return_representations)
        if return_transcript is not None:
            postprocess_params["return_transcript"] = bool(return_transcript)
        return preprocess_params, {}, postprocess_params

    # ----- a long recording: one prediction per recognised sentence ------------------------------------------------
    def timeline(
        self,
        audio,
        recognizer=None,
        sampling_rate=None,
        batch_size=8,
        min_duration=0.5,
        max_text_length=None,
        progress=None,
    ):
        """
        The emotion of every sentence of a recording of any length (`pipe(audio, timeline=True, recognizer=...)`
        is the same call). A speech recogniser cuts the recording into timed sentences and gives their text; each
        sentence's speech and text are classified like a single input.

        Args:
            audio: a file path, bytes, or an array / tensor with `sampling_rate` (as a single input's "audio").
            recognizer: what gives the timed sentences: an object with `segments(samples, sampling_rate)` returning
                items with `start`, `end` (seconds) and `text` (`fdrl.inference.recognizer.load_recognizer()`), a
                `faster_whisper.WhisperModel`, or the path of a CTranslate2 Whisper folder (faster-whisper is then
                imported; `make pretrained` writes `pretrained/whisper-base-ct2`).
            batch_size (`int`, *optional*, defaults to 8): sentences per forward pass.
            min_duration (`float`, *optional*, defaults to 0.5): shorter sentences get a reason, not a label.
            progress (`bool`, *optional*): a progress bar while recognising (default: for recordings of 60 s or more).

        Returns:
            `dict`: `{"duration": seconds, "segments": [...]}`, one segment per recognised sentence in time order,
            each `{"start", "end", "transcript", "label", "scores": {class: probability, every class}}`, or, for a
            sentence that is too short, has no words or cannot be classified, `{"start", "end", "transcript",
            "reason"}` in its place: no sentence is dropped.
        """
        if recognizer is None:
            raise ValueError(
                "timeline needs a recognizer (a CTranslate2 Whisper folder, a faster_whisper.WhisperModel "
                "or fdrl.inference.recognizer.load_recognizer())"
            )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if sampling_rate is not None:
            sampling_rate = _check_sampling_rate(sampling_rate)
        name = _input_name(None, audio)
        try:
            waveform, rate = _load_waveform(audio, sampling_rate)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        duration = waveform.shape[0] / rate
        sentences = _recognised_segments(recognizer, waveform, rate, progress)
        segments, inputs, positions = [], [], []
        for sentence in sentences:
            start, end = max(0.0, float(sentence["start"])), min(duration, float(sentence["end"]))
            text = sentence["text"].strip()
            segment = {"start": round(start, 2), "end": round(end, 2), "transcript": text}
            if not text:
                segment["reason"] = "no words recognised"
            elif end - start < min_duration:
                segment["reason"] = f"too short ({end - start:.2f} s, under {min_duration:g} s)"
            else:
                positions.append(len(segments))
                inputs.append(
                    {"audio": waveform[round(start * rate) : round(end * rate)], "sampling_rate": rate, "text": text}
                )
            segments.append(segment)
        class_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        chunk = 8 * batch_size
        for first in range(0, len(inputs), chunk):
            kwargs = {"max_text_length": max_text_length} if max_text_length is not None else {}
            outputs = self(inputs[first : first + chunk], batch_size=batch_size, return_transcript=False, **kwargs)
            for position, output in zip(positions[first : first + chunk], outputs):
                if isinstance(output, dict) and "error" in output:
                    segments[position]["reason"] = output["error"]
                    continue
                scores = {entry["label"]: entry["score"] for entry in output}
                segments[position]["label"] = max(scores, key=scores.get)
                segments[position]["scores"] = {label: scores[label] for label in class_names}
            logger.info(f"classified {min(first + chunk, len(inputs))} of {len(inputs)} sentence(s)")
        return {"duration": round(duration, 3), "segments": segments}

    # ----- preprocess: one input -> the processor's tensors, batch of 1 ---------------------------------------------
    def preprocess(self, item, sampling_rate=None, max_text_length=None):
        index, value = (item.index, item.value) if isinstance(item, _IndexedInput) else (None, item)
        try:
            return self._preprocess_one(index, value, sampling_rate, max_text_length)
        except _InputError as error:
            if index is None:  # a single input: nothing else to lose, raise as before
                raise ValueError(f"{error.name}: {error.message}") from None
            return self._error_placeholder(error)

    def _preprocess_one(self, index, value, sampling_rate, max_text_length):
        audio, text, item_rate = _unpack_input(value, index)
        name = _input_name(index, audio)
        try:
            waveform, rate = _load_waveform(audio, item_rate if item_rate is not None else sampling_rate)
            problem = audio_problem(waveform, rate, self.min_samples, self.processor.feature_extractor.sampling_rate)
            if problem:
                raise ValueError(f"the audio is unusable: {problem}")
            transcript, source = self._resolve_transcript(text, waveform, rate)
            features = self.processor(
                audio=waveform,
                text=transcript,
                sampling_rate=rate,
                truncation=True,
                max_length=max_text_length or self._text_length_limit(),
            )
        except ValueError as error:
            raise _InputError(name, str(error)) from None
        speech = self.processor.audio_input_name  # input_values, or Whisper's input_features
        if self.dtype is not None and self.dtype.is_floating_point:
            features[speech] = features[speech].to(self.dtype)
        if speech == "input_features":  # (1, frames, mel bins): the pipeline's batching pads dimension 1
            features[speech] = features[speech].transpose(1, 2)
        return {**features, "transcript": transcript, "transcript_source": source, "error": None}

    def _error_placeholder(self, error):
        """A bad input's stand-in: one-step tensors under every key (they never pad the others), never forwarded."""
        placeholder = {name: torch.zeros((1, 1), dtype=torch.long) for name in self.processor.model_input_names}
        speech = self.processor.audio_input_name
        shape = (1, 1, self.processor.feature_extractor.feature_size) if speech == "input_features" else (1, 1)
        placeholder[speech] = torch.zeros(shape, dtype=self.dtype or torch.float32)
        return {**placeholder, "transcript": None, "transcript_source": None, "error": (error.name, error.message)}

    def _resolve_transcript(self, text, waveform, sampling_rate):
        """The text the model reads: the input's, or the ASR model's for speech-only inputs."""
        tokenizer = self.processor.tokenizer
        if text is not None and text.strip():
            problem = transcript_problem(tokenizer, text)
            if problem:
                raise ValueError(f"{problem}: pass the words spoken as 'text'")
            return text, "input"
        if self.asr_pipeline is None:
            raise ValueError(
                "no transcript: pass a non-empty 'text', or build the pipeline with asr_model=... to transcribe the "
                "speech"
            )
        result = self.asr_pipeline({"raw": waveform.numpy(), "sampling_rate": sampling_rate})
        transcript = result["text"].strip()
        if not transcript:
            raise ValueError("the speech-recognition model returned an empty transcript; pass 'text' for this input")
        if transcript_problem(tokenizer, transcript):
            raise ValueError(
                f"the speech-recognition model returned {transcript!r}, which has no word the model can "
                "read; pass 'text' for this input"
            )
        return transcript, "asr"

    def _text_length_limit(self):
        """The text backbone's limit: longer transcripts (an ASR model's, say) would overflow its positions."""
        positions = getattr(self.model.config.text_config, "max_position_embeddings", None) or float("inf")
        return int(min(self.processor.tokenizer.model_max_length, positions))

    # ----- forward: a (padded) batch ---------------------------------------------------------------------------------
    def _forward(self, model_inputs):
        if self.model.training:
            logger.warning_once("The FDRL model is in training mode (dropout active): call model.eval() first")
        extras = {key: model_inputs.pop(key) for key in ("transcript", "transcript_source", "error")}
        speech = self.processor.audio_input_name
        if speech == "input_features":  # back to (batch, mel bins, frames)
            model_inputs[speech] = model_inputs[speech].transpose(1, 2)
        errors = extras["error"] if isinstance(extras["error"], list) else [extras["error"]]  # unbatched: one item
        good = [i for i, error in enumerate(errors) if error is None]
        batch_size, device = len(errors), model_inputs[speech].device
        logits = torch.zeros(batch_size, self.model.config.num_labels, device=device)
        hidden_size = self.model.config.hidden_size
        vectors = {key: torch.zeros(batch_size, hidden_size, device=device) for key in REPRESENTATIONS}
        if good:  # only the good rows reach the model; the placeholders' rows stay zero and postprocess skips them
            outputs = self.model(**{key: value[good] for key, value in model_inputs.items()})
            logits = logits.to(outputs.logits.dtype)
            logits[good] = outputs.logits
            for key in REPRESENTATIONS:
                vectors[key] = vectors[key].to(outputs[key].dtype)
                vectors[key][good] = outputs[key]
        # logits first: the pipeline's unbatching reads the batch size from the first entry
        return {"logits": logits, **vectors, **extras}

    # ----- postprocess: one input's outputs -> scores (and extras) ---------------------------------------------------
    def postprocess(self, model_outputs, top_k=None, return_representations=False, return_transcript=None):
        if model_outputs["error"] is not None:
            name, message = model_outputs["error"]
            return {"input": name, "error": message}
        probabilities = model_outputs["logits"][0].float().softmax(-1)  # (num_labels,)
        top_k = probabilities.shape[0] if top_k is None else min(top_k, probabilities.shape[0])
        values, ids = probabilities.topk(top_k)
        id2label = self.model.config.id2label
        scores = [{"label": id2label[i], "score": v} for v, i in zip(values.tolist(), ids.tolist())]

        if return_transcript is None:
            return_transcript = self.asr_pipeline is not None
        if not (return_transcript or return_representations):
            return scores
        result = {"scores": scores}
        if return_transcript:
            result["transcript"] = model_outputs["transcript"]
            result["transcript_source"] = model_outputs["transcript_source"]
        if return_representations:
            result["representations"] = {key: model_outputs[key][0].float().tolist() for key in REPRESENTATIONS}
        return result


# ----- reading inputs ------------------------------------------------------------------------------------------------
class _InputError(Exception):
    """A problem with one input: its name ("input 2 (a.wav)") and what is wrong."""

    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def _input_name(index, audio) -> str:
    name = "input" if index is None else f"input {index}"
    if isinstance(audio, (str, os.PathLike)):
        name += f" ({os.fspath(audio)})"
    return name


def _unpack_input(value, index):
    """(audio, text, sampling_rate) from a dict input, or from a bare path / bytes / array (speech only)."""
    if not isinstance(value, dict):
        return value, None, None
    unknown = sorted(set(value) - set(INPUT_KEYS))
    name = _input_name(index, value.get("audio"))
    if unknown:
        raise _InputError(name, f"unknown keys {unknown}; an input has the keys {list(INPUT_KEYS)}")
    if value.get("audio") is None:
        raise _InputError(name, "no 'audio'")
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise _InputError(name, f"'text' must be a str, got {type(text).__name__}")
    return value["audio"], text, value.get("sampling_rate")


def _check_sampling_rate(rate):
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not rate > 0 or not float(rate).is_integer():
        raise ValueError(f"sampling_rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _load_waveform(audio, sampling_rate):
    """Any accepted audio -> (1-D float32 tensor, its rate). Files and bytes carry their rate; arrays need one."""
    if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
        array, sampling_rate = read_audio(audio)
    elif isinstance(audio, dict) and "array" in audio:  # datasets' decoded audio
        array, sampling_rate = audio["array"], audio.get("sampling_rate")
    elif hasattr(audio, "get_all_samples"):  # a torchcodec AudioDecoder, as datasets 5 returns
        samples = audio.get_all_samples()
        array, sampling_rate = samples.data, samples.sample_rate  # (channels, samples)
    elif isinstance(audio, (np.ndarray, torch.Tensor, list, tuple)):
        array = audio
    else:
        raise ValueError(
            f"audio must be a file path, bytes, a numpy array or a torch tensor, got {type(audio).__name__}"
        )
    if sampling_rate is None:
        raise ValueError("sampling_rate is required for array and tensor audio (the rate it was recorded at)")
    sampling_rate = _check_sampling_rate(sampling_rate)
    try:
        waveform = to_mono_waveform(array, 0)  # the processor's checks: dtype, shape, empty, NaN
    except ValueError as error:
        raise ValueError(str(error).replace("audio item 0", "the audio")) from None
    return waveform, sampling_rate


def read_audio(source) -> tuple[np.ndarray, int]:
    """
    Decodes an audio file or encoded bytes to a float32 array `(channels, samples)` and its sampling rate.

    soundfile (libsndfile: WAV, FLAC, OGG, MP3, ...) is tried first, torchcodec (FFmpeg: M4A, WebM, ...) second.
    Raises `ValueError` for a missing file, a folder, or data neither can decode.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ValueError("no such file")
        if not path.is_file():
            raise ValueError("not a file")
        source = str(path)
    else:
        source = bytes(source)
        if not source:
            raise ValueError("the audio bytes are empty")
    truncated = wav_truncation_problem(source)
    if truncated:
        raise ValueError(f"the file is {truncated}")
    errors = []
    if soundfile is not None:
        opened = source if isinstance(source, str) else io.BytesIO(source)
        try:
            data, rate = soundfile.read(opened, dtype="float32", always_2d=True)
            return data.T, rate  # (channels, samples)
        except Exception as error:  # libsndfile reports unreadable data as LibsndfileError or RuntimeError
            errors.append(f"soundfile: {str(error).replace(repr(opened), 'the bytes')}")  # not "<_io.BytesIO at 0x..>"
    try:
        from torchcodec.decoders import AudioDecoder

        samples = AudioDecoder(source).get_all_samples()
        return samples.data.numpy(), samples.sample_rate
    except Exception as error:  # ImportError, missing FFmpeg libraries, or undecodable data
        errors.append(f"torchcodec: {TORCHCODEC_SOURCE_LOCATION.sub('', str(error))}")
    raise ValueError(f"cannot decode the audio ({'; '.join(errors)})")


# ----- loading -------------------------------------------------------------------------------------------------------
def check_model_folder(model, fdrl=True):
    """
    Checks a model given as a local folder before anything is loaded, so that a wrong `--model` is one clear error:
    the folder does not exist (and `model` cannot be a Hub id), it is a file, it has no readable `config.json`, it is
    not an FDRL model (`fdrl=True`) or it is one where a speech recogniser is wanted (`fdrl=False`), or one of its
    safetensors files is damaged. Used by `fdrl-predict`, `fdrl-wer` and the web demo; a Hub id (`"name"` or
    `"org/name"` that is no local folder) is left to `from_pretrained`.

    Returns:
        `str` or `None`: the folder's `model_type`, or None for a Hub id.
    """
    path = Path(model).expanduser()
    if not path.exists():
        if HUB_ID.match(os.fspath(model)):
            return None
        raise ValueError(f"the model folder {model} does not exist")
    if not path.is_dir():
        raise ValueError(f"{model} is a file, not a model folder (give the folder that holds config.json)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{model} has no config.json: not a saved model folder")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{config_file} is not a readable JSON config ({error})") from None
    if fdrl and model_type != "fdrl":
        raise ValueError(f"{model} is not an FDRL model folder (model_type {model_type})")
    if not fdrl and model_type == "fdrl":
        raise ValueError(f"{model} is an FDRL emotion model (model_type fdrl), not a speech recogniser")
    check_weight_files(path)
    return model_type


def _recognised_segments(recognizer, waveform, sampling_rate, progress):
    """[{"start", "end", "text"}] from any recogniser `timeline` accepts, in time order."""
    if isinstance(recognizer, (str, os.PathLike)):
        from faster_whisper import WhisperModel  # optional: only this use of the pipeline needs it

        recognizer = WhisperModel(
            os.fspath(recognizer),
            device="cpu",
            compute_type="int8",
            cpu_threads=torch.get_num_threads(),
            local_files_only=True,
        )
    if hasattr(recognizer, "segments"):  # fdrl.inference.recognizer
        found = recognizer.segments(waveform.numpy(), sampling_rate, progress=progress)
    elif hasattr(recognizer, "transcribe") and hasattr(recognizer, "feature_extractor"):  # faster_whisper.WhisperModel
        if sampling_rate != 16000:
            import torchaudio

            waveform = torchaudio.functional.resample(waveform, orig_freq=sampling_rate, new_freq=16000)
        found, _ = recognizer.transcribe(waveform.numpy(), beam_size=1, condition_on_previous_text=False)
    else:
        raise ValueError(
            f"recognizer must be a CTranslate2 Whisper folder, a faster_whisper.WhisperModel or an "
            f"object with segments(samples, sampling_rate), got {type(recognizer).__name__}"
        )
    items = [s if isinstance(s, dict) else {"start": s.start, "end": s.end, "text": s.text} for s in found]
    return sorted(items, key=lambda s: (s["start"], s["end"]))


# ----- saving --------------------------------------------------------------------------------------------------------
def save_pipeline(model, processor, folder) -> Path:
    """
    Writes a complete, Hub-ready model folder: weights (safetensors), `config.json` with `auto_map` and
    `custom_pipelines`, the four remote-code files and the processor. Existing files in `folder` are overwritten, so
    calling it again on the same folder is safe. Load the result with
    `pipeline("multimodal-emotion-recognition", model=folder, trust_remote_code=True)`.

    Args:
        model ([`FDRLModel`]): the model to save (left on its device and in its train/eval mode).
        processor ([`FDRLProcessor`]): its processor.
        folder (`str` or `os.PathLike`): where to write; created if needed.

    Returns:
        `Path`: the folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder must be a directory, got the file {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    device = None if getattr(model, "hf_device_map", None) is not None else model.device
    pipe = MultimodalEmotionRecognitionPipeline(model=model, processor=processor, device=device)
    pipe.save_pretrained(folder)  # the model (+ custom_pipelines, auto_map, .py files), tokenizer, feature extractor
    processor.save_pretrained(folder)  # processor_config.json and its auto_map: Pipeline.save_pretrained skips it
    _check_saved_folder(folder)
    return folder


def _check_saved_folder(folder):
    missing = [
        name for name in ("config.json", "processor_config.json", *REMOTE_CODE_FILES) if not (folder / name).is_file()
    ]
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise RuntimeError(f"save_pipeline wrote an incomplete folder {folder}: missing {missing}")
    config = json.loads((folder / "config.json").read_text())
    impl = config.get("custom_pipelines", {}).get(TASK, {}).get("impl")
    if impl != "pipeline_fdrl.MultimodalEmotionRecognitionPipeline" or "AutoModel" not in config.get("auto_map", {}):
        raise RuntimeError(f"{folder}/config.json lacks the auto_map or the custom_pipelines entry (impl: {impl})")


PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=MultimodalEmotionRecognitionPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = ["MultimodalEmotionRecognitionPipeline", "check_model_folder", "read_audio", "save_pipeline"]
