"""FDRLTrainer: the multi-term objective (eq. 15) with Trainer, the dynamic factor's epoch updates, and the collator."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint
from transformers.utils import logging

from modeling_fdrl import pool_audio, pool_text


logger = logging.get_logger(__name__)

LOSS_TERMS = ("loss_task", "loss_global", "loss_local", "loss_modality", "loss_orthogonal", "loss_predictor")
STAT_KEYS = ("global_errors", "global_count", "global_loss_sum", "local_errors", "local_counts", "local_loss_sums")
EPOCH_STATS_FILE = "fdrl_epoch_statistics_rank{rank}.json"


@dataclass
class FDRLTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults (AdamW, lr 1e-5, batch 8, up to 100 epochs), model selection on
    validation UAR, and the leave-one-session-out protocol."""

    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (paper: 1e-5)."})
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
    test_session: Optional[int] = field(
        default=None, metadata={"help": "Run one fold: hold this session out for testing."}
    )
    folds: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated test sessions, e.g. '1,2,3,4,5' (leave-one-session-out)."}
    )
    seeds: Optional[str] = field(default=None, metadata={"help": "Comma-separated seeds; every fold runs per seed."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Stratified share of the training sessions held out for model selection."}
    )
    # ----- warm start of small random backbones (the demo) -----
    pretrain_audio_epochs: float = field(
        default=0.0, metadata={"help": "First train the speech backbone alone for N epochs (stands in for pretraining)."}
    )
    pretrain_text_epochs: float = field(
        default=0.0, metadata={"help": "First train the text backbone alone for N epochs (stands in for pretraining)."}
    )
    pretrain_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of that warm start."})
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "Keep each fold's checkpoints after it finished (the best model is saved)."}
    )

    def fold_list(self):
        """The test sessions to run, from `folds` or `test_session`."""
        if self.folds:
            try:
                return [int(f) for f in str(self.folds).split(",") if f.strip()]
            except ValueError:
                raise ValueError(f"--folds must be comma-separated session numbers, got {self.folds!r}") from None
        if self.test_session is None:
            raise ValueError("Give --test_session N (one fold) or --folds 1,2,3,4,5 (the protocol)")
        return [int(self.test_session)]

    def seed_list(self):
        if not self.seeds:
            return [self.seed]
        try:
            return [int(s) for s in str(self.seeds).split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {self.seeds!r}") from None


@dataclass
class FDRLDataCollator:
    """Decodes audio, runs the processor on a batch, and adds `labels`.

    Examples carry `audio` (a decoded `datasets.Audio` value: `{"array", "sampling_rate"}` or a decoder), `text`
    and `label`. `modalities` limits the work to what a single-modality model reads.
    """

    processor: Any
    max_text_length: int = 128
    modalities: tuple = ("audio", "text")

    def __call__(self, examples):
        kwargs = {}
        if "audio" in self.modalities:
            arrays, rates = zip(*(_decode(ex["audio"], ex.get("id", i)) for i, ex in enumerate(examples)))
            kwargs.update(audio=list(arrays), sampling_rate=list(rates))
        if "text" in self.modalities:
            kwargs.update(text=[example["text"] for example in examples], truncation=True,
                          max_length=self.max_text_length)
        batch = self.processor(**kwargs)
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([example["label"] for example in examples], dtype=torch.long)
        return batch


def _decode(audio, name):
    try:
        if hasattr(audio, "get_all_samples"):  # torchcodec AudioDecoder (datasets 5)
            samples = audio.get_all_samples()
            return samples.data.numpy(), int(samples.sample_rate)
        return np.asarray(audio["array"]), int(audio["sampling_rate"])
    except Exception as error:
        raise ValueError(f"could not decode the audio of example {name!r}: {error}") from error


class FDRLTrainer(Trainer):
    """`Trainer` whose `compute_loss` is FDRL's eq. 15, with every term, the dynamic factor and the GRL coefficient
    in the logs (averaged over processes). The GRL coefficient follows training progress; the dynamic factor is
    updated at each epoch's end from the whole epoch's discriminator statistics, summed over all processes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._term_sums, self._term_steps = {}, 0
        self._epoch_stats = {}
        self.add_callback(DynamicFactorCallback(self))

    @property
    def fdrl_model(self):
        return self.accelerator.unwrap_model(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.fdrl_model.set_training_progress(self.state.global_step / max(self.state.max_steps, 1))
        outputs = model(**inputs)
        if model.training:
            self._accumulate(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

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
        """Sum the epoch's statistics over processes and update mu; every process computes the same value."""
        if not self._epoch_stats:
            return None
        stats = {k: self.accelerator.reduce(v.to(self.accelerator.device), "sum").cpu() for k, v in self._epoch_stats.items()}
        self._epoch_stats = {}
        mu = self.fdrl_model.update_dynamic_factor(stats)
        entry = {
            "dynamic_factor_update": round(mu, 6),
            "global_discriminator_error": round(float(stats["global_errors"] / stats["global_count"]), 6),
        }
        if float(stats["local_counts"].sum()) > 0:
            entry["local_discriminator_error"] = round(float(stats["local_errors"].sum() / stats["local_counts"].sum()), 6)
        self.log(entry)
        return mu

    def save_epoch_statistics(self, checkpoint_dir):
        """What this process has accumulated of the current epoch, so a resumed run continues it exactly."""
        stats = {k: v.tolist() for k, v in self._epoch_stats.items()}
        path = Path(checkpoint_dir) / EPOCH_STATS_FILE.format(rank=self.args.process_index)
        path.write_text(json.dumps(stats))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint:
            path = Path(resume_from_checkpoint) / EPOCH_STATS_FILE.format(rank=self.args.process_index)
            if path.is_file():
                self._epoch_stats = {k: torch.tensor(v, dtype=torch.float64) for k, v in json.loads(path.read_text()).items()}
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


class UnimodalClassifier(nn.Module):
    """One backbone, masked mean pooling and a linear classifier: the single-modality baseline, and the warm start
    that stands in for pretraining when the backbones begin from random weights."""

    def __init__(self, backbone, modality, num_labels, dropout=0.1):
        super().__init__()
        if modality not in ("audio", "text"):
            raise ValueError(f"modality must be 'audio' or 'text', got {modality!r}")
        self.backbone, self.modality = backbone, modality
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.config.hidden_size, num_labels)

    def forward(self, input_values=None, audio_attention_mask=None, input_ids=None, text_attention_mask=None,
                token_type_ids=None, labels=None, input_features=None):
        if self.modality == "audio":  # input_features: a Whisper backbone's log-mel
            speech = input_values if input_values is not None else input_features
            pooled = pool_audio(self.backbone, speech, audio_attention_mask)
        else:
            pooled = pool_text(self.backbone, input_ids, text_attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits.float(), labels), "logits": logits}
