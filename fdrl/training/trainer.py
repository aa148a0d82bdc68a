"""FDRLTrainer: the multi-term objective (eq. 15) with Trainer, the dynamic factor's epoch updates, the training
arguments of the protocol, and the collator that turns examples (or cached pooled features) into model inputs."""

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from accelerate.utils import DistributedType
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy
from transformers.utils import logging

from fdrl.data.audio import decode_audio
from fdrl.training.checkpoints import disk_full_error
from modeling_fdrl import LOSS_TERMS, FDRLOutput


logger = logging.get_logger(__name__)

# The discriminators' per-batch statistics, summed over an epoch (and over processes) to update mu.
STAT_KEYS = tuple(f.name for f in dataclasses.fields(FDRLOutput) if f.name.startswith(("global_", "local_")))
EPOCH_STATS_FILE = "fdrl_epoch_statistics_rank{rank}.json"
BACKBONE_PREFIXES = ("audio_model.", "text_model.")
# The adversarial path: the shared encoder E_s and the alignment discriminators (`adversarial_learning_rate`).
ADVERSARIAL_PREFIXES = ("shared_encoder.", "global_discriminator.", "local_discriminators.")


def _as_list(values, name, cast):
    """A list field given as a list, a YAML list or comma-separated strings; non-empty and without repeats."""
    if values is None:
        return None
    items = values if isinstance(values, (list, tuple)) else [values]
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--{name} is empty, got {values!r}")
    try:
        parsed = [cast(p) for p in parts]
    except ValueError:
        raise ValueError(f"--{name} must be a list of {cast.__name__} values, got {values!r}") from None
    repeated = sorted({p for p in parsed if parsed.count(p) > 1}, key=str)
    if repeated:
        raise ValueError(f"--{name} names {repeated} more than once, got {values!r}")
    return parsed


def resuming(resume_from_checkpoint):
    """Whether `--resume_from_checkpoint` asks to carry on: `true` or a checkpoint path (not unset, false or none)."""
    return resume_from_checkpoint is not None and str(resume_from_checkpoint).lower() not in ("false", "none", "")


@dataclass
class FDRLTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults (AdamW, lr 1e-5, batch 8, up to 100 epochs), model selection on
    validation UAR, and the leave-one-session-out protocol's own arguments (folds, seeds, systems)."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the heads (paper: 1e-5)."})
    backbone_learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Learning rate of the speech and text backbones (default: learning_rate)."}
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size per device (paper: 8)."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size per device."})
    num_train_epochs: float = field(default=100.0, metadata={"help": "Training epochs (paper: at most 100)."})
    eval_strategy: Union[IntervalStrategy, str] = field(
        default="epoch", metadata={"help": "When to evaluate on the validation split."}
    )
    save_strategy: Union[IntervalStrategy, str] = field(default="epoch", metadata={"help": "When to checkpoint."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Checkpoints kept per fold."})
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Restore the best checkpoint by validation UAR before testing."}
    )
    metric_for_best_model: Optional[str] = field(default="uar", metadata={"help": "Model selection metric."})
    greater_is_better: Optional[bool] = field(default=True, metadata={"help": "Higher `metric_for_best_model` wins."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss terms every N steps."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator reads raw columns."})
    report_to: Union[None, str, list[str]] = field(
        default="none", metadata={"help": "Loggers: 'none', 'tensorboard', 'wandb', ..."}
    )
    # ----- the protocol -----
    folds: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "Test sessions, e.g. `--folds 1 2 3 4 5` or `1,2,3,4,5` (leave-one-session-out); not for a "
            "corpus with official splits (MELD)."
        },
    )
    seeds: Optional[list[str]] = field(default=None, metadata={"help": "Seeds; every fold runs once per seed."})
    systems: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "Systems to train and test on the same folds and seeds: S0-S6 (FDRL and its "
            "ablations), speech, text, concat, late_fusion. Default: S0."
        },
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Stratified share of the training sessions held out for model selection."}
    )
    unimodal_epochs: Optional[float] = field(
        default=None, metadata={"help": "Epochs of the speech-only and text-only systems (default: num_train_epochs)."}
    )
    unimodal_learning_rate: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of the speech-only and text-only systems' heads (default: learning_rate)."},
    )
    freeze_backbones: bool = field(
        default=False,
        metadata={
            "help": "Run each backbone once per utterance (eval mode), cache the pooled outputs "
            "and train only the heads of every system on the cache (SUPERB-style)."
        },
    )
    feature_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where pooled features are cached (default: ~/.cache/fdrl/features)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an --output_dir that holds an earlier run: its records, results, model and "
            "fold folders are deleted first (other files are left). Without it (or --resume_from_checkpoint true) "
            "such a folder is refused."
        },
    )
    parallel_runs: Optional[int] = field(
        default=None,
        metadata={
            "help": "With --freeze_backbones true on CPU: how many (seed, fold) runs train at once, each in its own "
            "worker process with one torch thread, on features the parent extracted first; the run records are "
            "identical to a sequential run's with one torch thread. Default: min(runs, usable cores); 1 when "
            "fine-tuning, on a GPU or with several processes (accelerate launch). Not a setting of the run."
        },
    )
    protocol_progress: bool = field(
        default=True,
        metadata={
            "help": "Show the protocol's progress bar over runs and systems (with the time left), the feature "
            "extraction's bar and one line per finished system, whatever --log_level and --disable_tqdm say "
            "(--disable_tqdm hides the Trainer's per-step bars)."
        },
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={
            "help": "Stop a system's training once `metric_for_best_model` has not improved for this many "
            "evaluations in a row (transformers' EarlyStoppingCallback): num_train_epochs becomes the most it trains, "
            "as the paper's 'at most 100 epochs'. The learning-rate and reversal schedules still span "
            "num_train_epochs. Default: every epoch."
        },
    )
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "Keep each fold's checkpoints after it finished (the best model is saved)."}
    )
    save_figures: bool = field(
        default=True,
        metadata={
            "help": "Draw each system's test confusion matrix (confusion_<system>.png) and each FDRL system's "
            "training curves (training_curves.png) as it finishes. false draws none (about 0.5 s of one core per "
            "FDRL system): the run records and trainer_state.json keep what they show, and `fdrl-plot-run "
            "OUTPUT_DIR` draws them later. Not a setting of the run."
        },
    )
    alignment_train_samples: int = field(
        default=512,
        metadata={
            "help": "Training utterances (a fixed random subset) whose S_a and S_t the current "
            "model computes at each evaluation, for the cross-modal transfer and the norm "
            "growth of the alignment diagnostics; 0 switches them off."
        },
    )
    divergence_factor: float = field(
        default=50.0,
        metadata={
            "help": "Warn when the mean norm of the shared vectors grows by more than this factor "
            "since the first evaluation (the adversarial game diverging; without the "
            "adversarial terms, S1, they grow 11-22x in 40 epochs of the demo's recipe)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.folds = _as_list(self.folds, "folds", int)
        self.seeds = _as_list(self.seeds, "seeds", int) or [self.seed]
        self.systems = _as_list(self.systems, "systems", str) or ["S0"]
        if self.overwrite_output_dir and resuming(self.resume_from_checkpoint):
            raise ValueError(
                "--overwrite_output_dir (start over) and --resume_from_checkpoint (carry on) contradict each other: "
                "give one of them"
            )
        if not self.num_train_epochs > 0 and not self.max_steps > 0:
            raise ValueError(f"--num_train_epochs must be positive, got {self.num_train_epochs}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "unimodal_epochs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"--validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        for name in ("learning_rate", "backbone_learning_rate", "unimodal_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name} must be positive, got {value}")
        if self.parallel_runs is not None and self.parallel_runs < 1:
            raise ValueError(f"--parallel_runs must be at least 1, got {self.parallel_runs}")
        if self.parallel_runs and self.parallel_runs > 1 and not self.freeze_backbones:
            raise ValueError(
                f"--parallel_runs {self.parallel_runs} needs --freeze_backbones true: runs that fine-tune the "
                f"backbones use every core (or a GPU) each; scale them with accelerate launch instead"
            )
        if self.early_stopping_patience is not None:
            if not self.early_stopping_patience >= 1:
                raise ValueError(f"--early_stopping_patience must be at least 1, got {self.early_stopping_patience}")
            if self.eval_strategy == IntervalStrategy.NO or not self.metric_for_best_model:
                raise ValueError(
                    "--early_stopping_patience needs evaluations to count: an --eval_strategy other than 'no' and a "
                    f"--metric_for_best_model (got {self.eval_strategy.value!r}, {self.metric_for_best_model!r})"
                )
            # a resumed run carries on the count of evaluations without improvement that its checkpoint holds,
            # so that it stops where the uninterrupted run would have (Trainer's default starts it from 0)
            self.restore_callback_states_from_checkpoint = True
        if self.alignment_train_samples < 0:
            raise ValueError(f"--alignment_train_samples must be >= 0, got {self.alignment_train_samples}")
        if not self.divergence_factor > 1:
            raise ValueError(f"--divergence_factor must be above 1, got {self.divergence_factor}")


@dataclass
class FDRLDataCollator:
    """Decodes audio, runs the processor on a batch, and adds `labels`.

    Examples carry `audio` (a decoded `datasets.Audio` value: `{"array", "sampling_rate"}` or a decoder), `text`
    and `label`; or, for heads trained on cached backbone outputs, `pooled_audio` and `pooled_text` vectors.
    `modalities` limits the work to what a single-modality model reads. `audio_pad_to_multiple_of_s` pads each
    batch's audio to a multiple of that many seconds (`FDRLProcessor.__call__`).
    """

    processor: Any = None
    max_text_length: int = 128
    modalities: tuple = ("audio", "text")
    audio_pad_to_multiple_of_s: Optional[float] = None

    def __call__(self, examples):
        if "pooled_audio" in examples[0]:
            batch = {
                f"pooled_{m}": torch.stack([torch.as_tensor(ex[f"pooled_{m}"]) for ex in examples])
                for m in self.modalities
            }  # (batch, backbone hidden)
        else:
            batch = self._process(examples)
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([example["label"] for example in examples], dtype=torch.long)
        return batch

    def _process(self, examples):
        kwargs = {}
        if "audio" in self.modalities:
            arrays, rates = zip(*(decode_audio(ex["audio"], ex.get("id", i)) for i, ex in enumerate(examples)))
            kwargs.update(
                audio=list(arrays),
                sampling_rate=list(rates),
                audio_pad_to_multiple_of_s=self.audio_pad_to_multiple_of_s,
            )
        if "text" in self.modalities:
            kwargs.update(
                text=[example["text"] for example in examples], truncation=True, max_length=self.max_text_length
            )
        return dict(self.processor(**kwargs))


def detach_backbones(model):
    """Take the frozen backbones out of `model` while its heads train on cached features, and return them for
    `attach_backbones`. The model then holds only what trains: every step's `model.train()`, `zero_grad` and
    gradient clipping no longer walk the backbones' hundreds of frozen tensors (about 6 ms of a 30 ms step for
    Whisper-base + MiniLM), and the numbers do not change (the backbones get no gradients, and a model given
    pooled features never calls them)."""
    backbones = {name: getattr(model, name, None) for name in ("audio_model", "text_model")}
    for name, backbone in backbones.items():
        if backbone is not None:
            setattr(model, name, None)
    return backbones


def attach_backbones(model, backbones):
    """Put back what `detach_backbones` took out (before the model is saved)."""
    for name, backbone in backbones.items():
        if backbone is not None:
            setattr(model, name, backbone)


def parameter_groups(model, learning_rate, backbone_learning_rate=None, adversarial_learning_rate=None):
    """AdamW groups: the backbones at `backbone_learning_rate` (default `learning_rate`), everything else (the
    heads) at `learning_rate`, except, when `adversarial_learning_rate` is below `learning_rate`, the adversarial
    path (E_s and the alignment discriminators) at `adversarial_learning_rate`. Frozen parameters are left out."""
    adversarial_learning_rate = min(adversarial_learning_rate or learning_rate, learning_rate)
    backbone, heads, adversarial = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith(BACKBONE_PREFIXES):
            backbone.append(parameter)
        elif adversarial_learning_rate < learning_rate and name.startswith(ADVERSARIAL_PREFIXES):
            adversarial.append(parameter)
        else:
            heads.append(parameter)
    groups = [{"params": heads, "lr": learning_rate}]
    if adversarial:
        groups.append({"params": adversarial, "lr": adversarial_learning_rate})
    if backbone:
        groups.append({"params": backbone, "lr": backbone_learning_rate or learning_rate})
    return groups


class SystemTrainer(Trainer):
    """`Trainer` with separate learning rates for the backbones and the heads (`backbone_learning_rate`)."""

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            adversarial = getattr(getattr(model, "config", None), "adversarial_learning_rate", None)
            groups = parameter_groups(model, self.args.learning_rate, self.args.backbone_learning_rate, adversarial)
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def _clip_grad_norm(self, model):
        """Trainer's clipping, by torch's own two steps in one process without fp16: accelerate's wrapper ends in
        torch's `clip_grad_norm_` on the same parameters in the same order, after checks that only matter under
        FSDP, DeepSpeed, XLA, tensor meshes or fp16 (its gradient scaler, SageMaker's model parallelism). On the
        frozen-feature protocol's small heads those checks cost more than the clipping itself, at every one of a
        run's thousands of steps. On CPU the gradients are scaled only when the norm is above `max_grad_norm` (or
        not a number): torch multiplies them by the clamped coefficient 1.0 otherwise, which changes no bit and
        spares an accelerator a synchronisation, not a CPU. The norm and the gradients are torch's, bit for bit
        (tested). Anywhere else this is Trainer's own."""
        accelerator = self.accelerator
        if accelerator.distributed_type != DistributedType.NO or accelerator.scaler is not None or self.args.fp16:
            return super()._clip_grad_norm(model)
        parameters, max_norm = list(model.parameters()), self.args.max_grad_norm
        if self.args.device.type != "cpu":
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        total_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        if not max_norm / (total_norm + 1e-6) >= 1.0:  # torch's coefficient, below 1 or NaN
            torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total_norm)
        return total_norm

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, with a full disk raised as `OSError(ENOSPC)` whatever library wrote the file
        (torch.save's own error has no errno), so that the protocol reports it as a full disk."""
        try:
            super()._save_checkpoint(model, trial)
        except Exception as error:
            full = disk_full_error(error, self.args.output_dir)
            if full is None:
                raise
            raise full from error


class FDRLTrainer(SystemTrainer):
    """`Trainer` whose `compute_loss` is FDRL's eq. 15, with every term, the dynamic factor and the GRL coefficient
    in the logs (averaged over processes). The GRL coefficient follows training progress; the dynamic factor is
    updated at each epoch's end from the whole epoch's discriminator statistics, summed over all processes, and
    logged with the raw error rates it came from. Evaluation hands S_a and S_t to `compute_metrics` with the logits
    (`predictions = (logits, shared_audio, shared_text)`), for the alignment diagnostics, and before each evaluation
    the current model's S_a and S_t of a fixed subset of the training split (`alignment_train_samples`) go to
    `compute_metrics.reference`. `DivergenceGuard` warns when the shared vectors' norm grows past
    `divergence_factor`. With `last_epoch_dataset` set, the model of the last epoch is tested on it before the kept
    one is restored (`last_epoch_metrics`, prefixed `last_test_`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._term_sums, self._term_steps = {}, 0
        self._epoch_stats = {}
        self.last_epoch_dataset, self.last_epoch_metrics = None, {}
        self._reference_cache = None  # the collated alignment reference of cached features (`_reference_batches`)
        self._unwrapped = None  # (self.model, the FDRLModel in it), see `fdrl_model`
        self.add_callback(DynamicFactorCallback(self))
        self.add_callback(DivergenceGuard(self.args.divergence_factor))
        self.callback_handler.callbacks.insert(0, LastEpochTest(self))  # before KeepBestTrainable restores

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        if hasattr(self.compute_metrics, "reference"):
            self.compute_metrics.reference = self.training_representations()
        return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)

    def training_representations(self):
        """(S_a, S_t, labels) as numpy arrays of at most `alignment_train_samples` training utterances (a subset
        fixed by the seed), from the current model in eval mode; None without a training set or with 0 samples.
        On cached pooled features the subset is collated once per trainer and runs as one batch; raw speech and text
        run in evaluation batches."""
        batches = self._reference_batches()
        if batches is None:
            return None
        model, was_training = self.model, self.model.training
        model.eval()
        audio, text, labels = [], [], []
        with torch.no_grad():
            for batch in batches:
                batch = self._prepare_inputs(dict(batch))  # a copy: the cached batch keeps its labels
                labels.append(batch.pop("labels").cpu())
                outputs = model(**batch)
                audio.append(outputs.shared_audio.float().cpu())
                text.append(outputs.shared_text.float().cpu())
        model.train(was_training)
        return torch.cat(audio).numpy(), torch.cat(text).numpy(), torch.cat(labels).numpy()

    def _reference_batches(self):
        """The batches of the fixed training subset of `training_representations`: kept as one collated batch for
        cached pooled features, a fresh loader (decoding as it goes) otherwise; None with fewer than 2 rows."""
        if self._reference_cache is not None:
            return self._reference_cache
        count = min(self.args.alignment_train_samples, len(self.train_dataset) if self.train_dataset else 0)
        if count <= 1:
            return None
        rows = np.sort(np.random.default_rng(self.args.seed).permutation(len(self.train_dataset))[:count])
        dataset = self.train_dataset
        subset = dataset.select(rows) if hasattr(dataset, "select") else [dataset[int(i)] for i in rows]
        if isinstance(subset, list) and "pooled_audio" in subset[0]:  # vectors: collated once, one forward
            self._reference_cache = [self.data_collator(subset)]
            return self._reference_cache
        return torch.utils.data.DataLoader(
            subset, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator
        )

    @property
    def fdrl_model(self):
        """The FDRLModel inside `self.model` (unwrapped once per wrapper: `unwrap_model` costs about 0.1 ms, and
        every training step asks for it)."""
        if self._unwrapped is None or self._unwrapped[0] is not self.model:
            self._unwrapped = (self.model, self.accelerator.unwrap_model(self.model))
        return self._unwrapped[1]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.fdrl_model.set_training_progress(self.state.global_step / max(self.state.max_steps, 1))
        outputs = model(**inputs)
        if model.training:
            self._accumulate(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        predictions = (outputs.logits.detach(), outputs.shared_audio.detach(), outputs.shared_text.detach())
        return loss, predictions, inputs.get("labels")

    def _accumulate(self, outputs):
        for term in LOSS_TERMS:
            self._term_sums[term] = self._term_sums.get(term, 0.0) + outputs[term].detach().float()
        self._term_steps += 1
        for key in STAT_KEYS:
            self._epoch_stats[key] = self._epoch_stats.get(key, 0.0) + outputs[key].detach().double()

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._term_steps:
            means = torch.stack([self._term_sums[t] for t in LOSS_TERMS]) / self._term_steps
            means = self.accelerator.reduce(means.to(self.accelerator.device), "mean")
            logs.update({term: round(float(v), 6) for term, v in zip(LOSS_TERMS, means)})
            logs["dynamic_factor"] = round(float(self.fdrl_model.dynamic_factor), 6)
            logs["grl_coefficient"] = round(float(self.fdrl_model.grl_coefficient), 6)
            self._term_sums, self._term_steps = {}, 0
        super().log(logs, *args, **kwargs)

    def end_epoch(self):
        """Sum the epoch's statistics over processes and update mu; every process computes the same value. Logs mu
        with the raw error rates (global and per class) it came from."""
        if not self._epoch_stats:
            return None
        stats = {
            k: self.accelerator.reduce(v.to(self.accelerator.device), "sum").cpu() for k, v in self._epoch_stats.items()
        }
        self._epoch_stats = {}
        summary = self.fdrl_model.end_epoch(stats)
        self.log({key: round(float(value), 6) for key, value in summary.items()})
        return summary["dynamic_factor"]

    def save_epoch_statistics(self, checkpoint_dir):
        """What this process has accumulated of the current epoch, so a resumed run continues it exactly."""
        stats = {k: v.tolist() for k, v in self._epoch_stats.items()}
        path = Path(checkpoint_dir) / EPOCH_STATS_FILE.format(rank=self.args.process_index)
        path.write_text(json.dumps(stats))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint:
            path = Path(resume_from_checkpoint) / EPOCH_STATS_FILE.format(rank=self.args.process_index)
            if path.is_file():
                self._epoch_stats = {
                    k: torch.tensor(v, dtype=torch.float64) for k, v in json.loads(path.read_text()).items()
                }
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


class DynamicFactorCallback(TrainerCallback):
    """Updates mu at each epoch's end (before the end-of-epoch evaluation) and saves partial epoch statistics."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.end_epoch()

    def on_save(self, args, state, control, **kwargs):
        checkpoint_dir = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(checkpoint_dir):
            self.trainer.save_epoch_statistics(checkpoint_dir)


class DivergenceGuard(TrainerCallback):
    """Warns once when the mean norm of the shared vectors S_a, S_t has grown by more than `factor` since the first
    evaluation (`eval_alignment_norm_growth`): the adversarial game is diverging (docs/design.md)."""

    def __init__(self, factor=50.0):
        self.factor = float(factor)
        self.fired = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.fired = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        growth = (metrics or {}).get("eval_alignment_norm_growth")
        if self.fired or growth is None or growth <= self.factor:  # NaN and inf fire too
            return
        self.fired = True
        logger.warning(
            f"epoch {state.epoch:g}: the shared vectors S_a, S_t have grown {growth:.3g}x in mean norm since the "
            f"first evaluation (more than --divergence_factor {self.factor:g}): the adversarial alignment is "
            f"diverging, and S_a, S_t are likely drifting apart. Use --adversarial_objective confusion, a smaller "
            f"--adversarial_learning_rate or --learning_rate, or --shared_normalization layer_norm."
        )


class LastEpochTest(TrainerCallback):
    """When training ends, before the kept model is restored: tests the last epoch's model on the trainer's
    `last_epoch_dataset` (metrics prefixed `last_test_`), and records the largest mean norm of S_a, S_t and its
    growth over the evaluations (`max_eval_alignment_norm`, `max_eval_alignment_norm_growth`)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_end(self, args, state, control, **kwargs):
        trainer, results = self.trainer, {}
        for key in ("eval_alignment_norm", "eval_alignment_norm_growth"):
            values = [entry[key] for entry in state.log_history if key in entry]
            if values:
                results[f"max_{key}"] = float(max(values))
        if trainer.last_epoch_dataset is not None:
            output = trainer.predict(trainer.last_epoch_dataset, metric_key_prefix="last_test")
            results.update(
                {
                    k: v
                    for k, v in output.metrics.items()
                    if k.startswith("last_test_") and not k.endswith(("_runtime", "_per_second"))
                }
            )
        trainer.last_epoch_metrics = results


class EarlyStopping(EarlyStoppingCallback):
    """transformers' `EarlyStoppingCallback`, also where `KeepBestTrainable` (heads on cached features) restores the
    best model instead of `load_best_model_at_end`: there, no warning that the best model will not be loaded (it is).
    What the parent asserts at the start of training, `FDRLTrainingArguments` checks when the arguments are parsed."""

    def on_train_begin(self, args, state, control, **kwargs):
        if args.load_best_model_at_end:
            super().on_train_begin(args, state, control, **kwargs)


def system_callbacks(args, frozen):
    """The callbacks of one system's Trainer: early stopping when `args.early_stopping_patience` asks for it, and
    `KeepBestTrainable` for heads on cached features (`frozen`). Both compare the evaluation with
    `state.best_metric`, the best before it (Trainer raises it after the callbacks), so their order does not
    matter."""
    callbacks = []
    if args.early_stopping_patience:
        callbacks.append(EarlyStopping(args.early_stopping_patience))
    if frozen:
        callbacks.append(KeepBestTrainable())
    return callbacks


class KeepBestTrainable(TrainerCallback):
    """Model selection without checkpoints, for heads trained on cached backbone outputs: after each evaluation, a
    copy of the trainable parameters (the heads, a few MB) and of the buffers (mu) is kept in memory when
    `metric_for_best_model` improves on `state.best_metric`, and restored when training ends. Writing the frozen
    backbones to disk every epoch would cost far more than the training itself. The best value itself is
    Trainer's: it raises `state.best_metric` right after the callbacks (`_determine_best_metric`, the same
    comparison), as it does for `load_best_model_at_end`."""

    def __init__(self):
        self.best_state, self.best_buffers = None, None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        key = (
            args.metric_for_best_model
            if args.metric_for_best_model.startswith("eval_")
            else f"eval_{args.metric_for_best_model}"
        )
        value = (metrics or {}).get(key)
        if value is None or model is None:
            return
        improves = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or improves(value, state.best_metric):
            self.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            self.best_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.best_state is None or model is None:
            return
        parameters, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        with torch.no_grad():
            for name, value in self.best_state.items():
                parameters[name].copy_(value)
            for name, value in self.best_buffers.items():  # mu as it was at the best epoch
                buffers[name].copy_(value)
