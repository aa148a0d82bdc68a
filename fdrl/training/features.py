"""The frozen-backbone mode (`--freeze_backbones true`), as s3prl/SUPERB evaluate frozen upstreams: each backbone
runs once per utterance in eval mode, the pooled outputs are cached on disk (safetensors), and every system's heads
train on the cache.

Each modality has its own cache file, named by a hash of everything its pooled vectors depend on: the backbone's
weights and config, its half of the processor (feature extractor settings and maximum duration, or the tokenizer
vocabulary, pooling and length limit), torch's thread count (it changes the last bits of the sums), and each
utterance's id with its audio file (path, size, modification time) or its transcript. Change any of them and a new
file is computed; a stale one is never read.
"""

import hashlib
import json
import os
from pathlib import Path

import datasets
import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging

from .systems import BackboneClassifier
from configuration_fdrl import FDRLConfig
from .trainer import FDRLDataCollator


logger = logging.get_logger(__name__)


def default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "fdrl" / "features"


def _hash_module(digest, module):
    digest.update(module.config.to_json_string().encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())


def _audio_signatures(split):
    """Per utterance: its file's path, size and mtime, or a hash of its embedded bytes."""
    raw = split.cast_column("audio", datasets.Audio(decode=False))["audio"][:]
    signatures = []
    for item in raw:
        if item.get("bytes"):
            signatures.append(hashlib.sha256(item["bytes"]).hexdigest())
        else:
            stat = os.stat(item["path"])
            signatures.append(f"{item['path']}:{stat.st_size}:{stat.st_mtime_ns}")
    return signatures


def feature_key(modality, backbone, processor, ids, signatures, settings):
    """The cache key of one modality's pooled vectors for the utterances `ids`: its backbone's weights and config,
    its half of the processor, the settings that shape the vectors, torch's thread count (it changes how reductions
    are summed, hence the last bits), and per utterance its audio file's signature or its transcript."""
    digest = hashlib.sha256(modality.encode())
    _hash_module(digest, backbone)
    if modality == "audio":
        digest.update(json.dumps(processor.feature_extractor.to_dict(), sort_keys=True, default=str).encode())
    else:
        digest.update(processor.tokenizer.backend_tokenizer.to_str().encode())
    digest.update(json.dumps([settings, torch.get_num_threads(), ids, signatures], default=str).encode())
    return digest.hexdigest()[:32]


@torch.no_grad()
def extract_pooled(encoder, examples, processor, modality, max_text_length):
    """(n, hidden) pooled vectors of one modality for `examples`, the backbone in eval mode, one utterance per
    forward, so a vector never depends on what it was batched with."""
    encoder.eval()
    collator = FDRLDataCollator(processor, max_text_length, modalities=(modality,))
    vectors = []
    for index in range(len(examples)):
        batch = collator([examples[index]])
        if modality == "audio":
            speech = batch["input_values"] if "input_values" in batch else batch["input_features"]  # wav2vec2 / Whisper
            vectors.append(encoder.encode_audio(speech, batch.get("audio_attention_mask")).float())
        else:
            vectors.append(encoder.encode_text(batch["input_ids"], batch.get("text_attention_mask"),
                                               batch.get("token_type_ids")).float())
    return torch.cat(vectors)


def cached_pooled_features(audio, text, processor, splits, context, fold_dir=None):
    """Each split as a list of {"id", "label", "pooled_audio", "pooled_text"}. Each modality's vectors come from its
    own cache file, computed once for the union of the splits: every fold and seed of a corpus shares them, and new
    transcripts (`--test_transcripts`) recompute only the text vectors."""
    args, data_args = context["training_args"], context["data_args"]
    union = datasets.concatenate_datasets([splits[name] for name in splits])
    ids = union["id"][:]
    config = FDRLConfig(audio_config=audio.config, text_config=text.config, **context["config_kwargs"])
    encoder = BackboneClassifier(config, audio_model=audio, text_model=text)
    sources = {"audio": (audio, _audio_signatures(union), [processor.max_duration]),
               "text": (text, union["text"][:], [config.text_pooling, data_args.max_text_length])}
    vectors = {}
    for modality, (backbone, signatures, settings) in sources.items():
        key = feature_key(modality, backbone, processor, ids, signatures, settings)
        path = Path(args.feature_cache_dir or default_cache_dir()) / f"{modality}-{key}.safetensors"
        if path.is_file():
            vectors[modality] = load_file(path)["pooled"]
            logger.info(f"pooled {modality} features from the cache {path}")
            continue
        vectors[modality] = extract_pooled(encoder, union, processor, modality, data_args.max_text_length).contiguous()
        if args.should_save:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            save_file({"pooled": vectors[modality]}, str(temporary), metadata={"ids": json.dumps(ids)})
            temporary.replace(path)
            logger.info(f"pooled {modality} features of {len(ids)} utterances cached in {path}")
    row = {utterance: index for index, utterance in enumerate(ids)}
    return {name: [{"id": u, "label": label, "pooled_audio": vectors["audio"][row[u]],
                    "pooled_text": vectors["text"][row[u]]} for u, label in zip(split["id"][:], split["label"][:])]
            for name, split in splits.items()}
