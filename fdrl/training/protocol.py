"""The leave-one-session-out protocol: every (seed, test session), every named system on the same splits and
backbones, the summary table, the model folder, the model card and the Hub push. `run_fdrl.py` parses the arguments
and calls `run_protocol`.

A corpus with official train / validation / test splits (MELD) has one pseudo-fold instead, "official"
(`fdrl.data.corpus.OFFICIAL`): one run per seed, recorded as `runs/seed{S}_official.json` in `seed{S}/official`.

Per (seed, fold) the run record `runs/seed{S}_fold{F}.json` is rewritten (atomically) after every system, with the
system's test metrics and log-probabilities, so an interrupted protocol resumes at the system it was training.
"""

import copy
import dataclasses
import errno
import gc
import json
import logging as python_logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from filelock import FileLock, Timeout
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging

from fdrl.data.corpus import (
    OFFICIAL,
    check_fold_classes,
    check_training_classes,
    column,
    corpus_folds,
    drop_unreadable_transcripts,
    fold_name,
    fold_splits,
    fold_title,
    load_corpus,
    read_transcripts,
    replace_test_transcripts,
    run_title,
)
from fdrl.data.corpus import label_names as corpus_label_names
from fdrl.data.validation import check_corpus_audio
from fdrl.evaluation.metrics import SCALAR_METRICS, classification_metrics
from fdrl.evaluation.plots import draw_confusion, draw_training_curves
from fdrl.evaluation.reporting import summarize_runs, write_report
from fdrl.io import write_json
from fdrl.presets import preset_backbone_configs, preset_fdrl_kwargs
from modeling_fdrl import drop_pooler, load_backbones
from processing_fdrl import FDRLProcessor

from .checkpoints import latest_complete_checkpoint
from .features import cached_pooled_features
from .hub import assemble_hub_folder, push_folder, save_model_folder
from .parallel import run_folds
from .progress import system_line
from .run_folder import check_output_dir
from .systems import DESCRIPTIONS, build_system_model, reference_system, resolve_systems
from .trainer import FDRLDataCollator, attach_backbones, detach_backbones, resuming, system_callbacks


logger = logging.get_logger(__name__)
LOCK_FILE = ".fdrl-run.lock"


# ----- processor and backbones ----------------------------------------------------------------------------------------
def build_processor(model_args, train_texts, fold_dir):
    """The fold's processor. A preset's WordPiece vocabulary is learnt on the training transcripts only, and saved
    in the fold folder at once, so a resumed fold reuses the very same token ids."""
    if model_args.processor_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.processor_name_or_path)
    if model_args.model_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.model_name_or_path)
    if model_args.audio_model:
        return FDRLProcessor(
            AutoFeatureExtractor.from_pretrained(model_args.audio_model),
            AutoTokenizer.from_pretrained(model_args.text_model),
            max_duration=model_args.max_duration,
        )
    saved = Path(fold_dir) / "processor"
    if (saved / "processor_config.json").is_file():
        return FDRLProcessor.from_pretrained(saved)
    processor = FDRLProcessor.from_texts(
        train_texts, vocab_size=model_args.vocab_size, max_duration=model_args.max_duration
    )
    processor.save_pretrained(saved)
    return processor


def build_backbones(model_args, processor, seed):
    """(speech backbone, text backbone): pretrained, taken from an FDRL checkpoint, or a preset's random weights
    drawn from `seed`."""
    if model_args.audio_model:
        return load_backbones(model_args.audio_model, model_args.text_model)
    if model_args.model_name_or_path:
        source = AutoModel.from_pretrained(model_args.model_name_or_path, trust_remote_code=True)
        return source.audio_model, source.text_model
    audio_config, text_config = preset_backbone_configs(model_args.model_preset, len(processor.tokenizer))
    set_seed(seed)
    audio, text = AutoModel.from_config(audio_config), AutoModel.from_config(text_config)
    drop_pooler(text)
    return audio, text


_KEPT_BACKBONES = {}  # {pretrained source: (speech backbone, text backbone)}, see `fold_backbones`


def fold_backbones(model_args, processor, seed):
    """A fold's starting backbones (`build_backbones`). Pretrained ones depend on neither the seed nor the fold, so a
    process loads them once and every fold it prepares shares them, as the systems of one fold do: frozen, they are
    only read; fine-tuned, each system trains its own copy (`train_system`). About half a second a fold with the
    demo's Whisper-base and MiniLM, and with `--parallel_runs` each worker prepares most folds. A preset's backbones
    are drawn per seed with the fold's vocabulary, and are built each time. `release_backbones` drops them."""
    if model_args.model_preset:
        return build_backbones(model_args, processor, seed)
    source = (model_args.audio_model, model_args.text_model, model_args.model_name_or_path)
    if source not in _KEPT_BACKBONES:
        _KEPT_BACKBONES.clear()
        _KEPT_BACKBONES[source] = build_backbones(model_args, processor, seed)
    return _KEPT_BACKBONES[source]


def release_backbones():
    """Forget the backbones `fold_backbones` kept (at the end of a protocol, so a caller's process does not hold
    them)."""
    _KEPT_BACKBONES.clear()


def config_kwargs(model_args, label_names):
    """FDRLConfig fields for every system of the run: the labels, the preset's sizes, the command line's settings."""
    return {
        **preset_fdrl_kwargs(model_args.model_preset),
        "id2label": dict(enumerate(label_names)),
        **model_args.config_overrides(),
    }


# ----- the run and one fold -------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What every (seed, fold) of a run shares: the arguments, the corpus, the systems and the run's settings."""

    model_args: Any
    data_args: Any
    training_args: Any
    data: Any  # the whole corpus (DatasetDict or Dataset), audio checked
    systems: list  # the `System`s, in training order
    reference: Optional[str]  # the system the paired differences and the model folder refer to
    label_names: list
    config_kwargs: dict  # FDRLConfig fields of every system of the run
    feature_threads: Optional[int] = None  # torch threads the cached features are extracted (and keyed) with
    progress: Any = None  # where finished systems are reported (`fdrl.training.progress`)

    def __getstate__(self):  # for --parallel_runs' workers: the systems by name (their builders may be closures)
        return {**self.__dict__, "systems": [s.name for s in self.systems], "progress": None}

    def __setstate__(self, state):
        self.__dict__.update(state, systems=resolve_systems(state["systems"]))


@dataclass
class FoldRun:
    """One (seed, fold): its splits, processor and starting backbones, and the systems done so far."""

    seed: int
    fold: Any  # a test session (int), or "official"
    directory: Path  # {output_dir}/seed{S}/fold{F} (or .../official)
    record_path: Path  # {output_dir}/runs/seed{S}_fold{F}.json (or seed{S}_official.json)
    splits: Any
    processor: Any
    audio: Any
    text: Any
    done: dict = field(default_factory=dict)  # system name -> test metrics

    @property
    def title(self):
        return run_title(self.seed, self.fold)


# ----- one system -----------------------------------------------------------------------------------------------------
def train_system(system, context, fold, system_dir):
    """Train one system (best epoch by validation UAR), test it. Returns (metrics with test log-probabilities,
    the trainer)."""
    args, label_names, seed = context.training_args, context.label_names, fold.seed
    audio, text = fold.audio, fold.text
    frozen = args.freeze_backbones
    if not frozen:  # each system fine-tunes its own copy of the same starting backbones
        audio, text = copy.deepcopy(audio), copy.deepcopy(text)
    set_seed(seed)
    model = build_system_model(system, context.config_kwargs, audio, text)
    if frozen:
        for backbone in (model.audio_model, model.text_model):
            if backbone is not None:
                backbone.requires_grad_(False)
    overrides = dict(output_dir=str(system_dir), seed=seed, push_to_hub=False)
    if system.unimodal:
        overrides.update(
            num_train_epochs=args.unimodal_epochs or args.num_train_epochs,
            learning_rate=args.unimodal_learning_rate or args.learning_rate,
        )
    if frozen:  # best heads kept in memory, no checkpoints of the frozen backbones
        overrides.update(save_strategy="no", load_best_model_at_end=False)
    backbones = detach_backbones(model) if frozen else None  # the heads train on cached features
    system_args = dataclasses.replace(args, **overrides)
    trainer = system.trainer_class(
        model=model,
        args=system_args,
        train_dataset=fold.splits["train"],
        eval_dataset=fold.splits["validation"],
        data_collator=FDRLDataCollator(
            fold.processor,
            context.data_args.max_text_length,
            system.modalities,
            context.data_args.audio_pad_to_multiple_of_s,
        ),
        compute_metrics=system.metrics(label_names),
        callbacks=system_callbacks(system_args, frozen),
    )
    if system.is_fdrl:
        trainer.last_epoch_dataset = fold.splits["test"]
    if system_args.get_process_log_level() > python_logging.INFO:  # --log_level warning: no per-step log lines either
        trainer.remove_callback(PrinterCallback)
    _train(trainer, None if frozen else resume_checkpoint(args.resume_from_checkpoint, system_dir))
    output = trainer.predict(fold.splits["test"], metric_key_prefix="test")
    predictions = output.predictions if isinstance(output.predictions, tuple) else (output.predictions,)
    log_probs = torch.log_softmax(torch.as_tensor(predictions[0], dtype=torch.float64), -1).numpy()
    metrics = classification_metrics(log_probs.argmax(-1), output.label_ids, label_names)
    metrics.update(
        best_validation_uar=trainer.state.best_metric,
        epochs_trained=round(trainer.state.epoch, 4),
        log_probs=np.round(log_probs, 6).tolist(),
    )
    if system.test_metrics is not None:
        metrics.update(system.test_metrics(trainer, predictions, output.label_ids, label_names))
    if system.is_fdrl:
        metrics.update({k: v for k, v in output.metrics.items() if k.startswith("test_alignment_")})
        metrics.update(trainer.last_epoch_metrics)  # the last epoch's test metrics, the largest norm of S_a, S_t
    if backbones:
        attach_backbones(model, backbones)
    return metrics, trainer


def _train(trainer, resume_from):
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(
                error.errno,
                f"the disk is full: could not write under {trainer.args.output_dir} "
                f"({error}); free space and rerun with --resume_from_checkpoint true",
            ) from error
        raise


def resume_checkpoint(resume, folder):
    """`--resume_from_checkpoint true` resumes from the newest complete checkpoint in `folder` (none: from scratch);
    a path resumes from that checkpoint."""
    if not resuming(resume):
        return None
    if str(resume).lower() == "true":
        return latest_complete_checkpoint(folder)
    return resume


# ----- one (seed, fold) -----------------------------------------------------------------------------------------------
def read_record(path):
    """A run record, or {} if there is none; a truncated one (killed while writing) or a damaged one
    (`record_problem`) is reported and started anew."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        logger.warning(f"{path} is not valid JSON ({error}): that run starts again")
        return {}
    problem = record_problem(record)
    if problem:
        logger.warning(f"{path} is damaged ({problem}): that run starts again")
        return {}
    return record


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record):
    """What makes a run record unusable, or None: each system's entry must hold what the summary, the confusion
    plot and late fusion read: the scalar metrics and per-class recall as numbers, the matrix, the log-probabilities."""
    systems = record.get("systems") if isinstance(record, dict) else None
    if not isinstance(systems, dict):
        return f"'systems' is {type(systems).__name__}, not a mapping of systems to metrics"
    for name, metrics in systems.items():
        if not isinstance(metrics, dict):
            return f"system {name}: {type(metrics).__name__}, not a mapping of metrics"
        for key in (*SCALAR_METRICS, "recall", "confusion_matrix", "log_probs"):
            if key not in metrics:
                return f"system {name}: no {key!r}"
        bad = [key for key in SCALAR_METRICS if not _is_number(metrics[key])]
        recall = metrics["recall"]
        if not isinstance(recall, dict) or not all(v is None or _is_number(v) for v in recall.values()):
            bad.append("recall")
        if bad:
            return f"system {name}: {', '.join(f'{key} = {metrics[key]!r}' for key in bad)} is not a number"
        if not isinstance(metrics["confusion_matrix"], list) or not isinstance(metrics["log_probs"], list):
            return f"system {name}: 'confusion_matrix' or 'log_probs' is not a list"
    return None


def prepare_fold(context, seed, fold, extract=None):
    """The fold's splits (test transcripts replaced if asked), processor and starting backbones, the systems a
    resumed run has already done, and `splits.json`; with frozen backbones, the splits become cached features (the
    missing ones extracted by `extract`, see `cached_pooled_features`)."""
    args, model_args, data_args = context.training_args, context.model_args, context.data_args
    run = resumed_fold(context, seed, fold)
    fold_dir = run.directory
    with args.main_process_first(desc="fold splits"):
        splits = fold_splits(context.data, fold, args.validation_fraction, seed)
    processor = build_processor(model_args, splits["train"]["text"][:] + splits["validation"]["text"][:], fold_dir)
    splits = drop_unreadable_transcripts(splits, processor.tokenizer, fold)  # inference's transcript rule
    check_fold_classes(splits, context.label_names, fold)
    if data_args.test_transcripts:  # e.g. a speech recogniser's, to test as users would
        source = data_args.test_transcripts
        splits = replace_test_transcripts(splits, read_transcripts(source), source)
    logger.info(f"seed {seed}, {fold_title(fold)}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    audio, text = fold_backbones(model_args, processor, seed)
    if args.should_save:
        write_json(fold_dir / "splits.json", {name: column(split, "id") for name, split in splits.items()})
    if args.freeze_backbones:
        splits = cached_pooled_features(audio, text, processor, splits, context, fold_dir, extract)
    prepared = dataclasses.replace(run, splits=splits, processor=processor, audio=audio, text=text)
    freeze_long_lived_objects()
    return prepared


def freeze_long_lived_objects():
    """Take the objects alive now (the libraries, the corpus, the fold's splits and backbones) out of the garbage
    collector's full passes, once the previous fold's garbage is collected. Each `Trainer.train()` starts with a
    full `gc.collect()` (accelerate's `free_memory`), which walks every tracked object: half a million in a
    protocol's process, 0.25-0.35 s on this CPU per system, a fifth of a baseline's training on cached features.
    Frozen objects are not walked, so that pass only meets what was made since the fold was prepared. Once per
    prepared fold; `run_folds` unfreezes them at the end of the protocol (`gc.unfreeze`)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def train_fold_systems(context, fold):
    """Every system of the fold not done yet, in order; the record and the system's outputs are saved after each."""
    for system in context.systems:
        if system.name in fold.done:
            report_system(context, fold, system, resumed=True)
            continue
        fold.done[system.name] = finish_system(context, fold, system)
        write_run_record(context, fold)
        report_system(context, fold, system)


def finish_system(context, fold, system):
    """Train and test `system` on the prepared `fold` and save its outputs, or compute it from the systems the fold
    has done (late fusion); then plot its test confusion matrix (`--save_figures`). Returns its test metrics (not
    yet recorded)."""
    if system.trains:
        system_dir = fold.directory / system.name
        metrics, trainer = train_system(system, context, fold, system_dir)
        save_system_outputs(context, fold, system, trainer, system_dir)
    else:
        metrics = system.combine(fold.done, column(fold.splits["test"], "label"), context.label_names)
    args = context.training_args
    if args.should_save and args.save_figures:
        matrix = metrics["confusion_matrix"]
        draw_confusion(_mkdir(fold.directory), system.name, matrix, context.label_names, fold.title)
    return metrics


def report_system(context, fold, system, resumed=False):
    """One finished system to the progress bar and its line (validation and test UAR), or to the log."""
    metrics = fold.done[system.name]
    if context.progress is not None:
        context.progress.system_done(fold.seed, fold.fold, system.name, metrics, resumed)
    elif not resumed:
        logger.info(system_line(fold.seed, fold.fold, system.name, metrics))


def save_system_outputs(context, fold, system, trainer, system_dir):
    """A trained system's rank state, trainer state, training curves, the reference's model folder, and no
    checkpoints unless kept."""
    args = context.training_args
    write_rank_state(trainer, system_dir)
    if not args.should_save:
        return
    trainer.save_state()  # trainer_state.json: every logged term, mu and the alignment over training
    if system.is_fdrl and args.save_figures:
        draw_training_curves(fold.directory, system.name, trainer.state.log_history, context.label_names, fold.title)
    if system.name == context.reference:
        save_model_folder(trainer.model, fold.processor, fold.directory / "model")
    if not args.keep_checkpoints:
        for checkpoint in system_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)


def write_run_record(context, fold):
    """The run record, atomically, so a resumed run starts at the next system: the systems done so far in the
    run's order (whichever order they finished in), and the test utterances."""
    if not context.training_args.should_save:
        return
    order = {system.name: index for index, system in enumerate(context.systems)}
    systems = dict(sorted(fold.done.items(), key=lambda item: order.get(item[0], len(order))))
    write_json(
        fold.record_path,
        {"seed": fold.seed, "fold": fold.fold, "systems": systems, "test_ids": column(fold.splits["test"], "id")},
    )


def resumed_fold(context, seed, fold):
    """One (seed, fold) before it is prepared: its folder `{output_dir}/seed{S}/fold{F}`, its run record
    `{output_dir}/runs/seed{S}_fold{F}.json` and, when resuming, the systems that record holds; no splits,
    processor or backbones yet (`prepare_fold` adds them; the parent of `--parallel_runs` tracks a run with it, the
    test split's ids and labels coming back with the run's first finished system)."""
    args = context.training_args
    output_dir, name = Path(args.output_dir), fold_name(fold)
    record_path = output_dir / "runs" / f"seed{seed}_{name}.json"
    record = read_record(record_path) if str(args.resume_from_checkpoint).lower() == "true" else {}
    directory = output_dir / f"seed{seed}" / name
    return FoldRun(seed, fold, directory, record_path, None, None, None, None, record.get("systems", {}))


def run_fold(context, seed, fold):
    """Every system of one (seed, fold), on one split and one set of starting backbones."""
    prepared = prepare_fold(context, seed, fold)
    train_fold_systems(context, prepared)
    return {"seed": seed, "fold": fold, "systems": {s.name: prepared.done[s.name] for s in context.systems}}


def write_rank_state(trainer, folder):
    """Each process records what it ended with, so a multi-process run can be checked for agreement."""
    if trainer.args.world_size <= 1:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    state = dict(
        rank=trainer.args.process_index,
        world_size=trainer.args.world_size,
        dynamic_factor=float(getattr(model, "dynamic_factor", float("nan"))),
        global_step=trainer.state.global_step,
        parameter_checksum=checksum,
    )
    write_json(_mkdir(Path(folder)) / f"rank_state_{trainer.args.process_index}.json", state)


def _mkdir(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----- the protocol ---------------------------------------------------------------------------------------------------
def lock_output_dir(training_args):
    """Refuse an output folder that a live run holds. The lock is an OS file lock: a killed run releases it."""
    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(output_dir / LOCK_FILE)
    if training_args.local_process_index != 0:
        return None
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(
            f"--output_dir {output_dir} is in use by another run that is still alive; give another "
            f"--output_dir, or wait for that run to finish"
        ) from None
    return lock


def run_protocol(model_args, data_args, training_args):
    """Every (seed, fold) and every system; then the table, the model folder and card, and the push."""
    systems = resolve_systems(training_args.systems)
    names = [s.name for s in systems]
    reference = reference_system(systems)
    lock = lock_output_dir(training_args)
    try:
        check_output_dir(model_args, data_args, training_args)  # an earlier run is neither replaced nor mixed in
        with training_args.main_process_first(desc="load data"):
            data = load_corpus(data_args)
        folds = corpus_folds(data, training_args.folds, source=_corpus_source(data_args))
        label_names = corpus_label_names(data)
        data, audio_report = check_corpus_audio(data, model_args, data_args)
        check_training_classes(data, folds, label_names)  # every fold, before the first one trains
        context = RunContext(
            model_args=model_args,
            data_args=data_args,
            training_args=training_args,
            data=data,
            systems=systems,
            reference=reference,
            label_names=label_names,
            config_kwargs=config_kwargs(model_args, label_names),
            feature_threads=torch.get_num_threads(),
        )
        pairs = [(seed, fold) for seed in training_args.seeds for fold in folds]
        runs = run_folds(context, pairs, run_fold, prepare_fold)
        summary = summarize_runs(
            [{k: v for k, v in run.items()} for run in _without_log_probs(runs)],
            label_names,
            names,
            reference=reference,
        )
        summary["audio_check"] = audio_report
        if training_args.should_save:
            output_dir = Path(training_args.output_dir)
            table = write_report(summary, output_dir, DESCRIPTIONS)
            protocol = "Official-split" if folds == [OFFICIAL] else "Leave-one-session-out"
            print(f"\n{protocol} results (WAR = accuracy, UAR = mean per-class recall), in %:\n{table}\n")
            hub_dir = reference and assemble_hub_folder(
                output_dir,
                training_args.seeds[0],
                folds[-1],
                summary,
                model_args,
                data_args,
                training_args,
            )
            if training_args.push_to_hub and hub_dir:
                push_folder(hub_dir, training_args)
        return summary
    finally:
        if lock is not None:
            lock.release()


def _corpus_source(data_args):
    """The corpus in words, for messages."""
    if data_args.manifest:
        return str(data_args.manifest)
    name = "MELD" if getattr(data_args, "dataset", None) == "meld" else "IEMOCAP"
    return f"the {name} corpus in {data_args.data_dir}"


def _without_log_probs(runs):
    return [
        {
            **run,
            "systems": {
                name: {k: v for k, v in metrics.items() if k != "log_probs"} for name, metrics in run["systems"].items()
            },
        }
        for run in runs
    ]
