"""The frozen-backbone mode (`--freeze_backbones true`), as s3prl/SUPERB evaluate frozen upstreams: each backbone
runs once per utterance in eval mode, the pooled outputs are cached on disk (safetensors), and every system's heads
train on the cache.

The cache file is named by a hash of everything the pooled vectors depend on: the backbones' weights and configs,
the processor (feature extractor settings, tokenizer vocabulary, maximum duration), the text pooling and length
limit, torch's thread count (it changes the last bits of the sums), and each utterance's id, transcript and audio
file (path, size, modification time). Change any of them and a new file is computed; a stale one is never read.
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


def feature_key(audio, text, processor, text_pooling, max_text_length, ids, texts, audio_signatures):
    digest = hashlib.sha256()
    for module in (audio, text):
        _hash_module(digest, module)
    digest.update(json.dumps(processor.feature_extractor.to_dict(), sort_keys=True, default=str).encode())
    digest.update(processor.tokenizer.backend_tokenizer.to_str().encode())
    # torch's thread count changes how reductions are summed, hence the last bits of every vector
    digest.update(json.dumps([processor.max_duration, text_pooling, max_text_length, torch.get_num_threads()]).encode())
    digest.update(json.dumps([ids, texts, audio_signatures]).encode())
    return digest.hexdigest()[:32]


@torch.no_grad()
def extract_pooled(encoder, examples, collator, batch_size=1):
    """(pooled speech, pooled text) for `examples`, the backbones in eval mode: (n, audio hidden), (n, text hidden).
    One utterance per forward by default, so a vector never depends on what it was batched with."""
    encoder.eval()
    audio_vectors, text_vectors = [], []
    for start in range(0, len(examples), batch_size):
        batch = collator([examples[i] for i in range(start, min(start + batch_size, len(examples)))])
        speech = batch["input_values"] if "input_values" in batch else batch["input_features"]  # wav2vec2 / Whisper
        audio_vectors.append(encoder.encode_audio(speech, batch.get("audio_attention_mask")).float())
        text_vectors.append(encoder.encode_text(batch["input_ids"], batch.get("text_attention_mask"),
                                                batch.get("token_type_ids")).float())
    return torch.cat(audio_vectors), torch.cat(text_vectors)


def cached_pooled_features(audio, text, processor, splits, context, fold_dir=None):
    """Each split as a list of {"id", "label", "pooled_audio", "pooled_text"}, from the cache or computed once for
    the union of the splits (so every fold and seed of one corpus shares one cache file)."""
    args, data_args = context["training_args"], context["data_args"]
    union = datasets.concatenate_datasets([splits[name] for name in splits])
    ids, texts = union["id"][:], union["text"][:]
    config = FDRLConfig(audio_config=audio.config, text_config=text.config, **context["config_kwargs"])
    key = feature_key(audio, text, processor, config.text_pooling, data_args.max_text_length, ids, texts,
                      _audio_signatures(union))
    path = Path(args.feature_cache_dir or default_cache_dir()) / f"{key}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        logger.info(f"pooled features from the cache {path}")
    else:
        encoder = BackboneClassifier(config, audio_model=audio, text_model=text)
        collator = FDRLDataCollator(processor, data_args.max_text_length)
        pooled_audio, pooled_text = extract_pooled(encoder, union, collator)
        tensors = {"audio": pooled_audio.contiguous(), "text": pooled_text.contiguous()}
        if args.should_save:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            save_file(tensors, str(temporary), metadata={"ids": json.dumps(ids)})
            temporary.replace(path)
            logger.info(f"pooled features of {len(ids)} utterances cached in {path}")
    row = {utterance: index for index, utterance in enumerate(ids)}
    result = {}
    for name, split in splits.items():
        result[name] = [{"id": u, "label": label, "pooled_audio": tensors["audio"][row[u]],
                         "pooled_text": tensors["text"][row[u]]}
                        for u, label in zip(split["id"][:], split["label"][:])]
    return result
