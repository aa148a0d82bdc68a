"""Processor for FDRL: the speech backbone's feature extractor + any AutoTokenizer (transcript).

The processor turns raw waveforms and transcripts into exactly the inputs `FDRLModel.forward` takes:
`input_values` (raw speech, for wav2vec2 / HuBERT / WavLM: a `Wav2Vec2FeatureExtractor`) or `input_features`
(log-mel, for Whisper: a `WhisperFeatureExtractor`), `audio_attention_mask`, `input_ids`, `text_attention_mask`
(+ `token_type_ids` when the tokenizer returns them). It validates every item, mixes multi-channel audio to mono,
resamples to the feature extractor's rate with `torchaudio.functional.resample` and truncates to `max_duration`
seconds. Reading audio files is not its job: it takes arrays.

It also holds the rules every entry point (training's audio check, the pipeline, `fdrl-predict`, `fdrl-wer`, the web
demo) applies to a recording and a transcript, written once: `scale_integer_samples` (integer PCM to [-1, 1)),
`audio_problem` (empty, NaN or infinite, too short for the speech backbone's first frame, with `minimum_samples`),
`wav_truncation_problem` (a WAV whose header promises more samples than it holds) and `transcript_problem` (a
transcript the tokenizer reads as nothing but unknown tokens).
"""

import io
import json
import math
import numbers
import os
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import (
    AutoConfig,
    BatchFeature,
    BertTokenizerFast,
    ProcessorMixin,
)
from transformers.utils import cached_file, logging


try:
    from .modeling_fdrl import speech_backbone
except ImportError:
    from modeling_fdrl import speech_backbone


logger = logging.get_logger(__name__)

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PADDING_STRATEGIES = (True, False, "longest", "do_not_pad")
SAMPLING_RATE = 16000  # the speech backbones' rate, at which `minimum_samples` counts


# ----- the input rules every entry point applies ---------------------------------------------------------------------
def scale_integer_samples(array: np.ndarray) -> np.ndarray:
    """
    Integer PCM samples as floats in [-1, 1], as soundfile reads the same file: signed integers are divided by their
    full scale (32768 for int16, 2**31 for int32), unsigned ones (8-bit WAV) centred on their midpoint first. Float
    arrays are returned as they are. Without this, an int16 array would reach the model 32768 times louder than the
    same recording as floats.
    """
    if array.dtype.kind == "i":
        return array.astype(np.float64) / -float(np.iinfo(array.dtype).min)
    if array.dtype.kind == "u":
        midpoint = (float(np.iinfo(array.dtype).max) + 1) / 2
        return (array.astype(np.float64) - midpoint) / midpoint
    return array


def minimum_samples(audio_config, sampling_rate=SAMPLING_RATE) -> int:
    """The fewest samples (at `sampling_rate`, the backbone's rate) from which the speech backbone produces one frame:
    the receptive field of a wav2vec2-family convolutional front end; 20 ms (one encoder frame) for Whisper-like log-mel
    front ends."""
    kernels, strides = getattr(audio_config, "conv_kernel", None), getattr(audio_config, "conv_stride", None)
    if kernels and strides:
        length = 1
        for kernel, stride in reversed(list(zip(kernels, strides))):
            length = (length - 1) * stride + kernel
        return length
    return int(0.02 * sampling_rate)


def audio_problem(samples, sampling_rate, min_samples, target_rate=SAMPLING_RATE) -> str | None:
    """
    What makes a decoded recording unusable, or None: no samples, NaN or infinite samples, or fewer samples (once
    resampled to `target_rate`) than `min_samples`, the speech backbone's first frame (see [`minimum_samples`]).

    Args:
        samples (`np.ndarray` or `torch.Tensor`): the recording, samples along the last axis (any channel layout).
        sampling_rate (`int`): its rate in Hz.
        min_samples (`int`): the fewest samples at `target_rate` the speech backbone reads.
        target_rate (`int`, *optional*, defaults to 16000): the rate the backbone reads.
    """
    samples = samples.numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if samples.size == 0:
        return "holds no samples"
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        return f"holds {int((~np.isfinite(samples)).sum())} NaN or infinite sample(s)"
    length = samples.shape[-1]
    if math.floor(length * target_rate / sampling_rate) < min_samples:
        return (
            f"too short: {1000 * length / sampling_rate:.1f} ms, the speech backbone needs at least "
            f"{1000 * min_samples / target_rate:.1f} ms for one frame"
        )
    return None


def wav_truncation_problem(source) -> str | None:
    """
    "truncated: ..." when `source` (a path or the encoded bytes of a file) is a WAV whose header declares more
    samples than the file holds, else None (also for other formats). libsndfile and FFmpeg read such a file without
    complaint, returning what is there, so this is the only place that notices a copy cut short.
    """
    if isinstance(source, (bytes, bytearray)):
        handle, size = io.BytesIO(source), len(source)
    else:
        handle, size = open(source, "rb"), os.path.getsize(source)
    with handle:
        frames = _declared_wav_frames(handle, size)
    if frames and frames[1] < frames[0]:
        return f"truncated: the WAV header declares {frames[0]} samples, the file holds {frames[1]}"
    return None


def _declared_wav_frames(handle, size):
    """(frames the WAV header declares, frames the file holds), read from the RIFF chunks of any WAV (PCM, float,
    extensible); None for other formats and unreadable headers (the decoder then says what is wrong)."""
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


def transcript_problem(tokenizer, text) -> str | None:
    """
    What makes a transcript unreadable for the text backbone, or None: blank, or nothing but the tokenizer's unknown
    token (emoji, symbols or a script its vocabulary lacks). The model would read such a transcript as `[UNK]` and
    still answer, confidently, from nothing.
    """
    if not text or not text.strip():
        return "the transcript is empty"
    if tokenizer is None:  # no tokenizer yet (the corpus before a fold's vocabulary is learnt): the blank rule only
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.unk_token_id is not None and all(token == tokenizer.unk_token_id for token in ids):
        return (
            f"the transcript {text.strip()!r} has no word the model can read (its tokenizer reads it as "
            f"{tokenizer.unk_token} only; emoji and symbols are not words)"
        )
    return None


def train_wordpiece_tokenizer(
    texts: Sequence[str], vocab_size: int = 8000, lowercase: bool = True, min_frequency: int = 1
) -> BertTokenizerFast:
    """
    Trains a BERT-style WordPiece vocabulary on a corpus's transcripts.

    The vocabulary is learnt with the `tokenizers` library, using the same BERT normalizer and pre-tokenizer that the
    returned tokenizer applies, and handed to [`BertTokenizerFast`] as a dictionary (in transformers 5.x
    `BertTokenizer(vocab_file=path)` silently ignores the file). The result saves a `tokenizer.json`, the same byte for
    byte in every process for the same arguments (the order of `texts` does not matter either: only counts do).

    Args:
        texts (`Sequence[str]`):
            The transcripts to learn the vocabulary from.
        vocab_size (`int`, *optional*, defaults to 8000):
            Upper bound on the vocabulary size, special tokens included. A small corpus gives fewer entries.
        lowercase (`bool`, *optional*, defaults to `True`):
            Whether to lowercase (and strip accents from) the text before tokenizing.
        min_frequency (`int`, *optional*, defaults to 1):
            Minimum number of occurrences for a merge to enter the vocabulary.

    Returns:
        [`BertTokenizerFast`]: a tokenizer whose special tokens are `[PAD]` (id 0), `[UNK]`, `[CLS]`, `[SEP]` and
        `[MASK]`, which wraps each text as `[CLS] ... [SEP]` and has `model_max_length=512`.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"texts must be a non-empty list of str, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts item {index} must be a str, got {type(text).__name__}")
    if vocab_size <= len(BERT_SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be larger than the {len(BERT_SPECIAL_TOKENS)} special tokens, got {vocab_size}"
        )

    trainable = Tokenizer(WordPiece(unk_token="[UNK]"))
    trainable.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=lowercase, strip_accents=None)
    trainable.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer gives each "##c" its id in the order it meets words in a hash map, seeded anew by every process, and
    # breaks ties between equally frequent merges by those ids: the vocabulary then differs from run to run. Handing
    # it every "##c" up front, sorted, fixes their ids and with them the merges. Only the vocabulary is kept below, so
    # they are not special tokens of the result.
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=BERT_SPECIAL_TOKENS + _continuing_subwords(trainable, texts, prefix="##"),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    trainable.train_from_iterator(texts, trainer=trainer)
    # BertTokenizerFast rebuilds the same normalizer, pre-tokenizer, [CLS]/[SEP] post-processor and decoder.
    return BertTokenizerFast(vocab=trainable.get_vocab(), do_lower_case=lowercase, model_max_length=512)


def _continuing_subwords(tokenizer, texts, prefix):
    """Every word-inner character of `texts` with `prefix` (`"##a"`, ...), sorted: the trainer makes one of each."""
    characters = set()
    for text in texts:
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
            characters.update(word[1:])
    return [prefix + character for character in sorted(characters)]


def speech_feature_extractor(audio_config=None, sampling_rate=16000, **kwargs):
    """
    The feature extractor a speech backbone reads, built from its config (for backbones not loaded from a folder;
    a pretrained one's own comes with `AutoFeatureExtractor.from_pretrained`).

    Args:
        audio_config (`PretrainedConfig`, *optional*): Whisper gives a log-mel [`WhisperFeatureExtractor`] with the
            model's mel bins; anything else (wav2vec2, HuBERT, WavLM, or `None`) a normalising waveform
            [`Wav2Vec2FeatureExtractor`].
        sampling_rate (`int`, *optional*, defaults to 16000): the rate audio is resampled to.
        kwargs (`dict[str, Any]`, *optional*): passed to the feature extractor.
    """
    return speech_backbone(audio_config).feature_extractor(audio_config, sampling_rate, **kwargs)


class FDRLProcessor(ProcessorMixin):
    r"""
    Constructs an FDRL processor, which wraps the speech backbone's feature extractor and a text tokenizer.

    With a [`Wav2Vec2FeatureExtractor`] (wav2vec2, HuBERT, WavLM) speech becomes `input_values`, raw samples padded
    to the longest item, and `audio_attention_mask` marks the real samples. With a [`WhisperFeatureExtractor`]
    speech becomes `input_features`, Whisper's log-mel spectrogram, and `audio_attention_mask` marks the real mel
    frames (100 per second); a batch is padded to its longest item plus 33 ms, rounded up to a whole second (at
    most Whisper's 30 s window), not to 30 s: the 33 ms keep the frames [`FDRLWhisperEncoder`] reads around the
    last real one the same whatever else is in the batch.

    Audio conventions: a single item is a 1-D array of samples or a 2-D array shaped `(channels, samples)`
    (torchaudio's convention; transpose soundfile's `(samples, channels)` output with `.T`), mixed to mono by averaging
    the channels.
    Arrays, tensors and lists of floats are accepted; a list of those is a batch. A single 2-D array is one
    multi-channel recording, never a batch. Integer samples (int16, int32, 8-bit unsigned) are scaled to [-1, 1] by
    their full range ([`scale_integer_samples`]), so an int16 array gives the same prediction as the same audio as
    floats.

    Args:
        feature_extractor ([`Wav2Vec2FeatureExtractor`] or [`WhisperFeatureExtractor`]):
            The speech backbone's feature extractor; its `sampling_rate` is the rate audio is resampled to.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer for the transcripts (BERT, RoBERTa, or one from [`train_wordpiece_tokenizer`]).
        max_duration (`float`, *optional*, defaults to 16.0):
            Audio longer than this many seconds is truncated. The default keeps more than 99% of IEMOCAP utterances
            whole (their 99th percentile is 15.6 s). `None` never truncates (but Whisper reads at most 30 s).
            Saved in `processor_config.json`.
    """

    def __init__(self, feature_extractor, tokenizer, max_duration=16.0):
        self.max_duration = _check_max_duration(max_duration)
        super().__init__(feature_extractor, tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved processor. This class is already imported, so its sub-processors need no remote code:
        without `trust_remote_code=False`, AutoTokenizer sees the model folder's `auto_map` and asks. The tokenizer is
        the text backbone's, so AutoTokenizer gets the text backbone's config: without remote code it would read the
        folder's FDRL `config.json` into a plain config instead, warning "model of type fdrl" on every load."""
        kwargs.setdefault("trust_remote_code", False)
        if "config" not in kwargs:
            text_config = _saved_text_config(pretrained_model_name_or_path, kwargs)
            if text_config is not None:
                kwargs["config"] = text_config
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        sampling_rate: int = 16000,
        vocab_size: int = 8000,
        lowercase: bool = True,
        min_frequency: int = 1,
        max_duration: float | None = 16.0,
        audio_config=None,
        **kwargs,
    ) -> "FDRLProcessor":
        """
        Builds a processor from scratch: the feature extractor of the speech backbone `audio_config` describes
        ([`speech_feature_extractor`]: a default [`Wav2Vec2FeatureExtractor`] unless it is Whisper) and a WordPiece
        tokenizer trained on `texts` with [`train_wordpiece_tokenizer`].

        Args:
            texts (`Sequence[str]`):
                The transcripts to learn the vocabulary from.
            sampling_rate (`int`, *optional*, defaults to 16000):
                The rate the feature extractor expects (and the processor resamples to).
            vocab_size (`int`, *optional*, defaults to 8000):
                Upper bound on the vocabulary size.
            lowercase (`bool`, *optional*, defaults to `True`):
                Whether the tokenizer lowercases the text.
            min_frequency (`int`, *optional*, defaults to 1):
                Minimum number of occurrences for a merge to enter the vocabulary.
            max_duration (`float`, *optional*, defaults to 16.0):
                See [`FDRLProcessor`].
            audio_config (`PretrainedConfig`, *optional*):
                The speech backbone's config; `None` stands for the wav2vec2 family.
            kwargs (`dict[str, Any]`, *optional*):
                Passed to the feature extractor, e.g. `do_normalize=False`.
        """
        feature_extractor = speech_feature_extractor(audio_config, sampling_rate=sampling_rate, **kwargs)
        tokenizer = train_wordpiece_tokenizer(
            texts, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency
        )
        return cls(feature_extractor, tokenizer, max_duration=max_duration)

    def __call__(
        self,
        audio=None,
        text=None,
        sampling_rate=None,
        padding=True,
        max_duration=None,
        return_tensors="pt",
        audio_pad_to_multiple_of_s=None,
        **kwargs,
    ) -> BatchFeature:
        """
        Prepares one item or a batch of audio, text, or both for the model.

        Args:
            audio (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of these, *optional*):
                Raw waveform(s): 1-D `(samples,)` or 2-D `(channels, samples)`. Requires `sampling_rate`.
            text (`str` or `list[str]`, *optional*):
                Transcript(s), one per audio item when both are given.
            sampling_rate (`int` or `list[int]`, *optional*):
                The rate of `audio` in Hz, or one rate per item. Required with audio, even when it already is the
                feature extractor's rate: raw arrays carry no rate, and a guessed one fails silently.
            padding (`bool` or `str`, *optional*, defaults to `True`):
                `True`/`"longest"` pads both modalities to the longest item; `False`/`"do_not_pad"` does not pad
                (only possible with `return_tensors=None` or equal lengths).
            max_duration (`float`, *optional*):
                Truncation in seconds for this call; defaults to `self.max_duration`. `float("inf")` disables it.
            return_tensors (`str` or [`~utils.TensorType`], *optional*, defaults to `"pt"`):
                `"pt"`, `"np"`, or `None` for lists.
            audio_pad_to_multiple_of_s (`float`, *optional*):
                Pad the batch's audio further, to a multiple of this many seconds (with padding `True`/`"longest"`
                only; Whisper's windows, already whole seconds, to a multiple of this whole number of seconds, at
                most 30 s). Fewer distinct input shapes make GPU training steps faster; more padding changes what
                a backbone that normalises over time (wav2vec2-base's group norm) computes for the shorter items.
            kwargs (`dict[str, Any]`, *optional*):
                Passed to the tokenizer, e.g. `truncation=True, max_length=128`.

        Returns:
            [`BatchFeature`]: with `input_values` (or, for Whisper, `input_features`) and `audio_attention_mask` when
            audio is given, and `input_ids`, `text_attention_mask` (and `token_type_ids` if the tokenizer makes them)
            when text is given.
        """
        if audio is None and text is None:
            raise ValueError("You have to pass audio, text, or both; got neither")
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding must be one of {PADDING_STRATEGIES}, got {padding!r}")
        multiple = self._pad_multiple(audio_pad_to_multiple_of_s, padding)
        texts = _as_text_batch(text) if text is not None else None
        audio_items = self._prepare_audio(audio, sampling_rate, max_duration) if audio is not None else None
        if audio_items is not None and texts is not None and len(audio_items) != len(texts):
            raise ValueError(
                f"audio and text must have the same number of items, got {len(audio_items)} audio items and "
                f"{len(texts)} texts"
            )

        data = {}
        if audio_items is not None:
            extract = self._log_mel_features if self.audio_input_name == "input_features" else self._waveform_features
            features = extract(audio_items, padding, return_tensors, multiple)
            data[self.audio_input_name] = features[self.audio_input_name]
            # the tokenizer also returns `attention_mask`: the model tells the two apart by name
            data["audio_attention_mask"] = features["attention_mask"]
        if texts is not None:
            encoding = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **kwargs)
            for key, value in encoding.items():
                data["text_attention_mask" if key == "attention_mask" else key] = value
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def audio_input_name(self) -> str:
        """`"input_values"` (waveform) or `"input_features"` (log-mel): the feature extractor's main output."""
        return self.feature_extractor.model_input_names[0]

    @property
    def model_input_names(self) -> list[str]:
        text_names = ["input_ids", "text_attention_mask"]
        if "token_type_ids" in self.tokenizer.model_input_names:
            text_names.append("token_type_ids")
        return [self.audio_input_name, "audio_attention_mask"] + text_names

    def _pad_multiple(self, seconds, padding):
        """`audio_pad_to_multiple_of_s` checked, in the feature extractor's samples (None: no further padding)."""
        if seconds is None:
            return None
        check_audio_pad_multiple(seconds, self.audio_input_name)
        if padding not in (True, "longest"):
            raise ValueError(f"audio_pad_to_multiple_of_s pads a batch: it needs padding=True, got {padding!r}")
        return max(1, round(seconds * self.feature_extractor.sampling_rate))

    def _waveform_features(self, items, padding, return_tensors, multiple=None):
        return self.feature_extractor(
            items,
            sampling_rate=self.feature_extractor.sampling_rate,
            padding=padding,
            pad_to_multiple_of=multiple,
            return_attention_mask=True,
            return_tensors=return_tensors,
        )

    def _log_mel_features(self, items, padding, return_tensors, multiple=None):
        """Whisper's log-mel of each item padded to a whole second past its end (or the batch's longest item's), or
        to a multiple of `multiple` samples (whole seconds)."""
        extractor = self.feature_extractor
        # The last real encoder frame reads mel frames up to two past the last real one (two kernel-3 convolutions),
        # each an n_fft window around its hop: with this many zeros after an item, none of them sees the window's end.
        margin = 2 * extractor.hop_length + extractor.n_fft // 2 + 1
        step = multiple or extractor.sampling_rate

        def window(num_samples):  # whole seconds, at most the 30 s Whisper was trained on
            return min(math.ceil((num_samples + margin) / step) * step, extractor.n_samples)

        def extract(batch, length, tensors):
            return extractor(
                batch,
                sampling_rate=extractor.sampling_rate,
                padding="max_length",
                max_length=length,
                truncation=True,
                return_attention_mask=True,
                return_tensors=tensors,
            )

        if padding in (True, "longest"):
            return extract(items, window(max(len(item) for item in items)), return_tensors)
        alone = [extract([item], window(len(item)), None) for item in items]
        features = {key: [feature[key][0] for feature in alone] for key in ("input_features", "attention_mask")}
        return BatchFeature(features, tensor_type=return_tensors)

    def _prepare_audio(self, audio, sampling_rate, max_duration) -> list[np.ndarray]:
        """Validates every item and returns mono float32 arrays at the feature extractor's rate, truncated."""
        items = _as_audio_batch(audio)
        rates = _check_sampling_rates(sampling_rate, len(items))
        max_duration = self.max_duration if max_duration is None else _check_max_duration(max_duration)
        target_rate = self.feature_extractor.sampling_rate
        max_samples = None if max_duration is None or math.isinf(max_duration) else round(max_duration * target_rate)
        if self.audio_input_name == "input_features":  # Whisper's positions end at 30 s
            max_samples = min(max_samples or math.inf, self.feature_extractor.n_samples)

        prepared = []
        for index, (item, rate) in enumerate(zip(items, rates)):
            waveform = to_mono_waveform(item, index)
            if rate != target_rate:
                waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=target_rate)
            if max_samples is not None and waveform.shape[0] > max_samples:
                logger.debug(f"audio item {index}: truncated from {waveform.shape[0]} to {max_samples} samples")
                waveform = waveform[:max_samples]
            prepared.append(waveform.numpy())
        return prepared


def _saved_text_config(pretrained_model_name_or_path, kwargs):
    """The text backbone's config in a saved FDRL `config.json`, or None (a processor saved on its own has none)."""
    lookup = {
        key: kwargs[key]
        for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
        if kwargs.get(key) is not None
    }
    path = cached_file(
        pretrained_model_name_or_path,
        "config.json",
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **lookup,
    )
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            text_config = dict(json.load(file)["text_config"])
        return AutoConfig.for_model(text_config.pop("model_type"), **text_config)
    except (ValueError, KeyError, TypeError):  # not an FDRL config, or a backbone unknown here: AutoTokenizer decides
        return None


def check_audio_pad_multiple(seconds, audio_input_name=None, name="audio_pad_to_multiple_of_s"):
    """Refuse an `audio_pad_to_multiple_of_s` that is not a positive, finite number of seconds, or, for a Whisper
    backbone (`audio_input_name` "input_features"), not a whole one: Whisper's windows are whole seconds. `name`
    names the value in the error (`run_fdrl.py` checks its flag with this rule before any data is read)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    if audio_input_name == "input_features" and seconds != int(seconds):
        raise ValueError(f"{name}={seconds}: Whisper's windows are whole seconds, give a whole number")


def _check_max_duration(max_duration):
    if max_duration is None:
        return None
    if not _is_real_number(max_duration) or not max_duration > 0:
        raise ValueError(f"max_duration must be a positive number of seconds or None, got {max_duration!r}")
    return float(max_duration)


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _as_audio_batch(audio) -> list:
    """A single recording (array, tensor, list of numbers) becomes a batch of one; a list of recordings stays."""
    if isinstance(audio, (str, bytes)):
        raise ValueError(
            f"audio must be arrays of samples, got {type(audio).__name__}; decode audio files before calling the "
            "processor"
        )
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        return [audio]
    if not isinstance(audio, (list, tuple)):
        raise ValueError(f"audio must be an array, a tensor or a list of them, got {type(audio).__name__}")
    if len(audio) == 0:
        raise ValueError("audio is an empty list")
    if any(isinstance(value, (np.ndarray, torch.Tensor, list, tuple)) for value in audio):
        return list(audio)
    return [audio]


def to_mono_waveform(item, index: int) -> torch.Tensor:
    """One audio item as a 1-D float32 tensor, with every validation error naming the item."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        array = item.float().numpy() if item.is_floating_point() else item.numpy()
    elif isinstance(item, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(item)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"audio item {index} is not a regular array of numbers: {error}") from None
    else:
        raise ValueError(
            f"audio item {index} must be an array, a tensor or a list of floats, got {type(item).__name__}"
        )

    if array.dtype.kind not in "iuf":
        raise ValueError(f"audio item {index} must hold real numbers (int or float samples), got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(
            f"audio item {index} must be 1-D (samples,) or 2-D (channels, samples), got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"audio item {index} is empty (shape {array.shape})")
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        raise ValueError(
            f"audio item {index} has shape {array.shape}: expected (channels, samples), torchaudio's convention; "
            "transpose (samples, channels) arrays such as soundfile's with `.T`"
        )
    array = scale_integer_samples(array)
    if not np.isfinite(array).all():
        raise ValueError(f"audio item {index} contains NaN or infinite samples")
    with np.errstate(over="ignore"):
        waveform = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: outputs never alias the input
    if not torch.isfinite(waveform).all():
        raise ValueError(f"audio item {index} has samples beyond float32's range (max abs {np.abs(array).max():g})")
    if waveform.ndim == 2:
        waveform = waveform.mean(dim=0)  # (samples,)
    return waveform


def _check_sampling_rates(sampling_rate, num_items: int) -> list[int]:
    if sampling_rate is None:
        raise ValueError(
            "sampling_rate is required with audio: raw arrays carry no rate. Pass the rate the audio was recorded or "
            "decoded at (e.g. sampling_rate=16000); the processor resamples to the feature extractor's rate."
        )
    rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * num_items
    if len(rates) != num_items:
        raise ValueError(f"sampling_rate has {len(rates)} values for {num_items} audio items")
    for index, rate in enumerate(rates):
        if not _is_real_number(rate) or not rate > 0 or not float(rate).is_integer():
            raise ValueError(
                f"sampling_rate for audio item {index} must be a positive whole number of Hz, got {rate!r}"
            )
    return [int(rate) for rate in rates]


def _as_text_batch(text) -> list[str]:
    """A single transcript becomes a batch of one; every item must be a non-blank str."""
    if isinstance(text, str):
        texts = [text]
    elif isinstance(text, (list, tuple)):
        if len(text) == 0:
            raise ValueError("text is an empty list")
        texts = list(text)
    else:
        raise ValueError(f"text must be a str or a list of str, got {type(text).__name__}")
    for index, item in enumerate(texts):
        if not isinstance(item, str):
            raise ValueError(f"text item {index} must be a str, got {type(item).__name__}")
        if not item.strip():
            raise ValueError(f"text item {index} is empty or whitespace-only: {item!r}")
    return texts


FDRLProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "FDRLProcessor",
    "audio_problem",
    "minimum_samples",
    "scale_integer_samples",
    "speech_feature_extractor",
    "to_mono_waveform",
    "train_wordpiece_tokenizer",
    "transcript_problem",
    "wav_truncation_problem",
]
