"""The leave-one-session-out protocol: every (seed, test session), every named system on the same splits and
backbones, the summary table, the model folder, the model card and the Hub push. `run_fdrl.py` parses the arguments
and calls `run_protocol`.

Per (seed, fold) the run record `runs/seed{S}_fold{F}.json` is rewritten (atomically) after every system, with the
system's test metrics and log-probabilities, so an interrupted protocol resumes at the system it was training.
"""

import copy
import dataclasses
import errno
import json
import logging as python_logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import torch
from filelock import FileLock, Timeout
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, BertConfig, Wav2Vec2Config, set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging

from fdrl.data.manifest import leave_one_session_out, load_manifest
from fdrl.evaluation.metrics import classification_metrics, fdrl_metrics, trainer_metrics
from fdrl.evaluation.plots import fdrl_training_panels, plot_confusion_matrix, plot_training
from fdrl.evaluation.reporting import summarize_runs, write_report
from modeling_fdrl import _drop_pooler, load_backbones
from processing_fdrl import FDRLProcessor

from .checkpoints import latest_complete_checkpoint
from .features import cached_pooled_features
from .hub import assemble_hub_folder, push_folder, save_model_folder
from .systems import DESCRIPTIONS, build_system_model, resolve_systems
from .trainer import FDRLDataCollator, FDRLTrainer, KeepBestTrainable, SystemTrainer


logger = logging.get_logger(__name__)

# Random-initialisation sizes, for tests and benchmarks. "base" has the shapes of wav2vec2-base and bert-base.
PRESETS = {
    "tiny": dict(
        audio=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(32, 32, 32), conv_kernel=(40, 8, 4), conv_stride=(20, 4, 4),
                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2),
        text=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        fdrl=dict(hidden_size=32, fusion_num_heads=2),
    ),
    "demo": dict(
        audio=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   conv_dim=(64, 64, 64), conv_kernel=(40, 8, 4), conv_stride=(20, 4, 4),
                   num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4),
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        fdrl=dict(hidden_size=64, fusion_num_heads=4, initializer_range=0.1),
    ),
    "base": dict(audio={}, text={}, fdrl=dict(hidden_size=256)),
}
_AUDIO_COMMON = dict(feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0, layerdrop=0.0)
LOCK_FILE = ".fdrl-run.lock"


# ----- data -----------------------------------------------------------------------------------------------------------
def load_data(data_args, label2id=None):
    """The whole corpus as a DatasetDict/Dataset with `session`, from the IEMOCAP builder or a manifest.
    `DataArguments` has already checked that exactly one source is given and exists."""
    if data_args.manifest:
        return load_manifest(data_args.manifest, label2id=label2id)
    from fdrl.data.iemocap import load_iemocap

    return load_iemocap(data_args.data_dir, config_name=data_args.dataset_config, cache_dir=data_args.cache_dir,
                        strip_tags=data_args.strip_tags, rebuild=data_args.rebuild_cache)


def available_sessions(data):
    splits = data.values() if hasattr(data, "values") else [data]
    sessions = set()
    for split in splits:
        column = "session" if "session" in split.column_names else "fold"
        sessions.update(split[column][:])
    return sorted(s for s in sessions if s >= 0)


def drop_empty_transcripts(split, name):
    """Utterances without words cannot feed the text branch: skipped, counted and named in a warning."""
    empty = [i for i, text in enumerate(split["text"][:]) if not str(text).strip()]
    if empty:
        ids = split.select(empty[:5])["id"][:] if "id" in split.column_names else empty[:5]
        logger.warning(f"{name}: skipped {len(empty)} utterance(s) with an empty transcript, e.g. {ids}")
        split = split.select(sorted(set(range(len(split))) - set(empty)))
    return split


def add_length_column(split, sampling_rate=16000):
    """`length` in samples, for length-grouped batches: from IEMOCAP's times, else from the audio file's header."""
    if "length" in split.column_names:
        return split
    if {"start", "end"} <= set(split.column_names):
        lengths = [int(round((end - start) * sampling_rate)) for start, end in zip(split["start"][:], split["end"][:])]
    else:
        import soundfile

        paths = split.cast_column("audio", datasets.Audio(decode=False))["audio"][:]
        lengths = [int(soundfile.info(a["path"]).duration * sampling_rate) if a.get("path") else 0 for a in paths]
    return split.add_column("length", lengths)


def read_transcripts(path):
    """{id: transcript} from `fdrl-wer --output` JSON (items with id and hypothesis) or a manifest-like file with
    id and text columns."""
    path = Path(path)
    if path.suffix == ".json":
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and "items" in payload:
            return {item["id"]: item["hypothesis"] for item in payload["items"]}
    from fdrl.data.manifest import read_rows

    rows, columns = read_rows(path)
    missing = [c for c in ("id", "text") if c not in columns]
    if missing:
        raise ValueError(f"--test_transcripts {path} needs columns 'id' and 'text', it lacks {missing}")
    return {row["id"]: row["text"] for _, row in rows}


def replace_test_transcripts(splits, transcripts, source):
    """The test split with its text from `transcripts`; every test utterance must have one."""
    test = splits["test"]
    missing = [u for u in test["id"][:] if u not in transcripts]
    if missing:
        raise ValueError(f"--test_transcripts {source} has no transcript for {len(missing)} test utterance(s), "
                         f"e.g. {missing[:5]}")
    texts = [transcripts[u] for u in test["id"][:]]
    splits["test"] = test.remove_columns("text").add_column("text", texts)
    return splits


def fold_splits(data, test_session, validation_fraction, seed):
    splits = leave_one_session_out(data, test_session, validation_fraction=validation_fraction, seed=seed)
    splits = type(splits)({name: add_length_column(drop_empty_transcripts(split, name))
                           for name, split in splits.items()})
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(
                f"test session {test_session}: the {name} split is empty"
                + (" (raise --validation_fraction)" if name == "validation" else "")
            )
    ids = {name: set(split["id"][:]) for name, split in splits.items()}
    if ids["test"] & (ids["train"] | ids["validation"]):
        raise RuntimeError(f"test session {test_session} leaked into training or validation")
    return splits


# ----- processor and backbones ----------------------------------------------------------------------------------------
def build_processor(model_args, train_texts, fold_dir):
    """The fold's processor. A preset's WordPiece vocabulary is learnt on the training transcripts only, and saved
    in the fold folder at once, so a resumed fold reuses the very same token ids."""
    if model_args.processor_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.processor_name_or_path)
    if model_args.model_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.model_name_or_path)
    if model_args.audio_model:
        return FDRLProcessor(AutoFeatureExtractor.from_pretrained(model_args.audio_model),
                             AutoTokenizer.from_pretrained(model_args.text_model),
                             max_duration=model_args.max_duration)
    saved = Path(fold_dir) / "processor"
    if (saved / "processor_config.json").is_file():
        return FDRLProcessor.from_pretrained(saved)
    processor = FDRLProcessor.from_texts(train_texts, vocab_size=model_args.vocab_size,
                                         max_duration=model_args.max_duration)
    processor.save_pretrained(saved)
    return processor


def preset_backbone_configs(preset, vocab_size):
    if preset not in PRESETS:
        raise ValueError(f"--model_preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes = PRESETS[preset]
    audio = Wav2Vec2Config(**{**_AUDIO_COMMON, **sizes["audio"]}) if sizes["audio"] else Wav2Vec2Config()
    text = BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **sizes["text"])
    return audio, text


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
    _drop_pooler(text)
    return audio, text


def config_kwargs(model_args, label_names):
    """FDRLConfig fields for every system of the run: the labels, the preset's sizes, the command line's settings."""
    preset = PRESETS[model_args.model_preset]["fdrl"] if model_args.model_preset else {}
    return {**preset, "id2label": dict(enumerate(label_names)), **model_args.config_overrides()}


# ----- one system ------------------------------------------------------------------------------------------------------
def train_system(system, context, splits, audio, text, system_dir, seed):
    """Train one system (best epoch by validation UAR), test it. Returns (metrics with test log-probabilities,
    the trainer)."""
    args, label_names = context["training_args"], context["label_names"]
    frozen = args.freeze_backbones
    if not frozen:  # each system fine-tunes its own copy of the same starting backbones
        audio, text = copy.deepcopy(audio), copy.deepcopy(text)
    set_seed(seed)
    model = build_system_model(system, context["config_kwargs"], audio, text)
    if frozen:
        for backbone in (model.audio_model, model.text_model):
            if backbone is not None:
                backbone.requires_grad_(False)
    unimodal = system.kind in ("speech", "text")
    overrides = dict(output_dir=str(system_dir), seed=seed, push_to_hub=False)
    if unimodal:
        overrides.update(num_train_epochs=args.unimodal_epochs or args.num_train_epochs,
                         learning_rate=args.unimodal_learning_rate or args.learning_rate)
    if frozen:  # best heads kept in memory, no checkpoints of the frozen backbones
        overrides.update(save_strategy="no", load_best_model_at_end=False)
    system_args = dataclasses.replace(args, **overrides)
    modalities = {"speech": ("audio",), "text": ("text",)}.get(system.kind, ("audio", "text"))
    is_fdrl = system.kind == "fdrl"
    trainer = (FDRLTrainer if is_fdrl else SystemTrainer)(
        model=model, args=system_args, train_dataset=splits["train"], eval_dataset=splits["validation"],
        data_collator=FDRLDataCollator(context["processor"], context["data_args"].max_text_length, modalities),
        compute_metrics=(fdrl_metrics if is_fdrl else trainer_metrics)(label_names),
        callbacks=[KeepBestTrainable()] if frozen else None,
    )
    if is_fdrl:
        trainer.last_epoch_dataset = splits["test"]
    if system_args.get_process_log_level() > python_logging.INFO:  # --log_level warning: no per-step log lines either
        trainer.remove_callback(PrinterCallback)
    _train(trainer, None if frozen else resume_checkpoint(args.resume_from_checkpoint, system_dir))
    output = trainer.predict(splits["test"], metric_key_prefix="test")
    predictions = output.predictions if isinstance(output.predictions, tuple) else (output.predictions,)
    log_probs = torch.log_softmax(torch.as_tensor(predictions[0], dtype=torch.float64), -1).numpy()
    metrics = classification_metrics(log_probs.argmax(-1), output.label_ids, label_names)
    metrics.update(best_validation_uar=trainer.state.best_metric, log_probs=np.round(log_probs, 6).tolist())
    if is_fdrl:
        metrics["dynamic_factor"] = float(trainer.fdrl_model.dynamic_factor)
        metrics.update({k: v for k, v in output.metrics.items() if k.startswith("test_alignment_")})
        metrics.update(trainer.last_epoch_metrics)  # the last epoch's test metrics, the largest norm of S_a, S_t
    return metrics, trainer


def _train(trainer, resume_from):
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(error.errno, f"the disk is full: could not write under {trainer.args.output_dir} "
                                       f"({error}); free space and rerun with --resume_from_checkpoint true") from error
        raise


def resume_checkpoint(resume, folder):
    """`--resume_from_checkpoint true` resumes from the newest complete checkpoint in `folder` (none: from scratch);
    a path resumes from that checkpoint."""
    if resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() == "true":
        return latest_complete_checkpoint(folder)
    return resume


def late_fusion(record, labels, label_names):
    """log p(y|speech) + log p(y|text), the product of the two experts, from the run's speech and text systems."""
    fused = np.asarray(record["speech"]["log_probs"]) + np.asarray(record["text"]["log_probs"])
    metrics = classification_metrics(fused.argmax(-1), labels, label_names)
    metrics["log_probs"] = np.round(fused, 6).tolist()
    return metrics


# ----- one (seed, fold) ------------------------------------------------------------------------------------------------
def read_record(path):
    """A run record, or {} if there is none; a truncated one (killed while writing) is reported and started anew."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        logger.warning(f"{path} is not valid JSON ({error}): that run starts again")
        return {}


def write_json(path, payload):
    """Write JSON atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    temporary.replace(path)


def run_fold(context, seed, fold):
    """Every system of one (seed, test session), on one split and one set of starting backbones."""
    args, model_args = context["training_args"], context["model_args"]
    fold_dir = Path(args.output_dir) / f"seed{seed}" / f"fold{fold}"
    record_path = Path(args.output_dir) / "runs" / f"seed{seed}_fold{fold}.json"
    record = read_record(record_path) if str(args.resume_from_checkpoint).lower() == "true" else {}
    done = record.get("systems", {})
    with args.main_process_first(desc="fold splits"):
        splits = fold_splits(context["data"], fold, args.validation_fraction, seed)
    if context["data_args"].test_transcripts:  # e.g. a speech recogniser's, to test as users would
        source = context["data_args"].test_transcripts
        splits = replace_test_transcripts(splits, read_transcripts(source), source)
    logger.info(f"seed {seed}, test session {fold}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    processor = build_processor(model_args, splits["train"]["text"][:] + splits["validation"]["text"][:], fold_dir)
    context["processor"] = processor
    audio, text = build_backbones(model_args, processor, seed)
    if args.should_save:
        write_json(fold_dir / "splits.json", {name: splits_ids(split) for name, split in splits.items()})
    if args.freeze_backbones:
        splits = cached_pooled_features(audio, text, processor, splits, context, fold_dir)
    labels = splits["test"]["label"][:] if hasattr(splits["test"], "column_names") else [e["label"] for e in splits["test"]]
    reference = context["reference"]
    for system in context["systems"]:
        if system.name in done:
            continue
        if system.kind == "late_fusion":
            done[system.name] = late_fusion(done, labels, context["label_names"])
        else:
            system_dir = fold_dir / system.name
            done[system.name], trainer = train_system(system, context, splits, audio, text, system_dir, seed)
            write_rank_state(trainer, system_dir)
            if args.should_save:
                trainer.save_state()  # trainer_state.json: every logged term, mu and the alignment over training
                if system.kind == "fdrl":
                    plot_training({"log_history": trainer.state.log_history}, system_dir / "training_curves.png",
                                  fdrl_training_panels(context["label_names"]),
                                  title=f"{system.name}, test session {fold}, seed {seed}")
                if system.name == reference:
                    save_model_folder(trainer.model, processor, fold_dir / "model")
                if not args.keep_checkpoints:
                    for checkpoint in system_dir.glob("checkpoint-*"):
                        shutil.rmtree(checkpoint, ignore_errors=True)
        logger.info(f"seed {seed}, fold {fold}, {system.name}: UAR {done[system.name]['uar']:.4f}, "
                    f"WAR {done[system.name]['war']:.4f}")
        if args.should_save:
            write_json(record_path, {"seed": seed, "fold": fold, "systems": done,
                                     "test_ids": splits_ids(splits["test"])})
            plot_confusion_matrix(done[system.name]["confusion_matrix"], context["label_names"],
                                  _mkdir(fold_dir) / f"confusion_{system.name}.png",
                                  title=f"{system.name}, test session {fold}, seed {seed}")
    return {"seed": seed, "fold": fold, "systems": {s.name: done[s.name] for s in context["systems"]}}


def splits_ids(split):
    return split["id"][:] if hasattr(split, "column_names") else [e["id"] for e in split]


def write_rank_state(trainer, folder):
    """Each process records what it ended with, so a multi-process run can be checked for agreement."""
    if trainer.args.world_size <= 1:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    state = dict(rank=trainer.args.process_index, world_size=trainer.args.world_size,
                 dynamic_factor=float(getattr(model, "dynamic_factor", float("nan"))),
                 global_step=trainer.state.global_step, parameter_checksum=checksum)
    write_json(_mkdir(Path(folder)) / f"rank_state_{trainer.args.process_index}.json", state)


def _mkdir(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----- the protocol ----------------------------------------------------------------------------------------------------
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
        raise RuntimeError(f"--output_dir {output_dir} is in use by another run that is still alive; give another "
                           f"--output_dir, or wait for that run to finish") from None
    return lock


def run_protocol(model_args, data_args, training_args):
    """Every (seed, fold) and every system; then the table, the model folder and card, and the push."""
    systems = resolve_systems(training_args.systems)
    # The reference of the paired differences, and the model the Hub folder holds: S0, else the first FDRL system.
    names = [s.name for s in systems]
    reference = "S0" if "S0" in names else next((s.name for s in systems if s.kind == "fdrl"), None)
    lock = lock_output_dir(training_args)
    try:
        with training_args.main_process_first(desc="load data"):
            data = load_data(data_args)
        sessions = available_sessions(data)
        unknown = [f for f in training_args.folds if f not in sessions]
        if unknown:
            raise ValueError(f"--folds: test session(s) {unknown} not in the data, whose sessions are {sessions}")
        first_split = next(iter(data.values())) if hasattr(data, "values") else data
        label_names = first_split.features["label"].names
        from fdrl.data.validation import check_corpus_audio

        data, audio_report = check_corpus_audio(data, model_args, data_args)
        context = dict(model_args=model_args, data_args=data_args, training_args=training_args, data=data,
                       systems=systems, reference=reference, label_names=label_names,
                       config_kwargs=config_kwargs(model_args, label_names))
        runs = [run_fold(context, seed, fold) for seed in training_args.seeds for fold in training_args.folds]
        summary = summarize_runs([{k: v for k, v in run.items()} for run in _without_log_probs(runs)], label_names,
                                 names, reference=reference)
        summary["audio_check"] = audio_report
        if training_args.should_save:
            output_dir = Path(training_args.output_dir)
            table = write_report(summary, output_dir, DESCRIPTIONS)
            print(f"\nLeave-one-session-out results (WAR = accuracy, UAR = mean per-class recall), in %:\n{table}\n")
            hub_dir = reference and assemble_hub_folder(output_dir, training_args.seeds[0], training_args.folds[-1], summary,
                                          model_args, data_args, training_args)
            if training_args.push_to_hub and hub_dir:
                push_folder(hub_dir, training_args)
        return summary
    finally:
        if lock is not None:
            lock.release()


def _without_log_probs(runs):
    return [{**run, "systems": {name: {k: v for k, v in metrics.items() if k != "log_probs"}
                                for name, metrics in run["systems"].items()}} for run in runs]
