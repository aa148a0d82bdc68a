"""The frozen-backbone mode (`--freeze_backbones true`), as s3prl/SUPERB evaluate frozen upstreams: each backbone
runs once per utterance in eval mode, the pooled outputs are cached on disk (safetensors), and every system's heads
train on the cache.

Each modality has one cache file per backbone and settings, named by a hash of everything its pooled vectors depend
on: the backbone's weights and config, its half of the processor (feature extractor settings and maximum duration,
or the tokenizer vocabulary, pooling and length limit) and torch's thread count (it changes the last bits of the
sums). Inside, one row per utterance, keyed by its id with its audio file's signature (path, size, modification
time) or its transcript; split order, seed and fold play no part, so every fold, seed and run of a corpus reads the
same rows. A changed file or transcript is a new row (the old one is dropped), changed weights a new file; a stale
vector is never read.
"""

import contextlib
import hashlib
import json
import os
from pathlib import Path

import datasets
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers.utils import logging

from configuration_fdrl import FDRLConfig
from fdrl.io import atomic_write

from .systems import BackboneClassifier
from .trainer import FDRLDataCollator


logger = logging.get_logger(__name__)


def default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "fdrl" / "features"


def _hash_module(digest, module):
    digest.update(module.config.to_json_string().encode())
    # not in the config's JSON, yet they change the vectors' last bits: the attention kernel (eager, sdpa, ...) and
    # the library versions that implement it
    implementation = getattr(module.config, "_attn_implementation", None)
    digest.update(json.dumps([implementation, torch.__version__, transformers.__version__]).encode())
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


def feature_key(modality, backbone, processor, settings, threads=None):
    """The cache file of one modality: its backbone's weights, config and attention kernel, its half of the
    processor, the settings that shape the vectors, and the torch thread count they are extracted with (`threads`,
    default torch's: it changes how reductions are summed, hence the last bits). Nothing about which utterances, or
    in which order: rows are keyed one by one (`row_keys`)."""
    digest = hashlib.sha256(modality.encode())
    _hash_module(digest, backbone)
    if modality == "audio":
        digest.update(json.dumps(processor.feature_extractor.to_dict(), sort_keys=True, default=str).encode())
    else:
        tokenizer = json.loads(processor.tokenizer.backend_tokenizer.to_str())
        # truncation and padding are call-time state (the last call's), not part of what the vectors depend on
        digest.update(
            json.dumps(
                {k: v for k, v in tokenizer.items() if k not in ("truncation", "padding")}, sort_keys=True
            ).encode()
        )
    digest.update(json.dumps([settings, threads or torch.get_num_threads()], default=str).encode())
    return digest.hexdigest()[:32]


def row_keys(ids, signatures):
    """One key per utterance: its id with a hash of its audio file's signature or its transcript, so a changed file
    or transcript is a new row and the old one is never read."""
    return [f"{u}:{hashlib.sha256(str(s).encode()).hexdigest()[:16]}" for u, s in zip(ids, signatures)]


def _read_cache(path):
    """{row key: vector} of a cache file, or {} if there is none."""
    if not path.is_file():
        return {}
    with safe_open(str(path), "pt") as cache:
        keys = json.loads(cache.metadata()["rows"])
        pooled = cache.get_tensor("pooled")
    return dict(zip(keys, pooled))


def _write_cache(path, rows):
    """Write `rows` ({row key: vector}) atomically; a reader never sees half a file."""
    atomic_write(
        path,
        lambda temporary: save_file(
            {"pooled": torch.stack(list(rows.values())).contiguous()},
            str(temporary),
            metadata={"rows": json.dumps(list(rows))},
        ),
    )


@contextlib.contextmanager
def torch_threads(threads):
    """torch's intra-op thread count set to `threads` inside the block (None: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def extract_pooled(encoder, examples, processor, modality, max_text_length, progress=False):
    """(n, hidden) pooled vectors of one modality for `examples`, the backbone in eval mode, one utterance per
    forward, so a vector never depends on what it was batched with, on the encoder's device (the vectors come back
    there). `progress` shows a bar over the utterances."""
    encoder.eval()
    collator = FDRLDataCollator(processor, max_text_length, modalities=(modality,))
    vectors = []
    bar = tqdm(range(len(examples)), desc=f"{modality} features", unit="utt", leave=False, disable=not progress)
    device = next(encoder.parameters()).device
    for index in bar:
        batch = {k: v.to(device) for k, v in collator([examples[index]]).items()}
        if modality == "audio":
            speech = batch["input_values"] if "input_values" in batch else batch["input_features"]  # wav2vec2 / Whisper
            vectors.append(encoder.encode_audio(speech, batch.get("audio_attention_mask")).float())
        else:
            vectors.append(
                encoder.encode_text(
                    batch["input_ids"], batch.get("text_attention_mask"), batch.get("token_type_ids")
                ).float()
            )
    return torch.cat(vectors)


def cached_pooled_features(audio, text, processor, splits, context, fold_dir=None):
    """Each split as a list of {"id", "label", "pooled_audio", "pooled_text"}. Each modality has one cache file per
    backbone and settings, its rows keyed by utterance (id and audio signature or transcript): a second fold, seed,
    run or `--systems` list reads them, and only utterances not yet in the file run through the backbone (new
    transcripts from `--test_transcripts` recompute only those text vectors).

    The vectors are extracted, and keyed, with `context.feature_threads` torch threads (default: the current
    count), so that worker processes training with one thread (`--parallel_runs`) find the rows their parent
    extracted with the thread count a sequential run uses."""
    args, data_args = context.training_args, context.data_args
    threads = getattr(context, "feature_threads", None) or torch.get_num_threads()
    progress = bool(getattr(args, "protocol_progress", False)) and getattr(args, "local_process_index", 0) == 0
    union = datasets.concatenate_datasets([splits[name] for name in splits])
    ids = union["id"][:]
    config = FDRLConfig(audio_config=audio.config, text_config=text.config, **context.config_kwargs)
    encoder = BackboneClassifier(config, audio_model=audio, text_model=text)
    sources = {
        "audio": (audio, _audio_signatures(union), [processor.max_duration]),
        "text": (text, union["text"][:], [config.text_pooling, data_args.max_text_length]),
    }
    vectors = {}
    for modality, (backbone, signatures, settings) in sources.items():
        path = Path(args.feature_cache_dir or default_cache_dir()) / (
            f"{modality}-{feature_key(modality, backbone, processor, settings, threads)}.safetensors"
        )
        keys = row_keys(ids, signatures)
        rows = _read_cache(path)
        missing = sorted({position for position, key in enumerate(keys) if key not in rows})
        if missing:
            with torch_threads(threads):
                computed = extract_pooled(
                    encoder, union.select(missing), processor, modality, data_args.max_text_length, progress
                )
            current, wanted = set(keys), set(ids)
            # rows of these utterances under an older signature (a changed file or transcript) are dropped
            rows = {
                key: vector for key, vector in rows.items() if key in current or key.rsplit(":", 1)[0] not in wanted
            }
            rows.update(zip((keys[position] for position in missing), computed))
            if args.should_save:
                _write_cache(path, rows)
            logger.info(
                f"pooled {modality} features: {len(missing)} of {len(ids)} utterances computed, cached in {path}"
            )
        else:
            logger.info(f"pooled {modality} features of {len(ids)} utterances read from the cache {path}")
        vectors[modality] = torch.stack([rows[key] for key in keys])
    row = {utterance: index for index, utterance in enumerate(ids)}
    return {
        name: [
            {"id": u, "label": label, "pooled_audio": vectors["audio"][row[u]], "pooled_text": vectors["text"][row[u]]}
            for u, label in zip(split["id"][:], split["label"][:])
        ]
        for name, split in splits.items()
    }
