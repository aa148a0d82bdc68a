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

from dataclasses import dataclass, field

import torch
from torch import nn

from configuration_fdrl import FDRLConfig
from modeling_fdrl import FDRLModel


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "fdrl", "speech", "text", "concat" or "late_fusion"
    description: str
    config_overrides: dict = field(default_factory=dict)


SYSTEMS = {system.name: system for system in (
    System("S0", "fdrl", "FDRL (full)"),
    System("S1", "fdrl", "w/o alignment and disparity (alpha = beta = 0)", dict(alpha=0.0, beta=0.0)),
    System("S2", "fdrl", "w/o global discriminator", dict(use_global_discriminator=False)),
    System("S3", "fdrl", "w/o local discriminators", dict(use_local_discriminators=False)),
    System("S4", "fdrl", "fusion over P_a, P_t only", dict(fusion_inputs="private")),
    System("S5", "fdrl", "fusion over S_a, S_t only", dict(fusion_inputs="shared")),
    System("S6", "fdrl", "w/o fine-grained predictor (gamma = 0)", dict(gamma=0.0)),
    System("speech", "speech", "speech only (backbone + linear)"),
    System("text", "text", "text only (backbone + linear)"),
    System("concat", "concat", "concatenated pooled backbones + linear"),
    System("late_fusion", "late_fusion", "sum of the speech and text log-probabilities (no training)"),
)}
DESCRIPTIONS = {name: system.description for name, system in SYSTEMS.items()}


def resolve_systems(names):
    """The `System`s for `names`, in order, with `speech` and `text` added before `late_fusion` if missing (it is
    computed from them). Unknown names are an error that lists the known ones."""
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems: unknown system(s) {unknown}; known: {list(SYSTEMS)}")
    names = list(names)
    if "late_fusion" in names:
        names = [n for n in ("speech", "text") if n not in names] + names
    return [SYSTEMS[name] for name in names]


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
        width = sum(m.config.hidden_size for m in (audio_model, text_model) if m is not None)
        self.dropout = nn.Dropout(fdrl_config.classifier_dropout)
        self.classifier = nn.Linear(width, fdrl_config.num_labels)
        nn.init.normal_(self.classifier.weight, std=fdrl_config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_values=None, audio_attention_mask=None, input_ids=None, text_attention_mask=None,
                token_type_ids=None, pooled_audio=None, pooled_text=None, labels=None, input_features=None):
        pooled = []
        if self.audio_model is not None:
            if pooled_audio is None:
                speech = input_values if input_values is not None else input_features  # wav2vec2 / Whisper
                pooled_audio = self.encode_audio(speech, audio_attention_mask)
            pooled.append(pooled_audio)
        if self.text_model is not None:
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
    kwargs = {**config_kwargs, **system.config_overrides}
    if system.kind == "fdrl":
        return FDRLModel.from_encoders_pretrained(audio_model, text_model, **kwargs)
    config = FDRLConfig(audio_config=audio_model.config, text_config=text_model.config, **kwargs)
    if system.kind == "speech":
        return BackboneClassifier(config, audio_model=audio_model)
    if system.kind == "text":
        return BackboneClassifier(config, text_model=text_model)
    if system.kind == "concat":
        return BackboneClassifier(config, audio_model=audio_model, text_model=text_model)
    raise ValueError(f"system {system.name!r} ({system.kind}) is not trained")
