"""`--parallel_runs`: frozen-backbone (seed, fold) runs in worker processes give the very records of a sequential run
(one torch thread), a failing run is named and leaves the others' records, and the progress lines reach the user."""

import gc
import json
import logging
import multiprocessing
import os
import weakref
from types import SimpleNamespace

import pytest
import torch
from test_features import _context, _model
from test_features import fold as fold  # noqa: F401 (the module fixture of the feature-cache tests)

import run_fdrl
from fdrl.training.features import cached_pooled_features, feature_key
from fdrl.training.parallel import _pool, parallel_workers, usable_cores
from fdrl.training.protocol import freeze_long_lived_objects
from iemocap_fixture import make_iemocap_fixture


SYSTEMS = ["S0", "speech", "text", "late_fusion"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap")
    return make_iemocap_fixture(root, sessions=(1, 2, 3), utterances_per_dialog=6, defects=False)


def tiny_cpu_args(corpus, output_dir, *extra):
    """run_fdrl.py's flags for the tiny preset on `corpus` on one CPU process, quiet, caches beside the corpus."""
    root = corpus["data_dir"].parent
    return [
        "--data_dir", str(corpus["data_dir"]), "--cache_dir", str(root / "cache"),
        "--feature_cache_dir", str(root / "features"), "--output_dir", str(output_dir),
        "--model_preset", "tiny", "--per_device_train_batch_size", "8", "--use_cpu", "true", "--logging_steps", "1",
        "--dataloader_num_workers", "0", "--report_to", "none", "--disable_tqdm", "true",
        "--validation_fraction", "0.3", "--log_level", "warning",
        *extra,
    ]  # fmt: skip


def _args(corpus, output_dir, *extra):
    return tiny_cpu_args(
        corpus, output_dir, "--freeze_backbones", "true", "--folds", "1", "3", "--seed", "5", "--systems", *SYSTEMS,
        "--num_train_epochs", "2", "--learning_rate", "1e-3", *extra,
    )  # fmt: skip


def _records(output_dir):
    return {path.name: json.loads(path.read_text()) for path in sorted((output_dir / "runs").glob("*.json"))}


def test_parallel_runs_write_the_records_of_a_sequential_run(corpus, tmp_path, one_thread, capsys):
    run_fdrl.main(_args(corpus, tmp_path / "sequential", "--parallel_runs", "1"))
    assert gc.get_freeze_count() == 0  # what each prepared fold froze is unfrozen at the end
    sequential_lines = [line for line in capsys.readouterr().err.splitlines() if "validation UAR" in line]
    features = sorted(os.listdir(corpus["data_dir"].parent / "features"))
    run_fdrl.main(_args(corpus, tmp_path / "parallel", "--parallel_runs", "2"))
    assert gc.get_freeze_count() == 0
    parallel_lines = [line for line in capsys.readouterr().err.splitlines() if "validation UAR" in line]
    sequential, parallel = _records(tmp_path / "sequential"), _records(tmp_path / "parallel")
    assert list(sequential) == ["seed5_fold1.json", "seed5_fold3.json"] == list(parallel)
    assert parallel == sequential  # every metric and every log-probability, to the last digit written
    for name in ("S0", "speech"):
        assert sequential["seed5_fold1.json"]["systems"][name]["log_probs"]  # not vacuously equal
    summary = json.loads((tmp_path / "parallel" / "results.json").read_text())
    assert summary["systems"] == json.loads((tmp_path / "sequential" / "results.json").read_text())["systems"]
    # the parent's cache served the workers: no feature file was added
    assert sorted(os.listdir(corpus["data_dir"].parent / "features")) == features
    # one line per finished system in both modes, with its validation and test UAR (the workers' reported by the parent)
    assert len(sequential_lines) == len(parallel_lines) == 2 * len(SYSTEMS)
    assert sorted(parallel_lines) == sorted(sequential_lines)
    assert sum("fold 3, late_fusion: validation UAR -, test UAR" in line for line in parallel_lines) == 1


def test_a_prepared_fold_collects_the_garbage_then_freezes_what_lives():
    class Node:
        pass

    garbage, alive = Node(), Node()
    garbage.self, alive.self = garbage, alive  # cycles: only the collector frees `garbage` once unreachable
    collected = weakref.ref(garbage)
    gc.disable()  # no automatic pass: only `freeze_long_lived_objects` may collect it
    del garbage
    try:
        assert collected() is not None
        freeze_long_lived_objects()
        assert collected() is None
        assert gc.get_freeze_count() > 0 and alive.self is alive
        frozen = gc.get_freeze_count()
        freeze_long_lived_objects()  # the next fold: unfrozen, collected, frozen again; nothing piles up
        assert abs(gc.get_freeze_count() - frozen) < frozen // 100
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_pool_starts_every_worker_before_any_task_with_one_thread():
    before = len(multiprocessing.active_children())
    with _pool(multiprocessing.get_context("spawn"), 2, logging.WARNING) as pool:
        # both started on entry, so their imports overlap the parent's preparation of the first fold
        assert len(multiprocessing.active_children()) - before == 2
        assert {pool.submit(torch.get_num_threads).result() for _ in range(4)} == {1}


def test_a_failing_system_names_its_run_and_every_other_system_is_recorded(corpus, tmp_path, one_thread):
    output_dir = tmp_path / "run"
    # fold 3's worker cannot write S0's trainer state (a folder stands where the file goes): it fails, fold 1 does not
    (output_dir / "seed5" / "fold3" / "S0" / "trainer_state.json").mkdir(parents=True)
    argv = _args(corpus, output_dir, "--parallel_runs", "2", "--resume_from_checkpoint", "true")
    with pytest.raises(RuntimeError, match=r"1 of 2 runs failed .*seed 5, fold 3: IsADirectoryError: .*trainer_state"):
        run_fdrl.main(argv)
    record = json.loads((output_dir / "runs" / "seed5_fold1.json").read_text())
    assert list(record["systems"]) == SYSTEMS  # fold 1 finished and kept its record
    # fold 3's other systems finished too and are recorded, in the run's order; S0, which failed, is not
    record = json.loads((output_dir / "runs" / "seed5_fold3.json").read_text())
    assert list(record["systems"]) == ["speech", "text", "late_fusion"]
    # once the obstacle is gone, a resumed run trains only S0 and ends with fold 3's record whole. Fold 1's S0 and
    # late fusion, taken out of its record, come back the same: S0 trained again in a worker, late fusion computed in
    # the parent from the recorded speech and text systems (before any worker has sent fold 1's test labels)
    (output_dir / "seed5" / "fold3" / "S0" / "trainer_state.json").rmdir()
    speech_state = output_dir / "seed5" / "fold3" / "speech" / "trainer_state.json"
    written = speech_state.stat().st_mtime_ns
    fold1 = json.loads((output_dir / "runs" / "seed5_fold1.json").read_text())
    fusion, s0 = fold1["systems"].pop("late_fusion"), fold1["systems"].pop("S0")
    (output_dir / "runs" / "seed5_fold1.json").write_text(json.dumps(fold1))
    run_fdrl.main(argv)
    record = json.loads((output_dir / "runs" / "seed5_fold3.json").read_text())
    assert list(record["systems"]) == SYSTEMS
    assert speech_state.stat().st_mtime_ns == written  # speech was read back from the record, not trained again
    fold1 = json.loads((output_dir / "runs" / "seed5_fold1.json").read_text())
    assert list(fold1["systems"]) == SYSTEMS
    assert fold1["systems"]["late_fusion"] == fusion and fold1["systems"]["S0"] == s0


def test_parallel_runs_default_and_where_it_does_not_apply(caplog):
    def args(**overrides):
        values = dict(parallel_runs=None, freeze_backbones=True, world_size=1, device=torch.device("cpu"))
        return SimpleNamespace(**{**values, **overrides})

    assert parallel_workers(args(), 15) == min(15, usable_cores())
    assert parallel_workers(args(), 1) == 1
    assert parallel_workers(args(parallel_runs=4), 3) == 3  # never more workers than runs
    assert parallel_workers(args(parallel_runs=1), 15) == 1
    assert parallel_workers(args(freeze_backbones=False), 15) == 1  # fine-tuning: one run at a time
    assert parallel_workers(args(parallel_runs=2, world_size=2), 15) == 1  # accelerate launch: as before
    assert parallel_workers(args(parallel_runs=2, device=torch.device("cuda")), 15) == 1
    assert sum("--parallel_runs 2 ignored" in record.getMessage() for record in caplog.records) == 2


def test_parallel_runs_is_refused_when_fine_tuning(corpus, tmp_path):
    argv = _args(corpus, tmp_path / "run", "--parallel_runs", "2", "--freeze_backbones", "false")
    with pytest.raises(ValueError, match="--parallel_runs 2 needs --freeze_backbones true"):
        run_fdrl.main(argv)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="--parallel_runs must be at least 1, got 0"):
        run_fdrl.main(_args(corpus, tmp_path / "run", "--parallel_runs", "0"))


def test_features_are_extracted_and_keyed_with_the_given_thread_count(fold, tmp_path):  # noqa: F811
    splits, processor = fold
    model = _model(processor)
    context = _context(tmp_path)
    context.feature_threads = 1
    threads = torch.get_num_threads()
    assert threads != 1  # conftest runs the tests with 2
    cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    assert torch.get_num_threads() == threads  # restored after the extraction
    key = feature_key("audio", model.audio_model, processor, [processor.max_duration], threads=1)
    assert key != feature_key("audio", model.audio_model, processor, [processor.max_duration], threads=threads)
    assert f"audio-{key}.safetensors" in os.listdir(tmp_path / "features")
