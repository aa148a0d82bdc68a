"""Convert a CTranslate2 Whisper model (`model.bin`, as faster-whisper ships it) to transformers' Whisper.

The binary format, version 6, little-endian, as CTranslate2 writes it:

    uint32 format version | string spec name | uint32 spec revision
    uint32 number of variables, then per variable:
        string name | uint8 rank | uint32 per dimension | uint8 dtype id | uint32 byte count | the bytes
    uint32 number of aliases, then per alias: string alias | string name of the variable it stands for

A string is a uint16 byte count (the terminating NUL included), the UTF-8 bytes and a NUL. `WhisperSpec` revision 3
stores the weights of each linear layer as `.../weight` `(out, in)` and `.../bias`, layer norms as `gamma` / `beta`,
the self-attention's query, key and value fused into one `linear_0` (rows q | k | v), the cross-attention's key and
value fused into `linear_1` (rows k | v), the key's bias as zeros (transformers' Whisper has none), a few scalar
settings (`decoder/activation`, `num_heads`, ...), and the output projection as an alias of the token embedding.
Nothing is pre-scaled: the query scaling happens at run time in both libraries.

`convert_whisper_ctranslate2(...)` writes a folder that `WhisperForConditionalGeneration.from_pretrained`,
`WhisperProcessor.from_pretrained` and `pipeline("automatic-speech-recognition", model=folder)` load offline.
Every variable of the file is mapped to a transformers weight or checked as a setting; any variable left over,
missing or of an unexpected shape raises `ValueError`.
"""

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.utils import logging


logger = logging.get_logger(__name__)

BINARY_VERSION = 6
SPEC_NAME, SPEC_REVISION = "WhisperSpec", 3
# CTranslate2's DataType enum, in its order
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}

# The spec's scalar settings: the value transformers' Whisper computes with, and what it means.
SETTINGS = {
    "decoder/activation": (3, "the feed-forward activation is exact GELU (CTranslate2's ActivationType 3)"),
    "decoder/pre_norm": (1, "layer norms come before each sub-layer"),
    "decoder/alibi": (0, "no ALiBi position bias"),
    "decoder/scale_embeddings": (0, "token embeddings are not scaled by sqrt(d_model)"),
    "decoder/start_from_zero_embedding": (0, "the first decoding step embeds the start token, not zeros"),
    # the runtime's guided-alignment output for translation models; Whisper's timestamps use config.json's heads
    "decoder/alignment_layer": (-1, "no guided-alignment layer (the runtime's default)"),
    "decoder/alignment_heads": (1, "no guided-alignment heads (the runtime's default)"),
}
SPECIAL_TOKENS = {  # the generation config's ids, looked up in the tokenizer
    "end_of_text": "<|endoftext|>", "start_of_transcript": "<|startoftranscript|>", "transcribe": "<|transcribe|>",
    "translate": "<|translate|>", "no_timestamps": "<|notimestamps|>", "start_of_previous": "<|startofprev|>",
}
MAX_INITIAL_TIMESTAMP_INDEX = 50  # Whisper's decoding lets the first timestamp be at most 1 s (50 x 20 ms)


@dataclass
class CTranslate2Model:
    """The content of a CTranslate2 `model.bin`: spec name and revision, variables by name, aliases."""

    spec: str
    revision: int
    variables: dict
    aliases: dict


class _Reader:
    def __init__(self, buffer):
        self.buffer, self.offset = buffer, 0

    def unpack(self, fmt):
        values = struct.unpack_from("<" + fmt, self.buffer, self.offset)
        self.offset += struct.calcsize(fmt)
        return values[0]

    def string(self):
        size = self.unpack("H")
        raw = bytes(self.buffer[self.offset : self.offset + size])
        self.offset += size
        if size == 0 or raw[-1] != 0:
            raise ValueError(f"malformed string at byte {self.offset - size}: no terminating NUL")
        return raw[:-1].decode("utf-8")

    def tensor(self, dtype, shape, nbytes):
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = 1
        for dim in shape:
            count *= dim
        if count * itemsize != nbytes:
            raise ValueError(f"{count} values of {dtype} in {nbytes} bytes at byte {self.offset}")
        if self.offset + nbytes > len(self.buffer):
            raise ValueError(f"the file ends inside a variable at byte {self.offset}")
        tensor = torch.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.offset) if count else \
            torch.empty(0, dtype=dtype)
        self.offset += nbytes
        return tensor.reshape(shape)


def read_ctranslate2_model(paths):
    """
    Reads a CTranslate2 `model.bin` (format version 6).

    Args:
        paths (`str`, `os.PathLike` or a list of them): the file, or its parts in order (`model.bin.part1`,
            `model.bin.part2`, ...), which are read as one file.

    Returns:
        [`CTranslate2Model`]: tensors share the file's memory (read-only use; convert before changing them).
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("paths is empty: give model.bin or its parts")
    buffer = bytearray()
    for path in paths:
        buffer += Path(path).read_bytes()
    reader = _Reader(buffer)
    version = reader.unpack("I")
    if version != BINARY_VERSION:
        raise ValueError(f"CTranslate2 binary format version {BINARY_VERSION} expected, got {version}")
    spec, revision = reader.string(), reader.unpack("I")
    variables = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
        dtype_id = reader.unpack("B")
        if dtype_id not in DTYPES:
            raise ValueError(f"variable {name}: unknown dtype id {dtype_id}")
        variables[name] = reader.tensor(DTYPES[dtype_id], shape, reader.unpack("I"))
    aliases = {}
    for _ in range(reader.unpack("I")):
        alias = reader.string()
        aliases[alias] = reader.string()
    if reader.offset != len(buffer):
        raise ValueError(f"{len(buffer) - reader.offset} bytes left after the aliases: truncated or wrong parts?")
    return CTranslate2Model(spec, revision, variables, aliases)


# ----- weights --------------------------------------------------------------------------------------------------------
class _Variables:
    """The file's variables, each taken once; whatever is not taken at the end was not mapped."""

    def __init__(self, model):
        self.left = dict(model.variables)
        self.sources = {}  # CTranslate2 name -> what it became

    def take(self, name, becomes):
        if name not in self.left:
            raise ValueError(f"CTranslate2 variable {name} is missing (or mapped twice)")
        self.sources[name] = becomes
        return self.left.pop(name)


def _linear(variables, source, target, state):
    state[f"{target}.weight"] = variables.take(f"{source}/weight", f"{target}.weight")
    state[f"{target}.bias"] = variables.take(f"{source}/bias", f"{target}.bias")


def _layer_norm(variables, source, target, state):
    state[f"{target}.weight"] = variables.take(f"{source}/gamma", f"{target}.weight")
    state[f"{target}.bias"] = variables.take(f"{source}/beta", f"{target}.bias")


def _fused(variables, source, targets, state):
    """Splits a fused projection along its output rows (q | k | v or k | v); the key's zero bias is dropped."""
    names = [f"{target}.weight" for target in targets]
    weight = variables.take(f"{source}/weight", names)
    bias = variables.take(f"{source}/bias", [f"{t}.bias" for t in targets if not t.endswith("k_proj")])
    if weight.shape[0] % len(targets) or bias.shape[0] != weight.shape[0]:
        raise ValueError(f"{source}: a fused projection of {len(targets)} needs equal parts, got {tuple(weight.shape)}")
    for target, part_weight, part_bias in zip(targets, weight.chunk(len(targets)), bias.chunk(len(targets))):
        state[f"{target}.weight"] = part_weight
        if not target.endswith("k_proj"):
            state[f"{target}.bias"] = part_bias
        elif part_bias.any():
            raise ValueError(f"{source}/bias: the key's part must be zero (transformers has no key bias), "
                             f"got max abs {part_bias.float().abs().max():g}")


def _self_attention(variables, source, target, state):
    _layer_norm(variables, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm", state)
    _fused(variables, f"{source}/self_attention/linear_0", [f"{target}.self_attn.{p}_proj" for p in "qkv"], state)
    _linear(variables, f"{source}/self_attention/linear_1", f"{target}.self_attn.out_proj", state)


def _cross_attention(variables, source, target, state):
    _layer_norm(variables, f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm", state)
    _linear(variables, f"{source}/attention/linear_0", f"{target}.encoder_attn.q_proj", state)
    _fused(variables, f"{source}/attention/linear_1", [f"{target}.encoder_attn.{p}_proj" for p in "kv"], state)
    _linear(variables, f"{source}/attention/linear_2", f"{target}.encoder_attn.out_proj", state)


def _feed_forward(variables, source, target, state):
    _layer_norm(variables, f"{source}/ffn/layer_norm", f"{target}.final_layer_norm", state)
    _linear(variables, f"{source}/ffn/linear_0", f"{target}.fc1", state)
    _linear(variables, f"{source}/ffn/linear_1", f"{target}.fc2", state)


def _num_layers(model, stack):
    indices = {int(m.group(1)) for name in model.variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{stack} layers must be numbered 0..n-1, got {sorted(indices)}")
    return len(indices)


def _check_settings(variables, config):
    for name, (expected, meaning) in SETTINGS.items():
        value = int(variables.take(name, f"checked: {meaning}"))
        if value != expected:
            raise ValueError(f"{name} = {value}: transformers' Whisper needs {expected} ({meaning})")
    for stack in ("encoder", "decoder"):
        heads = int(variables.take(f"{stack}/num_heads", f"config.{stack}_attention_heads"))
        if heads != getattr(config, f"{stack}_attention_heads"):
            raise ValueError(f"{stack}/num_heads = {heads}, config has {getattr(config, f'{stack}_attention_heads')}")


def whisper_state_dict_from_ctranslate2(model, config):
    """
    Maps every variable of a CTranslate2 Whisper model to `WhisperForConditionalGeneration`'s weights.

    Returns:
        `(state_dict, sources)`: the weights (float tensors in the file's dtype, the output projection the same
        tensor as the token embedding) and, for each CTranslate2 variable and alias, what it became. Raises
        `ValueError` when a variable is missing, left over, or a setting differs from what transformers computes.
    """
    if (model.spec, model.revision) != (SPEC_NAME, SPEC_REVISION):
        raise ValueError(f"{SPEC_NAME} revision {SPEC_REVISION} expected, got {model.spec} revision {model.revision}")
    variables, state = _Variables(model), {}
    for stack in ("encoder", "decoder"):
        prefix = f"model.{stack}"
        for i in range(getattr(config, f"{stack}_layers")):
            _self_attention(variables, f"{stack}/layer_{i}", f"{prefix}.layers.{i}", state)
            if stack == "decoder":
                _cross_attention(variables, f"{stack}/layer_{i}", f"{prefix}.layers.{i}", state)
            _feed_forward(variables, f"{stack}/layer_{i}", f"{prefix}.layers.{i}", state)
        _layer_norm(variables, f"{stack}/layer_norm", f"{prefix}.layer_norm", state)
        name = f"{prefix}.embed_positions.weight"
        state[name] = variables.take(f"{stack}/position_encodings/encodings", name)
    for conv in ("conv1", "conv2"):
        _linear(variables, f"encoder/{conv}", f"model.encoder.{conv}", state)
    state["model.decoder.embed_tokens.weight"] = variables.take(
        "decoder/embeddings/weight", "model.decoder.embed_tokens.weight")
    _check_settings(variables, config)
    if variables.left:
        raise ValueError(f"CTranslate2 variables not mapped to transformers: {sorted(variables.left)}")

    if model.aliases != {"decoder/projection/weight": "decoder/embeddings/weight"}:
        raise ValueError(f"the only alias must be the tied output projection, got {model.aliases}")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # tie_word_embeddings
    variables.sources["decoder/projection/weight"] = "proj_out.weight (tied to model.decoder.embed_tokens.weight)"
    return state, variables.sources


# ----- config, tokenizer, generation config ---------------------------------------------------------------------------
def whisper_tokenizer_from_ctranslate2(tokenizer_file, vocabulary_file=None):
    """
    Builds a `WhisperTokenizer` from faster-whisper's `tokenizer.json` (byte-level BPE and its special tokens).

    The timestamp tokens `<|0.00|>` ... `<|30.00|>` that `vocabulary.txt` lists after the special tokens are added
    (not special, as in openai/whisper), so the tokenizer covers the model's whole vocabulary; with
    `vocabulary_file`, every id is checked against that file's line of the same number.
    """
    data = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    if data["model"]["type"] != "BPE":
        raise ValueError(f"{tokenizer_file}: a BPE tokenizer expected, got {data['model']['type']}")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    end_of_text = SPECIAL_TOKENS["end_of_text"]
    tokenizer = WhisperTokenizer(vocab=data["model"]["vocab"], merges=merges, unk_token=end_of_text,
                                 bos_token=end_of_text, eos_token=end_of_text, pad_token=end_of_text,
                                 model_max_length=448)
    added = sorted(data["added_tokens"], key=lambda token: token["id"])
    tokenizer.add_tokens([AddedToken(t["content"], lstrip=t["lstrip"], rstrip=t["rstrip"], normalized=False,
                                     single_word=t["single_word"], special=True) for t in added if t["special"]],
                         special_tokens=True)
    vocabulary = Path(vocabulary_file).read_text(encoding="utf-8").split("\n") if vocabulary_file else []
    if vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    timestamps = [token for token in vocabulary[len(tokenizer):] if re.fullmatch(r"<\|\d+\.\d\d\|>", token)]
    tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False) for t in timestamps])
    if vocabulary:
        if len(tokenizer) != len(vocabulary):
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, {vocabulary_file} {len(vocabulary)}")
        byte_level = tokenizer.convert_ids_to_tokens(list(range(len(vocabulary))))
        wrong = [i for i, (a, b) in enumerate(zip(byte_level, vocabulary)) if a != b]
        if wrong:
            raise ValueError(f"token ids differ from {vocabulary_file} at {len(wrong)} ids, first {wrong[:5]}")
    return tokenizer


def _token_id(tokenizer, token):
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise ValueError(f"the tokenizer lacks {token}")
    return token_id


def whisper_config_from_ctranslate2(model, tokenizer):
    """A `WhisperConfig` from the weights' shapes, the spec's settings and the tokenizer's special tokens."""
    v = model.variables
    d_model, num_mel_bins, _ = v["encoder/conv1/weight"].shape
    end_of_text = _token_id(tokenizer, SPECIAL_TOKENS["end_of_text"])
    return WhisperConfig(
        vocab_size=v["decoder/embeddings/weight"].shape[0], num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=_num_layers(model, "encoder"), decoder_layers=_num_layers(model, "decoder"),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        pad_token_id=end_of_text, bos_token_id=end_of_text, eos_token_id=end_of_text,
        decoder_start_token_id=_token_id(tokenizer, SPECIAL_TOKENS["start_of_transcript"]),
        # generation settings live in the generation config only (transformers 5 warns when the model's has them)
        suppress_tokens=None, begin_suppress_tokens=None, architectures=["WhisperForConditionalGeneration"],
    )


def whisper_generation_config(ctranslate2_config, tokenizer, config):
    """
    The generation config Whisper's `generate` reads: suppression lists, alignment heads, language and task ids.

    The default task is "transcribe": without a task, a call without a language can loop ("can can can").
    """
    token = lambda name: _token_id(tokenizer, SPECIAL_TOKENS[name])  # noqa: E731
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in ctranslate2_config["lang_ids"]}
    if not all(re.fullmatch(r"<\|[a-z]+\|>", name) for name in lang_to_id):
        raise ValueError(f"lang_ids must be language tokens, got {sorted(lang_to_id)[:5]}...")
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=list(ctranslate2_config["suppress_ids"]),
        begin_suppress_tokens=list(ctranslate2_config["suppress_ids_begin"]),
        alignment_heads=[list(head) for head in ctranslate2_config["alignment_heads"]],
        lang_to_id=lang_to_id, is_multilingual=len(lang_to_id) > 1,
        task_to_id={"transcribe": token("transcribe"), "translate": token("translate")}, task="transcribe",
        no_timestamps_token_id=token("no_timestamps"), prev_sot_token_id=token("start_of_previous"),
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX, return_timestamps=False,
    )


# ----- the whole folder -----------------------------------------------------------------------------------------------
def convert_whisper_ctranslate2(source_dir, output_dir, model_files=None, dtype=torch.float32):
    """
    Converts faster-whisper's folder (`config.json`, `tokenizer.json`, `vocabulary.txt`, `model.bin`) into a
    transformers folder: `model.safetensors` + `config.json` (WhisperForConditionalGeneration), the generation
    config, the tokenizer and the feature extractor (a `WhisperProcessor`).

    Args:
        source_dir (`str` or `os.PathLike`): the folder with `config.json`, `tokenizer.json` and `vocabulary.txt`.
        output_dir (`str` or `os.PathLike`): where to write; created if needed.
        model_files (`list`, *optional*): `model.bin`, or its parts in order; defaults to `source_dir/model.bin`.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): the saved weights' dtype (float16 weights
            widen to float32 exactly).

    Returns:
        `dict`: the conversion's record: parameter count, the spec, and what each CTranslate2 variable became.
    """
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    model = read_ctranslate2_model(model_files or source_dir / "model.bin")
    ctranslate2_config = json.loads((source_dir / "config.json").read_text())
    tokenizer = whisper_tokenizer_from_ctranslate2(source_dir / "tokenizer.json", source_dir / "vocabulary.txt")
    config = whisper_config_from_ctranslate2(model, tokenizer)
    state, sources = whisper_state_dict_from_ctranslate2(model, config)

    with torch.device("meta"):
        whisper = WhisperForConditionalGeneration(config)
    expected = whisper.state_dict()
    if set(expected) != set(state):
        raise ValueError(f"weights missing: {sorted(set(expected) - set(state))}, "
                         f"unexpected: {sorted(set(state) - set(expected))}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{name}: transformers expects {tuple(expected[name].shape)}, got {tuple(tensor.shape)}")
    whisper.load_state_dict({name: tensor.to(dtype) for name, tensor in state.items()}, strict=True, assign=True)
    whisper.tie_weights()
    if whisper.proj_out.weight.data_ptr() != whisper.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("the output projection is not tied to the token embedding")
    whisper.generation_config = whisper_generation_config(ctranslate2_config, tokenizer, config)
    whisper.config.dtype = dtype

    output_dir.mkdir(parents=True, exist_ok=True)
    whisper.save_pretrained(output_dir)
    (output_dir / "model.safetensors").chmod(0o644)  # written owner-only; the other files are world-readable
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(output_dir)
    parameters = sum(t.numel() for n, t in state.items() if n != "proj_out.weight")
    logger.info(f"converted {len(model.variables)} variables + {len(model.aliases)} alias, {parameters:,} parameters")
    return {"spec": f"{model.spec} revision {model.revision}", "variables": len(model.variables),
            "aliases": len(model.aliases), "parameters": parameters, "sources": sources}


__all__ = [
    "CTranslate2Model", "convert_whisper_ctranslate2", "read_ctranslate2_model", "whisper_config_from_ctranslate2",
    "whisper_generation_config", "whisper_state_dict_from_ctranslate2", "whisper_tokenizer_from_ctranslate2",
]
