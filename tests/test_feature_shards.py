"""`--parallel_runs` with pretrained backbones: the worker processes extract the missing feature rows in contiguous
shards, and the parent merges them into the cache. The rows are those of a sequential one-thread extraction, bit for
bit, each utterance extracted once, and a filled cache runs no backbone."""

import concurrent.futures
import functools
import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from test_features import _context, _model
from test_parallel_runs import _records
from transformers import Wav2Vec2FeatureExtractor

import run_fdrl
from fdrl.data.corpus import fold_splits
from fdrl.data.iemocap import load_iemocap
from fdrl.training import features, parallel, protocol
from fdrl.training.features import cached_pooled_features
from fdrl.training.parallel import shard_bounds
from fdrl.training.protocol import build_backbones, build_processor
from iemocap_fixture import make_iemocap_fixture
from modeling_fdrl import load_backbones
from processing_fdrl import FDRLProcessor


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A corpus, and tiny random backbones saved as pretrained ones are (`--audio_model`, `--text_model`)."""
    root = tmp_path_factory.mktemp("shards")
    corpus = make_iemocap_fixture(root, sessions=(1, 2, 3), utterances_per_dialog=6, defects=False)
    data = load_iemocap(corpus["data_dir"], cache_dir=str(root / "cache"))
    processor = FDRLProcessor.from_texts([t for session in data.values() for t in session["text"][:]], vocab_size=80)
    model = _model(processor)
    model.audio_model.save_pretrained(root / "audio")
    Wav2Vec2FeatureExtractor().save_pretrained(root / "audio")
    model.text_model.save_pretrained(root / "text")
    processor.tokenizer.save_pretrained(root / "text")
    model_args = SimpleNamespace(
        audio_model=str(root / "audio"), text_model=str(root / "text"), model_name_or_path=None,
        processor_name_or_path=None, model_preset=None, max_duration=16.0,
    )  # fmt: skip
    return SimpleNamespace(root=root, data_dir=corpus["data_dir"], data=data, model_args=model_args)


def test_shards_cover_every_position_once_in_order():
    for count in (1, 5, 8, 9, 101):
        for shards in (1, 3, 8, 16):
            bounds = shard_bounds(count, shards)
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(count))
            assert len(bounds) == min(count, shards)
            assert max(stop - start for start, stop in bounds) - min(stop - start for start, stop in bounds) <= 1


def _cache_files(folder):
    """{file name: (row keys, pooled vectors)} of a feature cache folder."""
    files = {}
    for name in sorted(os.listdir(folder)):
        with safe_open(str(folder / name), "pt") as cache:
            files[name] = (json.loads(cache.metadata()["rows"]), cache.get_tensor("pooled"))
    return files


def _assert_same_files(folder, expected):
    """The same cache files, row for row and bit for bit."""
    files, expected = _cache_files(folder), _cache_files(expected)
    assert list(files) == list(expected) and len(files) == 2
    for name, (keys, pooled) in files.items():
        assert keys == expected[name][0] and torch.equal(pooled, expected[name][1])


def test_sharded_extraction_gives_the_rows_of_a_sequential_one_thread_extraction(
    pretrained, tmp_path, monkeypatch, one_thread
):
    splits = fold_splits(pretrained.data, 1, 0.3, seed=0)
    processor = build_processor(pretrained.model_args, [], tmp_path)
    audio, text = build_backbones(pretrained.model_args, processor, None)
    sequential, sharded = _context(tmp_path / "sequential"), _context(tmp_path / "sharded")
    for context in (sequential, sharded):
        context.model_args, context.feature_threads = pretrained.model_args, 1
    expected = cached_pooled_features(audio, text, processor, splits, sequential)

    extracted = []  # (modality, ids) of each shard, as the workers run them

    def counted(encoder, examples, processor, modality, max_text_length):
        extracted.append((modality, examples["id"][:]))
        return features.extract_pooled(encoder, examples, processor, modality, max_text_length)

    monkeypatch.setattr(parallel, "extract_pooled", counted)
    # the workers' backbones loaded here, once: from_pretrained in two threads at once is not safe (transformers swaps
    # PreTrainedModel.tie_weights out while it loads, and two loads can leave it swapped out)
    monkeypatch.setattr(parallel, "_WORKER_ENCODER", features.feature_encoder(audio, text, sharded.config_kwargs))
    # the workers' code in two threads of this process (one torch thread, as in a worker), so that the shards can be
    # counted; the worker processes: the next test
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        extract = functools.partial(parallel._extract_in_pool, pool, 2, sharded, False)
        got = cached_pooled_features(audio, text, processor, splits, sharded, extract=extract)
        shards = list(extracted)
        extracted.clear()
        again = cached_pooled_features(audio, text, processor, splits, sharded, extract=extract)
    assert extracted == []  # a filled cache: no shard, no forward
    ids = [row["id"] for rows in got.values() for row in rows]
    for modality in ("audio", "text"):
        assert len([name for name, _ in shards if name == modality]) == 2 * parallel.SHARDS_PER_WORKER
        assert sorted(u for name, shard in shards if name == modality for u in shard) == sorted(ids)  # each once
    for name, rows in got.items():
        for mine, theirs, read in zip(rows, expected[name], again[name], strict=True):
            assert mine["id"] == theirs["id"] == read["id"]
            for modality in ("audio", "text"):
                assert torch.equal(mine[f"pooled_{modality}"], theirs[f"pooled_{modality}"])
                assert torch.equal(read[f"pooled_{modality}"], mine[f"pooled_{modality}"])
    _assert_same_files(tmp_path / "sharded" / "features", tmp_path / "sequential" / "features")


def _args(pretrained, output_dir, cache, *extra):
    return [
        "--data_dir", str(pretrained.data_dir), "--cache_dir", str(pretrained.root / "cache"),
        "--feature_cache_dir", str(cache), "--output_dir", str(output_dir),
        "--audio_model", pretrained.model_args.audio_model, "--text_model", pretrained.model_args.text_model,
        "--hidden_size", "16", "--fusion_num_heads", "2", "--freeze_backbones", "true", "--folds", "1", "3",
        "--seed", "5", "--systems", "speech", "text", "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
        "--learning_rate", "1e-3", "--use_cpu", "true", "--logging_steps", "1", "--dataloader_num_workers", "0",
        "--report_to", "none", "--disable_tqdm", "true", "--validation_fraction", "0.3", "--log_level", "warning",
        *extra,
    ]  # fmt: skip


def test_worker_processes_extract_the_rows_and_records_of_a_sequential_run(
    pretrained, tmp_path, monkeypatch, one_thread, capsys
):
    run_fdrl.main(_args(pretrained, tmp_path / "sequential", tmp_path / "sequential_features", "--parallel_runs", "1"))
    assert "audio features: " in capsys.readouterr().err  # the sequential run's bar

    def refuse(*args, **kwargs):
        raise AssertionError("the parent extracted features itself")

    monkeypatch.setattr(features, "extract_rows", refuse)  # in this process only: the workers import it anew
    run_fdrl.main(_args(pretrained, tmp_path / "parallel", tmp_path / "parallel_features", "--parallel_runs", "2"))
    bars = capsys.readouterr().err
    assert "features: " in bars and "audio features" not in bars  # the parent's bar over the workers' shards
    assert _records(tmp_path / "parallel") == _records(tmp_path / "sequential")
    _assert_same_files(tmp_path / "parallel_features", tmp_path / "sequential_features")


@pytest.mark.parametrize("frozen", ["true", "false"])
def test_the_folds_of_a_protocol_share_one_load_of_pretrained_backbones_and_leave_it_untouched(
    pretrained, tmp_path, monkeypatch, frozen
):
    """Two folds, one load (`fold_backbones`); after fine-tuning (each system trains its own copy) or freezing,
    the shared backbones still hold the saved weights; the protocol's end releases them."""
    loaded, build = [], protocol.build_backbones

    def counted(*args):
        loaded.append(build(*args))
        return loaded[-1]

    monkeypatch.setattr(protocol, "build_backbones", counted)
    extra = ("--parallel_runs", "1", "--freeze_backbones", frozen, "--num_train_epochs", "1")
    run_fdrl.main(_args(pretrained, tmp_path / "run", tmp_path / "features", *extra))
    assert len(loaded) == 1 and len(_records(tmp_path / "run")) == 2
    assert protocol._KEPT_BACKBONES == {}
    saved = load_backbones(pretrained.model_args.audio_model, pretrained.model_args.text_model)
    for shared, original in zip(loaded[0], saved):
        state, expected = shared.state_dict(), original.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
