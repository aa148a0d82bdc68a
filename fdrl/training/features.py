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

A fold's look-up has three steps: which rows are missing (`cached_rows`), extract them (`extract_rows`, here; with
`--parallel_runs`, shards of them in the worker processes, `parallel.py`), merge them into the file and write it
(`store_rows`, in the one process that writes the cache).
"""

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
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
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())  # its buffer, not a copy


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
    processor, the settings that shape the vectors, and what sets their last bits: the torch thread count they are
    extracted with (`threads`, default torch's: it changes how reductions are summed), the torch version and the
    CPU's vector instruction set as torch dispatches on it (`torch.backends.cpu.get_cpu_capability()`: AVX-512 and
    AVX2 kernels round differently), so a cache folder shared by machines of two kinds never mixes their vectors.
    Nothing about which utterances, or in which order: rows are keyed one by one (`row_keys`)."""
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
    machine = [torch.__version__, torch.backends.cpu.get_cpu_capability()]
    digest.update(json.dumps([settings, threads or torch.get_num_threads(), machine], default=str).encode())
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


def feature_encoder(audio, text, config_kwargs):
    """The two backbones as the extraction runs them: pooled as FDRL pools (`BackboneClassifier.encode_audio` /
    `encode_text`), under the run's FDRLConfig (its `text_pooling` shapes the text vectors)."""
    config = FDRLConfig(audio_config=audio.config, text_config=text.config, **config_kwargs)
    return BackboneClassifier(config, audio_model=audio, text_model=text)


@dataclass
class CachedRows:
    """One modality's cache file as a fold sees it: `keys`, one row key per utterance of the fold (in the order of
    its splits' union), `rows`, what the file holds, and `missing`, the positions of the keys it lacks."""

    modality: str
    path: Path
    keys: list
    rows: dict
    missing: list


def cached_rows(encoder, processor, union, context, threads):
    """Which rows are missing: each modality's cache file (named by `feature_key`), read and held against the row
    keys of `union`'s utterances."""
    args, data_args = context.training_args, context.data_args
    ids = union["id"][:]
    sources = {
        "audio": (encoder.audio_model, _audio_signatures(union), [processor.max_duration]),
        "text": (encoder.text_model, union["text"][:], [encoder.config.text_pooling, data_args.max_text_length]),
    }
    caches = []
    for modality, (backbone, signatures, settings) in sources.items():
        path = Path(args.feature_cache_dir or default_cache_dir()) / (
            f"{modality}-{feature_key(modality, backbone, processor, settings, threads)}.safetensors"
        )
        keys = row_keys(ids, signatures)
        rows = _read_cache(path)
        caches.append(CachedRows(modality, path, keys, rows, [i for i, key in enumerate(keys) if key not in rows]))
    return caches


def extract_rows(encoder, processor, jobs, max_text_length, threads=None, progress=False):
    """Extract these rows: (modality, its (n, hidden) vectors) for each of `jobs` ({modality: examples}), one
    modality after the other, in this process with `threads` torch threads (None: the current count)."""
    for modality, examples in jobs.items():
        with torch_threads(threads):
            vectors = extract_pooled(encoder, examples, processor, modality, max_text_length, progress)
        yield modality, vectors


def store_rows(cache, ids, computed, should_save):
    """Merge and write: the file's rows with `computed` (the vectors of `cache.missing`, in that order) added and
    the rows of these utterances under an older signature (a changed file or transcript) dropped, written atomically
    by the one process that saves; returns the merged rows."""
    current, wanted = set(cache.keys), set(ids)
    rows = {key: vector for key, vector in cache.rows.items() if key in current or key.rsplit(":", 1)[0] not in wanted}
    rows.update(zip((cache.keys[position] for position in cache.missing), computed))
    if should_save:
        _write_cache(cache.path, rows)
    logger.info(
        f"pooled {cache.modality} features: {len(cache.missing)} of {len(ids)} utterances computed, cached in "
        f"{cache.path}"
    )
    return rows


def cached_pooled_features(audio, text, processor, splits, context, fold_dir=None, extract=None):
    """Each split as a list of {"id", "label", "pooled_audio", "pooled_text"}. Each modality has one cache file per
    backbone and settings, its rows keyed by utterance (id and audio signature or transcript): a second fold, seed,
    run or `--systems` list reads them, and only utterances not yet in the file run through the backbone (new
    transcripts from `--test_transcripts` recompute only those text vectors).

    The vectors are extracted, and keyed, with `context.feature_threads` torch threads (default: the current
    count), so that worker processes training with one thread (`--parallel_runs`) find the rows their parent
    stored. `extract(processor, jobs)` extracts the missing rows elsewhere (`--parallel_runs`: shards in the
    worker processes, one thread each) and yields what `extract_rows` yields; by default they are extracted here.
    Either way this process merges them into the cache files and writes them."""
    args = context.training_args
    threads = getattr(context, "feature_threads", None) or torch.get_num_threads()
    progress = bool(getattr(args, "protocol_progress", False)) and getattr(args, "local_process_index", 0) == 0
    union = datasets.concatenate_datasets([splits[name] for name in splits])
    ids = union["id"][:]
    encoder = feature_encoder(audio, text, context.config_kwargs)
    caches = {cache.modality: cache for cache in cached_rows(encoder, processor, union, context, threads)}
    # each job holds only the columns its backbone reads: a row with its audio column decodes the file (5-7 ms a
    # WAV), which the text backbone's rows would otherwise pay for nothing
    jobs = {
        modality: union.select(cache.missing).select_columns(["id", modality])
        for modality, cache in caches.items()
        if cache.missing
    }
    if extract is None:
        extracted = extract_rows(encoder, processor, jobs, context.data_args.max_text_length, threads, progress)
    else:
        extracted = extract(processor, jobs)
    for modality, computed in extracted:  # stored as soon as extracted: an interrupted run keeps what is done
        caches[modality].rows = store_rows(caches[modality], ids, computed, args.should_save)
    vectors = {}
    for modality, cache in caches.items():
        if not cache.missing:
            logger.info(f"pooled {modality} features of {len(ids)} utterances read from the cache {cache.path}")
        vectors[modality] = torch.stack([cache.rows[key] for key in cache.keys])
    row = {utterance: index for index, utterance in enumerate(ids)}
    return {
        name: [
            {"id": u, "label": label, "pooled_audio": vectors["audio"][row[u]], "pooled_text": vectors["text"][row[u]]}
            for u, label in zip(split["id"][:], split["label"][:])
        ]
        for name, split in splits.items()
    }
