"""The leave-one-session-out protocol: data, processor and model per fold, training, testing, the summary, the
model card and the Hub push. `run_fdrl.py` parses the arguments and calls `run_protocol`."""

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers import (
    AutoFeatureExtractor, AutoModel, AutoTokenizer, BertConfig, Trainer, TrainerCallback, Wav2Vec2Config, set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from manifest_fdrl import leave_one_session_out, load_manifest
from metrics_fdrl import classification_metrics, plot_confusion_matrix, summarize, trainer_metrics, write_summary
from modeling_fdrl import FDRLModel, _drop_pooler
from processing_fdrl import FDRLProcessor
from trainer_fdrl import FDRLDataCollator, FDRLTrainer, UnimodalClassifier


logger = logging.get_logger(__name__)

# Random-initialisation sizes. "demo" is what trains in minutes on 2 CPU cores (DEMO_NOTES.md): 320x downsampling,
# 50 frames/s. "base" has the shapes of wav2vec2-base and bert-base-uncased.
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


# ----- data -----------------------------------------------------------------------------------------------------------
def load_data(data_args, label2id=None):
    """The whole corpus as a DatasetDict/Dataset with `session`, from the IEMOCAP builder or a manifest.
    `DataArguments` has already checked that exactly one source is given and exists."""
    if data_args.manifest:
        return load_manifest(data_args.manifest, label2id=label2id)
    from iemocap import load_iemocap

    return load_iemocap(data_args.data_dir, config_name=data_args.dataset_config, cache_dir=data_args.cache_dir,
                        strip_tags=data_args.strip_tags)


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


# ----- processor and model --------------------------------------------------------------------------------------------
def build_processor(model_args, train_texts):
    if model_args.processor_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.processor_name_or_path)
    if model_args.model_name_or_path:
        return FDRLProcessor.from_pretrained(model_args.model_name_or_path)
    if model_args.audio_model and model_args.text_model:
        return FDRLProcessor(AutoFeatureExtractor.from_pretrained(model_args.audio_model),
                             AutoTokenizer.from_pretrained(model_args.text_model),
                             max_duration=model_args.max_duration)
    # random-initialisation preset: a WordPiece vocabulary learnt on the training transcripts only
    return FDRLProcessor.from_texts(train_texts, vocab_size=model_args.vocab_size, max_duration=model_args.max_duration)


def fdrl_config_kwargs(model_args, label_names):
    kwargs = dict(id2label=dict(enumerate(label_names)))
    for name in ("hidden_size", "alpha", "beta", "gamma", "mu", "dynamic_factor_mode", "a_distance_proxy",
                 "grl_schedule", "grl_lambda", "orthogonality", "use_global_discriminator",
                 "use_local_discriminators", "use_modality_discriminator", "use_orthogonality", "use_predictor",
                 "fusion_inputs", "fusion_num_heads", "classifier_dropout", "text_pooling", "freeze_feature_encoder",
                 "initializer_range"):
        value = getattr(model_args, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def preset_backbone_configs(preset, vocab_size):
    if preset not in PRESETS:
        raise ValueError(f"--model_preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes = PRESETS[preset]
    audio = Wav2Vec2Config(**{**_AUDIO_COMMON, **sizes["audio"]}) if sizes["audio"] else Wav2Vec2Config()
    text = BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **sizes["text"])
    return audio, text


def build_model(model_args, training_args, processor, splits, label_names, fold_dir, progress=None):
    """FDRL from a checkpoint, from pretrained backbones, or from a preset (optionally warm-started per modality)."""
    kwargs = fdrl_config_kwargs(model_args, label_names)
    if model_args.model_name_or_path:
        return FDRLModel.from_pretrained(model_args.model_name_or_path, **kwargs)
    if model_args.audio_model and model_args.text_model:
        return FDRLModel.from_encoders_pretrained(model_args.audio_model, model_args.text_model, **kwargs)
    audio_config, text_config = preset_backbone_configs(model_args.model_preset, len(processor.tokenizer))
    kwargs = {**PRESETS[model_args.model_preset]["fdrl"], **kwargs}
    audio, text = AutoModel.from_config(audio_config), AutoModel.from_config(text_config)
    _drop_pooler(text)
    for modality, backbone, epochs in (("audio", audio, training_args.pretrain_audio_epochs),
                                       ("text", text, training_args.pretrain_text_epochs)):
        if epochs > 0:  # stands in for the pretrained wav2vec2 / BERT the paper starts from
            if progress:
                progress.stage(f"{Path(fold_dir).parent.name} {Path(fold_dir).name}: warm start ({modality})")
            train_unimodal(backbone, modality, epochs, training_args, processor, splits, label_names,
                           Path(fold_dir) / f"warm_start_{modality}", progress)
    return FDRLModel.from_encoders_pretrained(audio, text, **kwargs)


def train_unimodal(backbone, modality, epochs, training_args, processor, splits, label_names, output_dir,
                   progress=None):
    """Train one backbone on its own modality (train split, best epoch by validation UAR). Returns test metrics."""
    classifier = UnimodalClassifier(backbone, modality, len(label_names))
    args = dataclasses.replace(
        training_args, output_dir=str(output_dir), num_train_epochs=epochs,
        learning_rate=training_args.pretrain_learning_rate, save_total_limit=1, push_to_hub=False,
        report_to="none", resume_from_checkpoint=None,
    )
    trainer = Trainer(model=classifier, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
                      data_collator=FDRLDataCollator(processor, modalities=(modality,)),
                      compute_metrics=trainer_metrics(label_names),
                      callbacks=[progress] if progress else None)
    trainer.train()
    metrics = evaluate_split(trainer, splits["test"], label_names)
    if args.should_save:
        (Path(output_dir) / "test_results.json").write_text(json.dumps(metrics, indent=2))
        for checkpoint in Path(output_dir).glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    logger.info(f"warm start ({modality} only): test UAR {metrics['uar']:.4f}, WAR {metrics['war']:.4f}")
    return metrics


def evaluate_split(trainer, split, label_names):
    output = trainer.predict(split, metric_key_prefix="test")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return classification_metrics(np.argmax(logits, -1), output.label_ids, label_names)


# ----- progress over the whole protocol --------------------------------------------------------------------------
class ProtocolProgress(TrainerCallback):
    """One bar over every epoch of every stage (warm starts and FDRL) of every fold, on the main process."""

    def __init__(self, training_args, num_runs):
        epochs = training_args.pretrain_audio_epochs + training_args.pretrain_text_epochs + training_args.num_train_epochs
        self.bar = tqdm(total=int(round(num_runs * epochs)), unit="epoch", dynamic_ncols=True,
                        disable=not training_args.should_log, desc="FDRL protocol")

    def stage(self, description):
        self.bar.set_description(description)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def close(self):
        self.bar.close()


# ----- one fold, then the protocol ----------------------------------------------------------------------------------
def run_fold(model_args, data_args, training_args, data, test_session, seed, fold_dir, label_names, progress=None):
    """Train on four sessions (validation drawn from them), select on validation UAR, test on the fifth."""
    set_seed(seed)
    with training_args.main_process_first(desc="fold splits"):
        splits = fold_splits(data, test_session, training_args.validation_fraction, seed)
    logger.info(f"seed {seed}, test session {test_session}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    processor = build_processor(model_args, splits["train"]["text"][:] + splits["validation"]["text"][:])
    model = build_model(model_args, training_args, processor, splits, label_names, fold_dir, progress)
    if progress:
        progress.stage(f"seed{seed} fold{test_session}: FDRL")
    args = dataclasses.replace(training_args, output_dir=str(fold_dir), seed=seed, push_to_hub=False)
    trainer = FDRLTrainer(
        model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
        data_collator=FDRLDataCollator(processor, data_args.max_text_length), compute_metrics=trainer_metrics(label_names),
        callbacks=[progress] if progress else None,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(training_args.resume_from_checkpoint, fold_dir))
    metrics = evaluate_split(trainer, splits["test"], label_names)
    metrics.update(fold=test_session, seed=seed, dynamic_factor=float(trainer.fdrl_model.dynamic_factor),
                   best_checkpoint=trainer.state.best_model_checkpoint,
                   best_validation_uar=trainer.state.best_metric)
    if trainer.is_world_process_zero():
        fold_dir.mkdir(parents=True, exist_ok=True)
        save_model_folder(trainer, processor, fold_dir)
        trainer.save_state()  # trainer_state.json: every logged term, mu and the GRL coefficient over training
        (fold_dir / "test_results.json").write_text(json.dumps(metrics, indent=2))
        (fold_dir / "splits.json").write_text(json.dumps({k: v["id"][:] for k, v in splits.items()}))
        plot_confusion_matrix(metrics["confusion_matrix"], label_names, fold_dir / "confusion_matrix.png",
                              title=f"test session {test_session}, seed {seed}")
        for checkpoint in fold_dir.glob("checkpoint-*"):  # the best model is saved above
            if not training_args.keep_checkpoints:
                shutil.rmtree(checkpoint, ignore_errors=True)
    write_rank_state(trainer, fold_dir)
    return metrics


def resume_checkpoint(resume, fold_dir):
    """`--resume_from_checkpoint true` resumes each fold from its own last checkpoint (none: from scratch)."""
    if resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() == "true":
        return get_last_checkpoint(str(fold_dir)) if Path(fold_dir).is_dir() else None
    return resume


def save_model_folder(trainer, processor, folder):
    """Weights (safetensors), config with auto_map and `custom_pipelines`, remote-code files and the processor:
    a Hub model repository that `pipeline("multimodal-emotion-recognition", ...)` loads."""
    trainer.save_model(str(folder))
    processor.save_pretrained(str(folder))
    if importlib.util.find_spec("pipeline_fdrl") is not None:
        from pipeline_fdrl import save_pipeline

        save_pipeline(trainer.fdrl_model, processor, folder)


def write_rank_state(trainer, fold_dir):
    """Each process records what it ended with, so a multi-process run can be checked for agreement."""
    if trainer.args.world_size <= 1:
        return
    model = trainer.fdrl_model
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    state = dict(rank=trainer.args.process_index, world_size=trainer.args.world_size,
                 dynamic_factor=float(model.dynamic_factor), global_step=trainer.state.global_step,
                 parameter_checksum=checksum)
    fold_dir.mkdir(parents=True, exist_ok=True)
    (fold_dir / f"rank_state_{trainer.args.process_index}.json").write_text(json.dumps(state))


def run_protocol(model_args, data_args, training_args):
    """Every (seed, fold): a fresh model per fold, each in its own folder; then the summary and the Hub folder."""
    folds, seeds = training_args.fold_list(), training_args.seed_list()
    with training_args.main_process_first(desc="load data"):
        data = load_data(data_args)
    sessions = available_sessions(data)
    unknown = [f for f in folds if f not in sessions]
    if unknown:
        raise ValueError(f"test session(s) {unknown} not in the data, whose sessions are {sessions}")
    first_split = next(iter(data.values())) if hasattr(data, "values") else data
    label_names = first_split.features["label"].names
    output_dir = Path(training_args.output_dir)
    runs = []
    progress = ProtocolProgress(training_args, len(seeds) * len(folds))
    for seed in seeds:
        for fold in folds:
            fold_dir = output_dir / f"seed{seed}" / f"fold{fold}"
            done = fold_dir / "test_results.json"
            if str(training_args.resume_from_checkpoint).lower() not in ("none", "false", "") and done.is_file():
                metrics = json.loads(done.read_text())  # finished before the interruption
            else:
                metrics = run_fold(model_args, data_args, training_args, data, fold, seed, fold_dir, label_names,
                                   progress)
            runs.append({key: metrics[key] for key in ("fold", "seed", "war", "uar", "macro_f1", "weighted_f1",
                                                      "recall", "dynamic_factor", "num_samples")})
            logger.info(f"seed {seed}, test session {fold}: WAR {metrics['war']:.4f}, UAR {metrics['uar']:.4f}")
    progress.close()
    summary = summarize(runs)
    summary["label_names"] = label_names
    if training_args.should_save:
        table = write_summary(summary, output_dir)
        print(f"\nLeave-one-session-out results (WAR = accuracy, UAR = mean per-class recall), in %:\n{table}\n")
        hub_dir = assemble_hub_folder(output_dir, seeds[0], folds[-1], summary, model_args, data_args, training_args)
        if training_args.push_to_hub:
            push_folder(hub_dir, training_args)
    return summary


# ----- model card and Hub ----------------------------------------------------------------------------------------------
def assemble_hub_folder(output_dir, seed, fold, summary, model_args, data_args, training_args):
    """`output_dir/model`: the model of the last fold of the first seed, and a card with every fold's results."""
    hub_dir = output_dir / "model"
    if hub_dir.exists():
        shutil.rmtree(hub_dir)
    source = output_dir / f"seed{seed}" / f"fold{fold}"
    hub_dir.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".bin" and path.name != "splits.json":  # no pickles on the Hub
            shutil.copy2(path, hub_dir / path.name)
    (hub_dir / "training_args.json").write_text(training_args.to_json_string())
    shutil.copy2(output_dir / "results.json", hub_dir / "results.json")
    write_model_card(hub_dir, summary, fold, model_args, data_args, training_args)
    return hub_dir


def write_model_card(folder, summary, fold, model_args, data_args, training_args):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from metrics_fdrl import markdown_table

    dataset_name = "IEMOCAP" if data_args.data_dir else "custom manifest"
    if data_args.data_dir and "demo" in str(data_args.data_dir).lower():
        dataset_name = "FDRL spoken demo corpus (espeak-ng, IEMOCAP layout)"
    model_name = training_args.hub_model_id or Path(training_args.output_dir).name
    eval_results = [
        EvalResult(task_type="audio-classification", task_name="Multimodal emotion recognition",
                   dataset_type="iemocap" if dataset_name == "IEMOCAP" else "custom", dataset_name=dataset_name,
                   dataset_split=f"leave-one-session-out ({summary['num_runs']} runs)", metric_type=metric,
                   metric_name=name, metric_value=round(100 * summary["mean"][key], 2))
        for key, metric, name in (("war", "accuracy", "WAR (accuracy)"), ("uar", "recall", "UAR (unweighted average recall)"))
    ]
    base_models = [base_model_id(model_args.audio_model), base_model_id(model_args.text_model)]
    card_data = ModelCardData(model_name=model_name, eval_results=eval_results, license="apache-2.0",
                              library_name="transformers", pipeline_tag="audio-classification",
                              tags=["emotion-recognition", "multimodal", "speech", "fdrl", "custom_code"],
                              base_model=[name for name in base_models if name] or None)
    labels = ", ".join(summary["label_names"])
    backbones = ""
    if model_args.audio_model and model_args.text_model:
        backbones = (f"\n- **Base models:** {base_models[0] or model_args.audio_model} (speech), "
                     f"{base_models[1] or model_args.text_model} (text)")
    content = f"""---
{card_data.to_yaml()}
---

# {model_name}

FDRL (Fine-grained Disentangled Representation Learning, ICASSP 2024) recognises emotion from speech and its
transcript together. Speech (wav2vec2-style) and text (BERT-style) are projected into a shared and two private
subspaces; adversarial discriminators align the shared representations globally and per emotion class, a modality
discriminator and an orthogonality loss keep the private ones distinct, and multi-head self-attention fuses the four.

- **Labels:** {labels}{backbones}
- **Training data:** {dataset_name}
- **Protocol:** leave-one-session-out: train on four sessions (a stratified {training_args.validation_fraction:.0%}
  of them held out for model selection by validation UAR), test on the fifth. This repository holds the model
  trained with **session {fold} held out**; the table reports every fold.
- **Metrics:** WAR (weighted average recall) = accuracy; UAR (unweighted average recall) = mean of the per-class
  recalls.

## Results (%)

{markdown_table(summary)}

## Use

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{model_name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{model_name}", trust_remote_code=True)
inputs = processor(audio=waveform, text="I can't believe this", sampling_rate=16000)
label = model.config.id2label[model(**inputs).logits.argmax(-1).item()]
```

## Intended use and limits

For research on emotion recognition from acted, English, dyadic speech with transcripts. Emotion labels are
perceptions of annotators, not what a speaker felt; a model trained on a few actors (IEMOCAP has ten) does not
transfer reliably to other speakers, languages, recording conditions or spontaneous speech. Do not use it to make
decisions about people (hiring, policing, health, education, credit), and do not infer emotion from people who have
not agreed to it. Figures on the synthetic demo corpus only show that the pipeline works; they say nothing about
real speech.
"""
    ModelCard(content).save(Path(folder) / "README.md")


def base_model_id(model):
    """The Hub id a backbone stands for: the id itself, or for a `make pretrained` folder the id in its
    `fdrl_provenance.json`; None for another local folder (it has no Hub id) or no backbone."""
    if not model or not isinstance(model, (str, os.PathLike)):
        return None
    provenance = Path(model) / "fdrl_provenance.json"
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("stands_for")
    return None if Path(model).exists() else str(model)


def push_folder(folder, training_args):
    """Upload the Hub folder to `--hub_model_id` (created if needed)."""
    from huggingface_hub import HfApi

    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/fdrl-iemocap)")
    api = HfApi(token=training_args.hub_token)
    repo = api.create_repo(training_args.hub_model_id, private=bool(training_args.hub_private_repo), exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo.repo_id,
                      commit_message=f"FDRL: leave-one-session-out run ({Path(training_args.output_dir).name})")
    logger.info(f"pushed {folder} to {repo.repo_id}")
    return repo.repo_id
