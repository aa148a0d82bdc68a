"""The named systems the protocol trains and tests on the same folds, seeds and backbones.

| name | what it is |
| --- | --- |
| S0 | FDRL, every term (eq. 15) |
| S1-S6 | the paper's ablations (Table 2), each one FDRLConfig change |
| speech | the speech backbone, masked mean pooling, dropout, one linear layer |
| text | the same for the text backbone |
| concat | both pooled backbones concatenated, dropout, one linear layer (early fusion) |
| late_fusion | no training: log p(y|speech) + log p(y|text) from the speech and text systems |

S4 and S5: the paper's text says they keep every loss and fuse only part of the representations; we read S4 as
fusion over the private representations P_a, P_t only and S5 over the shared S_a, S_t only (docs/design.md).
"""

import collections
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from configuration_fdrl import FDRLConfig
from fdrl.evaluation.metrics import classification_metrics, fdrl_metrics, trainer_metrics
from modeling_fdrl import FDRLModel, draw_random_backbones, speech_backbone

from .trainer import FDRLTrainer, SystemTrainer


def _fdrl_model(system, config_kwargs, audio_model, text_model):
    return FDRLModel.from_encoders_pretrained(
        audio_model, text_model, draw_backbones=backbone_draws, **{**config_kwargs, **system.config_overrides}
    )


class BackboneDraws:
    """The random backbones' draws of `FDRLModel.from_encoders_pretrained`, paid once per random state.

    FDRL draws its heads after the random backbones that `FDRLModel(config)` builds (`draw_random_backbones`):
    those draws (about 0.4 s for Whisper-base + MiniLM, 5% of an FDRL system trained on cached features) only move
    the random state the heads start from, and they depend on nothing but that state and the backbones' configs.
    A protocol builds from the same state again and again (each system calls `set_seed(seed)` first, every
    FDRL system of a seed and the five folds share it). So the first build from a (random state, backbone configs)
    draws them and keeps the state they end in; a later one sets that state instead. The heads, the backbones and
    every later draw are bit for bit those of a full build (tests/test_systems.py). Keyed on the CPU generator's
    state (all a CPU build draws from), the default dtype and the backbones' configs; the `kept` latest keys are
    kept. Builds on another default device draw as usual.
    """

    def __init__(self, kept=32):
        self.kept = kept
        self.states = collections.OrderedDict()  # key -> CPU random state after the draws
        self.draws = 0  # the draws paid in this process

    def __call__(self, config):
        if torch.get_default_device().type != "cpu":
            draw_random_backbones(config)
            return
        state = torch.get_rng_state()
        key = (
            hashlib.sha256(state.numpy()).digest(),
            str(torch.get_default_dtype()),
            config.audio_config.to_json_string(),
            config.text_config.to_json_string(),
        )
        if key in self.states:
            self.states.move_to_end(key)
            torch.set_rng_state(self.states[key])
            return
        draw_random_backbones(config)
        self.draws += 1
        self.states[key] = torch.get_rng_state()
        while len(self.states) > self.kept:
            self.states.popitem(last=False)


backbone_draws = BackboneDraws()  # this process's builds of FDRL systems


def _classifier(audio=False, text=False):
    """`build` of a baseline reading the speech backbone, the text backbone or both."""

    def build(system, config_kwargs, audio_model, text_model):
        config = FDRLConfig(
            audio_config=audio_model.config,
            text_config=text_model.config,
            **{**config_kwargs, **system.config_overrides},
        )
        return BackboneClassifier(
            config, audio_model=audio_model if audio else None, text_model=text_model if text else None
        )

    return build


def _fdrl_test_metrics(trainer, predictions, labels, label_names):
    """FDRL's extra test figure: the final dynamic factor mu (the alignment diagnostics come from the trainer)."""
    return {"dynamic_factor": float(trainer.fdrl_model.dynamic_factor)}


def late_fusion(record, labels, label_names):
    """log p(y|speech) + log p(y|text), the product of the two experts, from the run's speech and text systems."""
    fused = np.asarray(record["speech"]["log_probs"]) + np.asarray(record["text"]["log_probs"])
    metrics = classification_metrics(fused.argmax(-1), labels, label_names)
    metrics["log_probs"] = np.round(fused, 6).tolist()
    return metrics


@dataclass(frozen=True)
class System:
    """One named system and everything the protocol needs to know about it.

    Args:
        name: the name on the command line (`--systems`) and in the results.
        description: one line for the results table and the model card.
        build: `build(system, config_kwargs, audio_model, text_model)` -> a fresh model around the backbones; None
            for a system that is not trained but computed from others (`combine`).
        modalities: the inputs the data collator hands the model ("audio", "text").
        trainer_class: the `Trainer` subclass that trains it.
        metrics: `metrics(label_names)` -> the trainer's `compute_metrics`.
        test_metrics: `test_metrics(trainer, predictions, labels, label_names)` -> extra test figures, or None.
        unimodal: trained with `--unimodal_epochs` / `--unimodal_learning_rate` when they are given.
        is_fdrl: an FDRL model: its training curves are plotted, and it may be the run's reference.
        combine: `combine(record, labels, label_names)` -> test metrics from the record of systems already run.
        requires: systems `combine` reads; added before this one when not asked for.
        config_overrides: FDRLConfig fields this system changes (the ablations).
    """

    name: str
    description: str
    build: Optional[Callable] = None
    modalities: tuple = ("audio", "text")
    trainer_class: type = SystemTrainer
    metrics: Callable = trainer_metrics
    test_metrics: Optional[Callable] = None
    unimodal: bool = False
    is_fdrl: bool = False
    combine: Optional[Callable] = None
    requires: tuple = ()
    config_overrides: dict = field(default_factory=dict)

    @property
    def trains(self):
        return self.build is not None


def fdrl_system(name, description, **config_overrides):
    """An FDRL system: the full model (S0) or one ablation (S1-S6), one FDRLConfig change each."""
    return System(
        name,
        description,
        build=_fdrl_model,
        trainer_class=FDRLTrainer,
        metrics=fdrl_metrics,
        test_metrics=_fdrl_test_metrics,
        is_fdrl=True,
        config_overrides=config_overrides,
    )


SYSTEMS = {
    system.name: system
    for system in (
        fdrl_system("S0", "FDRL (full)"),
        fdrl_system("S1", "w/o alignment and disparity (alpha = beta = 0)", alpha=0.0, beta=0.0),
        fdrl_system("S2", "w/o global discriminator", use_global_discriminator=False),
        fdrl_system("S3", "w/o local discriminators", use_local_discriminators=False),
        fdrl_system("S4", "fusion over P_a, P_t only", fusion_inputs="private"),
        fdrl_system("S5", "fusion over S_a, S_t only", fusion_inputs="shared"),
        fdrl_system("S6", "w/o fine-grained predictor (gamma = 0)", gamma=0.0),
        System(
            "speech",
            "speech only (backbone + linear)",
            build=_classifier(audio=True),
            modalities=("audio",),
            unimodal=True,
        ),
        System(
            "text", "text only (backbone + linear)", build=_classifier(text=True), modalities=("text",), unimodal=True
        ),
        System("concat", "concatenated pooled backbones + linear", build=_classifier(audio=True, text=True)),
        System(
            "late_fusion",
            "sum of the speech and text log-probabilities (no training)",
            combine=late_fusion,
            requires=("speech", "text"),
        ),
    )
}
DESCRIPTIONS = {name: system.description for name, system in SYSTEMS.items()}


def resolve_systems(names):
    """The `System`s for `names`, in order, with the systems a computed one requires (`speech` and `text` for
    `late_fusion`) added before it if missing. Unknown names are an error that lists the known ones."""
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems: unknown system(s) {unknown}; known: {list(SYSTEMS)}")
    names = list(names)
    required = [r for name in names for r in SYSTEMS[name].requires if r not in names]
    names = list(dict.fromkeys(required)) + names
    return [SYSTEMS[name] for name in names]


def reference_system(systems):
    """The reference of the paired differences, and the model the Hub folder holds: S0, else the first FDRL
    system (None without one)."""
    names = [s.name for s in systems]
    return "S0" if "S0" in names else next((s.name for s in systems if s.is_fdrl), None)


class BackboneClassifier(nn.Module):
    """The baselines: one or both backbones pooled exactly as FDRL pools them (`FDRLModel.encode_audio` /
    `encode_text`), concatenated, dropout, one linear layer. Given `pooled_audio` / `pooled_text` (cached backbone
    outputs), the backbones are skipped."""

    encode_audio = FDRLModel.encode_audio  # the very same pooling code path as FDRL
    encode_text = FDRLModel.encode_text

    def __init__(self, fdrl_config, audio_model=None, text_model=None):
        super().__init__()
        if audio_model is None and text_model is None:
            raise ValueError("BackboneClassifier needs at least one of `audio_model` and `text_model`")
        self.config = fdrl_config
        self.audio_model, self.text_model = audio_model, text_model
        # what it reads, fixed here: on cached features the backbones are detached while the head trains
        self.reads_audio, self.reads_text = audio_model is not None, text_model is not None
        width = sum(m.config.hidden_size for m in (audio_model, text_model) if m is not None)
        self.dropout = nn.Dropout(fdrl_config.classifier_dropout)
        self.classifier = nn.Linear(width, fdrl_config.num_labels)
        nn.init.normal_(self.classifier.weight, std=fdrl_config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(
        self,
        input_values=None,
        audio_attention_mask=None,
        input_ids=None,
        text_attention_mask=None,
        token_type_ids=None,
        pooled_audio=None,
        pooled_text=None,
        labels=None,
        input_features=None,
    ):
        pooled = []
        if self.reads_audio:
            if pooled_audio is None:
                speech = {"input_values": input_values, "input_features": input_features}[
                    speech_backbone(self.audio_model.config).input_name
                ]
                pooled_audio = self.encode_audio(speech, audio_attention_mask)
            pooled.append(pooled_audio)
        if self.reads_text:
            if pooled_text is None:
                pooled_text = self.encode_text(input_ids, text_attention_mask, token_type_ids)
            pooled.append(pooled_text)
        logits = self.classifier(self.dropout(torch.cat(pooled, dim=-1)))  # (batch, num_labels)
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits.float(), labels), "logits": logits}


def build_system_model(system, config_kwargs, audio_model, text_model):
    """A fresh model of `system` around the given backbones. `config_kwargs` are the FDRLConfig fields of the run
    (`id2label`, `hidden_size`, ...); the system's own overrides go on top."""
    if not system.trains:
        raise ValueError(f"system {system.name!r} is not trained")
    return system.build(system, config_kwargs, audio_model, text_model)
