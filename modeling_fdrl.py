"""FDRL: Fine-grained Disentangled Representation Learning for Multimodal Emotion Recognition (ICASSP 2024).

Equation numbers refer to the paper; `FDRLConfig`'s docstring records the decisions the paper leaves open.
"""

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from transformers import AutoModel, PreTrainedModel, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput, logging


try:
    from .configuration_fdrl import FDRLConfig
except ImportError:
    from configuration_fdrl import FDRLConfig


logger = logging.get_logger(__name__)

AUDIO_LABEL, TEXT_LABEL = 0, 1  # the modality label y_m


@dataclass
class FDRLOutput(ModelOutput):
    """
    Output of [`FDRLModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned with `labels`): the total loss, eq. 15.
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`): the fusion's emotion logits, eq. 14.
        loss_task, loss_global, loss_local, loss_modality, loss_orthogonal, loss_predictor (`torch.FloatTensor`):
            L_task (eq. 14), L_g (eq. 4), L_l (eq. 5), L_p (eq. 9), L_d (eq. 10) and L_f (eq. 11), unweighted;
            0 where the term is switched off. L_g and L_l are the discriminators' own cross-entropies.
        loss_confusion (`torch.FloatTensor`):
            Under `adversarial_objective="confusion"`, the shared encoder's term (1 - mu) C_g + mu C_l: the
            cross-entropy of the (frozen) discriminators' outputs against the uniform 50/50 target; 0 under
            `"reversal"`.
        shared_audio, shared_text, private_audio, private_text (`torch.FloatTensor` of shape `(batch, hidden)`):
            S_a, S_t, P_a, P_t (eq. 3).
        global_errors, global_count, global_loss_sum (`torch.FloatTensor` of shape `()`):
            Misclassified samples, samples (2 x batch) and summed cross-entropy of the global discriminator.
        local_errors, local_counts, local_loss_sums (`torch.FloatTensor` of shape `(num_labels,)`):
            The same for each class's local discriminator, each sample weighted by its class weight y_i^c under
            `local_error_rate="weighted"`: sum_i y_i^c err_i^c, sum_i y_i^c and sum_i y_i^c CE_i. All six are sums,
            so summed over an epoch (and over processes) they give the epoch's rates, and the dynamic factor, exactly.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    loss_task: Optional[torch.FloatTensor] = None
    loss_global: Optional[torch.FloatTensor] = None
    loss_local: Optional[torch.FloatTensor] = None
    loss_modality: Optional[torch.FloatTensor] = None
    loss_orthogonal: Optional[torch.FloatTensor] = None
    loss_predictor: Optional[torch.FloatTensor] = None
    loss_confusion: Optional[torch.FloatTensor] = None
    shared_audio: Optional[torch.FloatTensor] = None
    shared_text: Optional[torch.FloatTensor] = None
    private_audio: Optional[torch.FloatTensor] = None
    private_text: Optional[torch.FloatTensor] = None
    global_errors: Optional[torch.FloatTensor] = None
    global_count: Optional[torch.FloatTensor] = None
    global_loss_sum: Optional[torch.FloatTensor] = None
    local_errors: Optional[torch.FloatTensor] = None
    local_counts: Optional[torch.FloatTensor] = None
    local_loss_sums: Optional[torch.FloatTensor] = None


# The loss terms are FDRLOutput's `loss_*` fields: one source of truth for logs, plots and tests.
LOSS_TERMS = tuple(f.name for f in fields(FDRLOutput) if f.name.startswith("loss_"))


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -coefficient backward (DANN)."""

    @staticmethod
    def forward(ctx, hidden_states, coefficient):
        ctx.coefficient = coefficient
        return hidden_states.view_as(hidden_states)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.coefficient * grad_output, None


def grad_reverse(hidden_states, coefficient):
    return GradientReversal.apply(hidden_states, coefficient)


def grl_coefficient_at(progress, schedule="dann", scale=1.0):
    """The reversal coefficient at training progress `progress` in [0, 1] (DANN: 2 / (1 + exp(-10 p)) - 1)."""
    if schedule == "constant":
        return float(scale)
    progress = min(max(float(progress), 0.0), 1.0)
    return float(scale) * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class FDRLEncoder(nn.Module):
    """E_s, E_a or E_t (eq. 3): Linear -> ReLU -> Linear; with `normalization="layer_norm"`, a LayerNorm without
    learnt scale at the output, so every vector has norm sqrt(d) (E_s under `shared_normalization`, MISA)."""

    def __init__(self, config, input_size, normalization="none"):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        bounded = normalization == "layer_norm"
        self.norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False) if bounded else None

    def forward(self, hidden_states):
        hidden_states = self.out(F.relu(self.dense(hidden_states)))
        return hidden_states if self.norm is None else self.norm(hidden_states)


class FDRLDiscriminator(nn.Module):
    """A two-layer perceptron over d that tells speech (0) from text (1): G_d, G_d^c and GD; `dropout` after the
    hidden layer (the alignment discriminators', `discriminator_dropout`, as in DAAN's code)."""

    def __init__(self, config, dropout=0.0):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.discriminator_hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(config.discriminator_hidden_size, 2)

    def forward(self, hidden_states):
        return self.out(self.dropout(F.relu(self.dense(hidden_states))))


class FDRLFusion(nn.Module):
    """Cross-modal fusion (eq. 12-14): self-attention over the stacked representations, then a classifier."""

    def __init__(self, config):
        super().__init__()
        num_inputs = 4 if config.fusion_inputs == "all" else 2
        self.attention = nn.MultiheadAttention(config.hidden_size, config.fusion_num_heads, batch_first=True)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(num_inputs * config.hidden_size, config.num_labels)

    def forward(self, representations):
        fused = torch.stack(representations, dim=1)  # (batch, num_inputs, hidden)
        fused, _ = self.attention(fused, fused, fused, need_weights=False)  # Q = K = V = F
        fused = fused.flatten(1)  # (batch, num_inputs * hidden)
        return self.classifier(self.dropout(fused))


class FDRLWhisperEncoder(WhisperEncoder):
    """Whisper's encoder on the batch's own length instead of a 30 s window, with padded frames masked.

    Whisper's encoder insists on 3000 mel frames (30 s) and attends over all of them. This one takes any length up
    to that (the processor pads a batch to its longest clip, rounded up to a whole second) and adds the first
    `frames` rows of the 1500-row position table, the rows those frames get in a 30 s window; the checkpoint keeps
    all 1500. Padded frames are masked out of every self-attention layer, so an utterance alone and padded in a
    batch give the same states on its frames. Weights and names are WhisperEncoder's: a Whisper checkpoint's
    encoder loads into it unchanged.
    """

    def forward(self, input_features, attention_mask=None):
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, num_mel_bins, mel frames)`): log-mel features.
            attention_mask (`torch.LongTensor` of shape `(batch, mel frames)`, *optional*): 1 on real mel frames.
        """
        hidden_states = F.gelu(self.conv1(input_features))
        hidden_states = F.gelu(self.conv2(hidden_states)).transpose(1, 2)  # (batch, frames, d_model)
        frames = hidden_states.shape[1]
        if frames > self.embed_positions.num_embeddings:
            raise ValueError(
                f"`input_features` of {input_features.shape[-1]} mel frames give {frames} encoder frames, more than "
                f"Whisper's {self.embed_positions.num_embeddings} positions (30 s)"
            )
        hidden_states = hidden_states + self.embed_positions.weight[:frames]
        hidden_states = F.dropout(hidden_states, p=self.dropout, training=self.training)
        frame_mask = None if attention_mask is None else self._get_feature_vector_attention_mask(frames, attention_mask)
        attention_mask = create_bidirectional_mask(self.config, hidden_states, frame_mask)  # per implementation
        for layer in self.layers:
            if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                continue
            hidden_states = layer(hidden_states, attention_mask)
        return BaseModelOutput(last_hidden_state=self.layer_norm(hidden_states))

    def _get_feature_vector_attention_mask(self, frames, attention_mask):
        """(batch, mel frames) mask -> (batch, frames) mask of the encoder frames that cover real input."""
        lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1))  # the stride-2 convolution
        return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]

    def freeze_feature_encoder(self):
        """Freeze the two convolutions that turn the log-mel spectrogram into frames (wav2vec2's CNN, here)."""
        self.conv1.requires_grad_(False)
        self.conv2.requires_grad_(False)


# ----- the speech backbones -------------------------------------------------------------------------------------------
SAMPLING_RATE = 16000  # every speech backbone here reads 16 kHz audio


def conv_receptive_field(audio_config):
    """The fewest samples from which a wav2vec2-family convolutional front end produces one frame; one 20 ms frame
    for a config without one."""
    kernels, strides = getattr(audio_config, "conv_kernel", None), getattr(audio_config, "conv_stride", None)
    if not (kernels and strides):
        return int(0.02 * SAMPLING_RATE)
    length = 1
    for kernel, stride in reversed(list(zip(kernels, strides))):
        length = (length - 1) * stride + kernel
    return length


def _whisper_encoder(model):
    """A Whisper model (WhisperModel, WhisperForConditionalGeneration, WhisperEncoder) -> its encoder as an
    [`FDRLWhisperEncoder`] holding the same weights."""
    if isinstance(model, FDRLWhisperEncoder):
        return model
    encoder = model if isinstance(model, WhisperEncoder) else model.get_encoder()
    if not isinstance(encoder, WhisperEncoder):
        raise ValueError(f"`audio_model`: no Whisper encoder found in {type(model).__name__}")
    speech = FDRLWhisperEncoder(encoder.config).to(device=encoder.device, dtype=encoder.dtype)
    speech.load_state_dict(encoder.state_dict(), strict=True)
    return speech


def _wav2vec2_feature_extractor(audio_config, sampling_rate, **kwargs):
    return Wav2Vec2FeatureExtractor(
        sampling_rate=sampling_rate, **{"do_normalize": True, "return_attention_mask": True, **kwargs}
    )


def _whisper_feature_extractor(audio_config, sampling_rate, **kwargs):
    return WhisperFeatureExtractor(feature_size=audio_config.num_mel_bins, sampling_rate=sampling_rate, **kwargs)


@dataclass(frozen=True)
class SpeechBackbone:
    """How FDRL builds, loads and feeds one family of speech backbones.

    Args:
        build: `build(audio_config)` -> the encoder with random weights.
        from_loaded: `from_loaded(model)` -> the encoder FDRL holds, from a model `AutoModel.from_pretrained` loaded.
        input_name: the processor's output the encoder reads: `"input_values"` (waveform) or `"input_features"`.
        feature_extractor: `feature_extractor(audio_config, sampling_rate, **kwargs)` -> the feature extractor for a
            backbone not loaded from a folder.
        minimum_samples: `minimum_samples(audio_config)` -> the fewest 16 kHz samples that give one encoder frame.
    """

    build: Callable
    from_loaded: Callable
    input_name: str
    feature_extractor: Callable
    minimum_samples: Callable


# The wav2vec2 family (wav2vec2, HuBERT, WavLM, ...): AutoModel as it is, raw waveform in.
WAVEFORM_BACKBONE = SpeechBackbone(
    build=AutoModel.from_config,
    from_loaded=lambda model: model,
    input_name="input_values",
    feature_extractor=_wav2vec2_feature_extractor,
    minimum_samples=conv_receptive_field,
)
# Backbones that need more than AutoModel, by `model_type`; a new backbone is one entry.
SPEECH_BACKBONES = {
    "whisper": SpeechBackbone(
        build=FDRLWhisperEncoder,
        from_loaded=_whisper_encoder,
        input_name="input_features",
        feature_extractor=_whisper_feature_extractor,
        minimum_samples=lambda config: int(0.02 * SAMPLING_RATE),
    ),  # one 20 ms encoder frame
}


def speech_backbone(audio_config):
    """The [`SpeechBackbone`] entry of a speech config (`None` or an unlisted `model_type`: the wav2vec2 family)."""
    return SPEECH_BACKBONES.get(getattr(audio_config, "model_type", None), WAVEFORM_BACKBONE)


def speech_backbone_from_config(audio_config):
    """The speech backbone FDRL builds from a config, with random weights (Whisper: its encoder alone)."""
    return speech_backbone(audio_config).build(audio_config)


def masked_mean(hidden_states, mask):
    """Mean over the valid positions: (batch, length, dim), (batch, length) -> (batch, dim)."""
    mask = mask.to(hidden_states.dtype).unsqueeze(-1)  # (batch, length, 1)
    return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def pool_audio(audio_model, input_values, audio_attention_mask=None):
    """Masked mean of a speech backbone's last hidden states over the valid frames (eq. 1 -> a vector).

    `input_values` is what the backbone reads: raw speech `(batch, samples)` for the wav2vec2 family, log-mel
    `input_features` `(batch, mel bins, frames)` for [`FDRLWhisperEncoder`]; the mask covers samples or mel frames.
    """
    # Group-norm backbones (wav2vec2-base) were pretrained without a mask; pooling still excludes padding.
    pass_mask = getattr(audio_model.config, "feat_extract_norm", "layer") == "layer"
    outputs = audio_model(input_values, attention_mask=audio_attention_mask if pass_mask else None)
    hidden_states = outputs.last_hidden_state  # (batch, frames, audio hidden)
    if audio_attention_mask is None:
        return hidden_states.mean(1)
    frame_mask = audio_model._get_feature_vector_attention_mask(hidden_states.shape[1], audio_attention_mask)
    return masked_mean(hidden_states, frame_mask)


def pool_text(text_model, input_ids, text_attention_mask=None, token_type_ids=None, pooling="mean"):
    """Masked mean (or first token, `pooling="cls"`) of a text backbone's last hidden states (eq. 2 -> a vector)."""
    if text_attention_mask is None:
        text_attention_mask = torch.ones_like(input_ids)
    kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
    hidden_states = text_model(input_ids, attention_mask=text_attention_mask, **kwargs).last_hidden_state
    if pooling == "cls":
        return hidden_states[:, 0]
    return masked_mean(hidden_states, text_attention_mask)


def modality_terms(logits, num_audio, sample_weights=None):
    """The cross-entropy terms of modality discriminators from their logits: speech (label 0) is the first
    `num_audio` rows, text (label 1) the rest.

    `logits` is `(2 * batch, 2)` for one discriminator, or `(discriminators, 2 * batch, 2)` for several at once.
    Returns, per discriminator, the loss (the mean over each modality's rows, summed over the two modalities), the
    summed per-sample losses and the number of errors; with `sample_weights` (shaped as `logits` without its last
    dimension), the two sums weight each sample (the loss does not).
    """
    targets = torch.full(logits.shape[:-1], TEXT_LABEL, device=logits.device)
    targets[..., :num_audio] = AUDIO_LABEL
    per_sample = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    loss = per_sample[..., :num_audio].mean(-1) + per_sample[..., num_audio:].mean(-1)
    errors = (logits.argmax(-1) != targets).float()
    if sample_weights is None:
        return loss, per_sample.sum(-1).detach(), errors.sum(-1)
    sample_weights = sample_weights.detach().float()
    return loss, (sample_weights * per_sample).sum(-1).detach(), (sample_weights * errors).sum(-1)


def modality_cross_entropy(discriminator, audio, text, sample_weights=None):
    """CE of a modality discriminator on speech (label 0) and text (label 1) inputs, each over its batch.

    Returns the loss summed over the two modalities, the summed per-sample losses and the number of errors; with
    `sample_weights` (shape `(2 * batch,)`, speech first), the two sums weight each sample (the loss does not).
    """
    return modality_terms(discriminator(torch.cat([audio, text])), audio.shape[0], sample_weights)


def confusion_terms(logits, num_audio):
    """The domain-confusion cross-entropy from discriminator logits (see `modality_confusion`): against the uniform
    target, averaged over each modality's rows and summed over the two; per discriminator for stacked logits."""
    per_sample = -logits.float().log_softmax(-1).mean(-1)  # (..., 2 * batch): CE against (1/2, 1/2)
    return per_sample[..., :num_audio].mean(-1) + per_sample[..., num_audio:].mean(-1)


def modality_confusion(discriminator, audio, text):
    """The domain-confusion term of the shared encoder (Tzeng et al. 2015; ADDA, eq. 8): the cross-entropy of the
    discriminator's outputs for speech and text against the uniform target (1/2, 1/2), averaged over each batch and
    summed over the two modalities, as `modality_cross_entropy` is. The discriminator's parameters enter DETACHED
    (`torch.func.functional_call`), so this term trains the inputs' encoder only and never the discriminator; its
    gradient with respect to the logits is softmax - 1/2, zero at a 50/50 output."""
    frozen = {name: parameter.detach() for name, parameter in discriminator.named_parameters()}
    return confusion_terms(functional_call(discriminator, frozen, (torch.cat([audio, text]),)), audio.shape[0])


def stacked_discriminator_logits(discriminators, inputs, detach=False):
    """The logits `(C, n, 2)` of C [`FDRLDiscriminator`]s, each on its own inputs `(C, n, d)`, in one batched
    matrix product per layer (the local discriminators: one call instead of C, fewer small operations in a
    frozen-feature training step). Their weights are stacked each call, so gradients reach each discriminator's own
    parameters; `detach=True` uses them detached (the confusion objective's frozen discriminators). Dropout is
    each discriminator's, drawn at once."""
    weights = [
        torch.stack(tensors)
        for tensors in zip(*((d.dense.weight, d.dense.bias, d.out.weight, d.out.bias) for d in discriminators))
    ]
    if detach:
        weights = [w.detach() for w in weights]
    dense_weight, dense_bias, out_weight, out_bias = weights
    hidden = torch.baddbmm(dense_bias.unsqueeze(1), inputs, dense_weight.transpose(1, 2)).relu()
    if len({d.dropout.p for d in discriminators}) == 1:
        hidden = discriminators[0].dropout(hidden)
    else:  # the alignment discriminators' dropout beside the modality discriminator's none
        hidden = torch.stack([d.dropout(h) for d, h in zip(discriminators, hidden)])
    return torch.baddbmm(out_bias.unsqueeze(1), hidden, out_weight.transpose(1, 2))


def stacked_modality_terms(groups, num_audio):
    """`modality_terms` of several groups of modality discriminators from one batched call.

    `groups`: per group, (its k discriminators, their inputs `(k, n, hidden)` with speech in the first `num_audio`
    rows, their sample weights `(k, n)` or None). All groups' discriminators run at once
    (`stacked_discriminator_logits`) and `modality_terms` once on all their logits, a group without sample weights
    weighted by 1 (which leaves its sums as they are). A training step of FDRL has three such groups: G_d on S_i, the
    local G_d^c on y_i^c S_i, GD on P_i; one call instead of three saves a forward and backward pass's worth of
    small operations per group (frozen-feature training is bound by their number, not their size).
    Returns per group (losses, summed per-sample losses, errors), each `(k,)`.
    """
    discriminators = [d for members, _, _ in groups for d in members]
    inputs = torch.cat([rows for _, rows, _ in groups])
    weights = torch.cat(
        [rows.new_ones(rows.shape[:2], dtype=torch.float32) if w is None else w.float() for _, rows, w in groups]
    )
    terms = modality_terms(stacked_discriminator_logits(discriminators, inputs), num_audio, weights)
    sizes = [len(members) for members, _, _ in groups]
    return list(zip(*(values.split(sizes) for values in terms)))


def orthogonality_loss(shared, private, mode="normalized"):
    """||S^T P||_F^2 (eq. 10); "normalized": centred, rows L2-normalised, divided by d^2 (MISA). `shared` and
    `private` are `(n, d)`, or `(pairs, n, d)` for several pairs at once (S_a with P_a, S_t with P_t), whose losses
    are summed."""
    shared, private = shared.float(), private.float()
    if mode == "normalized":
        shared = F.normalize(shared - shared.mean(-2, keepdim=True), dim=-1, eps=1e-6)
        private = F.normalize(private - private.mean(-2, keepdim=True), dim=-1, eps=1e-6)
        return (shared.transpose(-1, -2) @ private).pow(2).sum() / shared.shape[-1] ** 2
    return (shared.transpose(-1, -2) @ private).pow(2).sum()


def a_distance(errors, count, loss_sum, proxy="error"):
    """Proxy A-distance (eq. 6-7) from a discriminator's epoch statistics (tensors broadcast per class)."""
    if proxy == "loss":
        return 2.0 * (1.0 - 2.0 * loss_sum / count)
    if proxy == "error_clamped":
        return (2.0 * (1.0 - 2.0 * errors / count)).clamp(0.0, 2.0)
    return 2.0 * (1.0 - 2.0 * errors / count).abs()  # eps <- min(eps, 1 - eps): flipped decisions still separate


def dynamic_factor_from_statistics(stats, mode="daan", proxy="error", current=0.5, bounds=(0.0, 1.0)):
    """The dynamic factor mu (eq. 8) from a whole epoch's summed discriminator statistics.

    `stats` holds the `FDRLOutput` fields `global_errors`, `global_count`, `global_loss_sum`, `local_errors`,
    `local_counts`, `local_loss_sums`, summed over the epoch (and over processes). "daan" weighs the local term
    by the class-conditional distance, "paper" is the literal eq. 8. The local distance is the mean over the classes
    with a positive (weighted) count. mu is clamped to `bounds`; when the global count or every local count is 0,
    or the denominator is ~0 or not finite, `current` is returned unchanged.
    """
    if mode == "fixed":
        return float(current)
    stats = {key: torch.as_tensor(value, dtype=torch.float64) for key, value in stats.items()}
    seen = stats["local_counts"] > 0  # (num_labels,)
    if stats["global_count"] <= 0 or not bool(seen.any()):
        return float(current)
    distance_global = a_distance(stats["global_errors"], stats["global_count"], stats["global_loss_sum"], proxy)
    distance_local = a_distance(
        stats["local_errors"][seen], stats["local_counts"][seen], stats["local_loss_sums"][seen], proxy
    ).mean()
    denominator = distance_global + distance_local
    if not torch.isfinite(denominator) or denominator.abs() < 1e-12:
        return float(current)
    numerator = distance_local if mode == "daan" else distance_global
    mu = (numerator / denominator).clamp(float(bounds[0]), float(bounds[1]))
    return float(mu) if torch.isfinite(mu) else float(current)


def discriminator_error_rates(stats, id2label=None, use_global=True, use_local=True):
    """The raw error rates of an epoch's summed statistics, as log entries; none for a switched-off discriminator.

    Returns `global_discriminator_error` and one `local_discriminator_error_<label>` per class (the label's name
    from `id2label`, else its index) whose count is positive; the local rates are weighted as the counts are.
    """
    rates = {}
    if use_global and float(stats["global_count"]) > 0:
        rates["global_discriminator_error"] = float(stats["global_errors"]) / float(stats["global_count"])
    if not use_local:
        return rates
    id2label = id2label or {}
    for c, (errors, count) in enumerate(zip(_as_list(stats["local_errors"]), _as_list(stats["local_counts"]))):
        if count > 0:
            rates[f"local_discriminator_error_{id2label.get(c, c)}"] = errors / count
    return rates


def _as_list(values):
    return torch.as_tensor(values, dtype=torch.float64).flatten().tolist()


def local_weight_source(config):
    """What weighs the local discriminators' inputs: "predictor", "predictor_attached" or "labels" ("auto" resolved)."""
    if config.local_weights != "auto":
        return config.local_weights
    return "predictor" if config.use_predictor and config.gamma > 0 else "labels"


class FDRLPreTrainedModel(PreTrainedModel):
    config_class = FDRLConfig
    base_model_prefix = "fdrl"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """As [`PreTrainedModel.from_pretrained`]; a local folder's safetensors files are checked first
        ([`check_weight_files`]), so a damaged one is an error naming it, not safetensors' bare `SafetensorError`."""
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            folder = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
            if folder.is_dir():
                check_weight_files(folder)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.MultiheadAttention):
            module.in_proj_weight.normal_(mean=0.0, std=std)
            module.in_proj_bias.zero_()
        elif isinstance(module, FDRLModel):
            module.dynamic_factor.fill_(self.config.mu)


class FDRLModel(FDRLPreTrainedModel):
    """FDRL around a speech and a text backbone.

    Args:
        config ([`FDRLConfig`]): the model's configuration.
        audio_model, text_model (`PreTrainedModel`, *optional*): the backbones to hold, both or neither, as
            [`load_backbones`] gives them; by default random ones from the config ([`draw_random_backbones`]).
            [`FDRLModel.from_encoders_pretrained`] builds FDRL around pretrained ones.
    """

    # Every loss term comes from forward and is already a batch mean: Trainer must not rescale it for
    # gradient accumulation (the loss would double with 2 accumulation steps otherwise).
    accepts_loss_kwargs = False

    def __init__(self, config, audio_model=None, text_model=None):
        super().__init__(config)
        if (audio_model is None) != (text_model is None):
            raise ValueError("give both `audio_model` and `text_model`, or neither (random backbones from the config)")
        if audio_model is None:
            audio_model, text_model = draw_random_backbones(config)
        self.audio_model, self.text_model = audio_model, text_model
        drop_pooler(self.text_model)
        audio_size, text_size = config.audio_config.hidden_size, config.text_config.hidden_size
        if audio_size == text_size:
            self.audio_projection, self.text_projection = nn.Identity(), nn.Identity()
            input_size = audio_size
        else:  # the shared encoder needs one input width
            self.audio_projection = nn.Linear(audio_size, config.hidden_size)
            self.text_projection = nn.Linear(text_size, config.hidden_size)
            input_size = config.hidden_size

        self.shared_encoder = FDRLEncoder(config, input_size, config.shared_normalization)
        self.audio_encoder = FDRLEncoder(config, input_size)
        self.text_encoder = FDRLEncoder(config, input_size)
        # Switched-off parts are not built, so no parameter sits outside the graph under DDP.
        dropout = config.discriminator_dropout
        self.global_discriminator = FDRLDiscriminator(config, dropout) if config.use_global_discriminator else None
        self.local_discriminators = (
            nn.ModuleList(FDRLDiscriminator(config, dropout) for _ in range(config.num_labels))
            if config.use_local_discriminators
            else None
        )
        self.modality_discriminator = FDRLDiscriminator(config) if config.use_modality_discriminator else None
        # FP serves L_f and, unless the labels do, gives the class weights of the local discriminators' inputs.
        weighs_local = config.use_local_discriminators and local_weight_source(config) != "labels"
        needs_predictor = config.use_predictor or weighs_local
        self.predictor = nn.Linear(config.hidden_size, config.num_labels) if needs_predictor else None
        self.fusion = FDRLFusion(config)

        # float32 whatever the model's dtype (`_apply`): a bf16 mu moves 0.7059 -> 0.7070
        self.register_buffer("dynamic_factor", torch.tensor(float(config.mu), dtype=torch.float32), persistent=True)
        self.grl_coefficient = grl_coefficient_at(0.0, config.grl_schedule, config.grl_lambda)
        self.post_init()
        if config.freeze_feature_encoder:
            self.freeze_feature_encoder()
        self.main_input_name = speech_backbone(config.audio_config).input_name

    # ----- training state -------------------------------------------------------------------------------------
    def freeze_feature_encoder(self):
        """Freeze the speech backbone's convolutional feature encoder (no-op for backbones without one)."""
        if hasattr(self.audio_model, "freeze_feature_encoder"):
            self.audio_model.freeze_feature_encoder()

    def set_training_progress(self, progress):
        """Set the gradient reversal coefficient from training progress in [0, 1]; returns it."""
        self.grl_coefficient = grl_coefficient_at(progress, self.config.grl_schedule, self.config.grl_lambda)
        return self.grl_coefficient

    def _apply(self, fn, *args, **kwargs):
        """`.to()`, `.half()`, `.cuda()`, ... move mu but keep it float32 (its value is not rounded)."""
        dynamic_factor = self.dynamic_factor
        super()._apply(fn, *args, **kwargs)
        if self.dynamic_factor.dtype != torch.float32:
            self.dynamic_factor = dynamic_factor.to(device=self.dynamic_factor.device, dtype=torch.float32)
        return self

    def update_dynamic_factor(self, stats):
        """Update mu (eq. 8) from one epoch's summed discriminator statistics; returns the new value."""
        config = self.config
        mu = dynamic_factor_from_statistics(
            stats,
            config.dynamic_factor_mode,
            config.a_distance_proxy,
            float(self.dynamic_factor),
            config.dynamic_factor_bounds,
        )
        self.dynamic_factor.fill_(mu)
        return mu

    def end_epoch(self, stats):
        """Update mu from one epoch's summed statistics; returns the epoch's log entries, mu next to the raw rates.

        `{"dynamic_factor": mu, "global_discriminator_error": ..., "local_discriminator_error_<label>": ...}`, with
        no entry for a switched-off discriminator (see [`discriminator_error_rates`]).
        """
        mu = self.update_dynamic_factor(stats)
        rates = discriminator_error_rates(
            stats, self.config.id2label, self.global_discriminator is not None, self.local_discriminators is not None
        )
        return {"dynamic_factor": mu, **rates}

    # ----- feature extraction (eq. 1-2) -----------------------------------------------------------------------
    def encode_audio(self, input_values, audio_attention_mask=None):
        """Pooled speech features H_a: (batch, samples) -> (batch, audio hidden); Whisper: (batch, mel bins, frames)."""
        return pool_audio(self.audio_model, input_values, audio_attention_mask)

    def encode_text(self, input_ids, text_attention_mask=None, token_type_ids=None):
        """Pooled text features H_t: (batch, tokens) -> (batch, text hidden)."""
        return pool_text(self.text_model, input_ids, text_attention_mask, token_type_ids, self.config.text_pooling)

    # ----- losses -----------------------------------------------------------------------------------------------
    def _local_weights(self, shared_audio, shared_text, labels):
        """y_i^c for the speech and the text halves, each (batch, num_labels), as `local_weights` says."""
        source = local_weight_source(self.config)
        if source == "labels":  # both modalities carry the utterance's label
            if labels is None:
                raise ValueError("`labels` are needed to weigh the local discriminators with local_weights='labels'")
            one_hot = F.one_hot(labels, self.config.num_labels).float()  # (batch, num_labels)
            return one_hot, one_hot
        probs = self.predictor(torch.cat([shared_audio, shared_text])).float().softmax(-1)  # one call for both
        probs_audio, probs_text = probs.split([shared_audio.shape[0], shared_text.shape[0]])  # (batch, num_labels)
        if source == "predictor":  # unreversed, a gradient here would train FP and E_s against the alignment
            return probs_audio.detach(), probs_text.detach()
        return probs_audio, probs_text

    @staticmethod
    def _class_weighted(weights_audio, weights_text, audio, text):
        """The local discriminators' inputs `(num_labels, 2 * batch, hidden)`: y_i^c S_i for every class c, speech
        rows first."""
        weighted_audio = weights_audio.T.unsqueeze(-1).to(audio.dtype) * audio  # (num_labels, batch, hidden)
        weighted_text = weights_text.T.unsqueeze(-1).to(text.dtype) * text
        return torch.cat([weighted_audio, weighted_text], dim=1)

    def _local_confusion(self, shared_audio, shared_text, weights_audio, weights_text):
        """C_l: the encoder's confusion term of every class's (frozen) discriminator on y_i^c S_i, summed."""
        inputs = self._class_weighted(weights_audio, weights_text, shared_audio, shared_text)
        logits = stacked_discriminator_logits(self.local_discriminators, inputs, detach=True)
        return confusion_terms(logits, shared_audio.shape[0]).sum()

    def _local_group(self, audio, text, weights_audio, weights_text):
        """The local discriminators' group for `stacked_modality_terms`: every class's G_d^c on y_i^c S_i (eq. 5;
        `audio`, `text` behind the reversal, or detached under the confusion objective), with the class weights as
        the sample weights of its statistics (ones with `local_error_rate="unweighted"`)."""
        sample_weights = torch.cat([weights_audio, weights_text]).detach().T  # (num_labels, 2 * batch)
        if self.config.local_error_rate == "unweighted":
            sample_weights = torch.ones_like(sample_weights)
        inputs = self._class_weighted(weights_audio, weights_text, audio, text)  # (num_labels, 2 * batch, hidden)
        return list(self.local_discriminators), inputs, sample_weights

    @staticmethod
    def _local_statistics(group, terms):
        """The epoch statistics of the local discriminators' group from its `stacked_modality_terms`: the weighted
        errors, the class weights' sums (the counts) and the weighted per-sample losses, per class."""
        _, loss_sums, errors = terms
        return dict(local_errors=errors, local_counts=group[2].sum(1), local_loss_sums=loss_sums)

    def _discriminator_groups(self, audio, text, private_audio, private_text, weights_audio, weights_text):
        """The groups of `stacked_modality_terms` for the discriminators this model has, by name: "global" (G_d on
        `audio`, `text`), "local" (`_local_group`, with the class weights) and "modality" (GD on the private vectors,
        when given)."""
        groups = {}
        if self.global_discriminator is not None:
            groups["global"] = ([self.global_discriminator], torch.cat([audio, text])[None], None)
        if self.local_discriminators is not None:
            groups["local"] = self._local_group(audio, text, weights_audio, weights_text)
        if self.modality_discriminator is not None and private_audio is not None:
            groups["modality"] = ([self.modality_discriminator], torch.cat([private_audio, private_text])[None], None)
        return groups

    def _discriminator_losses(self, shared_audio, shared_text, private_audio=None, private_text=None, labels=None):
        """L_g (eq. 4), L_l (eq. 5) and L_p (eq. 9) from one batched call of every modality discriminator
        (`stacked_modality_terms`), with the alignment's epoch statistics and the shared encoder's confusion terms.

        `adversarial_objective="reversal"`: the alignment discriminators see S_i behind the gradient reversal layer
        (the paper), and (C_g, C_l) = (0, 0). `"confusion"`: they see S_i detached (their losses train them only),
        and C_g, C_l, the cross-entropies of their frozen outputs against 50/50, train the shared encoder. GD sees
        P_i as it is (no private inputs: L_p = 0). Returns (L_g, L_l, L_p, (C_g, C_l), statistics).
        """
        zero = shared_audio.new_zeros((), dtype=torch.float32)
        num_labels = self.config.num_labels
        stats = {
            "global_errors": zero,
            "global_count": zero,
            "global_loss_sum": zero,
            "local_errors": zero.new_zeros(num_labels),
            "local_counts": zero.new_zeros(num_labels),
            "local_loss_sums": zero.new_zeros(num_labels),
        }
        confusion = self.config.adversarial_objective == "confusion"
        if confusion:
            inputs_audio, inputs_text = shared_audio.detach(), shared_text.detach()
        else:
            inputs_audio = grad_reverse(shared_audio, self.grl_coefficient)
            inputs_text = grad_reverse(shared_text, self.grl_coefficient)
        weights_audio = weights_text = None
        if self.local_discriminators is not None:
            weights_audio, weights_text = self._local_weights(shared_audio, shared_text, labels)
        groups = self._discriminator_groups(
            inputs_audio, inputs_text, private_audio, private_text, weights_audio, weights_text
        )
        terms = {}
        if groups:
            terms = dict(zip(groups, stacked_modality_terms(list(groups.values()), shared_audio.shape[0])))
        loss_global = loss_local = loss_modality = confusion_global = confusion_local = zero
        if "global" in terms:
            loss_global, loss_sum, errors = (values[0] for values in terms["global"])
            count = zero + shared_audio.shape[0] + shared_text.shape[0]
            stats.update(global_errors=errors, global_count=count, global_loss_sum=loss_sum)
            if confusion:
                confusion_global = modality_confusion(self.global_discriminator, shared_audio, shared_text)
        if "local" in terms:
            loss_local = terms["local"][0].sum()
            stats.update(self._local_statistics(groups["local"], terms["local"]))
            if confusion:
                confusion_local = self._local_confusion(shared_audio, shared_text, weights_audio, weights_text)
        if "modality" in terms:
            loss_modality = 0.5 * terms["modality"][0][0]
        return loss_global, loss_local, loss_modality, (confusion_global, confusion_local), stats

    def _adversarial_term(self, loss_global, loss_local):
        """(1 - mu) L_g + mu L_l; with one discriminator switched off, the other's loss with weight 1. The same
        weighting serves the confusion terms (C_g, C_l)."""
        if self.global_discriminator is not None and self.local_discriminators is not None:
            mu = self.dynamic_factor.to(loss_global.dtype)
            return (1.0 - mu) * loss_global + mu * loss_local
        return loss_global + loss_local  # the switched-off one is 0

    def _orthogonality(self, shared_audio, shared_text, private_audio, private_text):
        """L_d (eq. 10): S_a against P_a plus S_t against P_t, both pairs in one call."""
        if not self.config.use_orthogonality:
            return shared_audio.new_zeros((), dtype=torch.float32)
        shared, private = torch.stack([shared_audio, shared_text]), torch.stack([private_audio, private_text])
        return orthogonality_loss(shared, private, self.config.orthogonality)

    def _predictor_loss(self, shared_audio, shared_text, private_audio, private_text, labels):
        """L_f (eq. 11): FP keeps the label information in S_a + S_t, P_a and P_t."""
        if not self.config.use_predictor:
            return shared_audio.new_zeros((), dtype=torch.float32)
        inputs = (shared_audio + shared_text, private_audio, private_text)
        # the three inputs in one call: one mean over 3 x batch rows is the mean of the three batch means
        return F.cross_entropy(self.predictor(torch.cat(inputs)).float(), labels.repeat(len(inputs)))

    # ----- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_values=None,
        audio_attention_mask=None,
        input_ids=None,
        text_attention_mask=None,
        token_type_ids=None,
        labels=None,
        input_features=None,
        pooled_audio=None,
        pooled_text=None,
    ):
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, samples)`): raw speech, from [`FDRLProcessor`], for a
                wav2vec2 / HuBERT / WavLM backbone.
            audio_attention_mask (`torch.LongTensor` of shape `(batch, samples)` or `(batch, mel frames)`, *optional*):
                1 on real samples (or, with Whisper, real mel frames).
            input_ids (`torch.LongTensor` of shape `(batch, tokens)`): the transcript's token ids.
            text_attention_mask (`torch.LongTensor` of shape `(batch, tokens)`, *optional*): 1 on real tokens.
            token_type_ids (`torch.LongTensor` of shape `(batch, tokens)`, *optional*): for BERT-like backbones.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): emotion classes; with them, the loss.
            input_features (`torch.FloatTensor` of shape `(batch, mel bins, mel frames)`): log-mel speech, from
                [`FDRLProcessor`], for a Whisper backbone (in place of `input_values`).
            pooled_audio, pooled_text (`torch.FloatTensor` of shape `(batch, backbone hidden)`, *optional*): H_a and
                H_t as the backbones would pool them (their cached outputs, for heads trained on frozen backbones);
                given both, the backbones are skipped.
        """
        if pooled_audio is not None or pooled_text is not None:  # cached outputs of frozen backbones
            _check_pooled(self.config, pooled_audio, pooled_text, labels)
        else:
            speech = _check_inputs(
                self.config.audio_config, input_values, input_features, input_ids, labels, self.config.num_labels
            )
            pooled_audio = self.encode_audio(speech, audio_attention_mask)
            pooled_text = self.encode_text(input_ids, text_attention_mask, token_type_ids)
        hidden_audio = self.audio_projection(pooled_audio.to(self.dtype))
        hidden_text = self.text_projection(pooled_text.to(self.dtype))
        # eq. 3; E_s on both modalities in one call (row by row the same)
        shared = self.shared_encoder(torch.cat([hidden_audio, hidden_text]))
        shared_audio, shared_text = shared.split([hidden_audio.shape[0], hidden_text.shape[0]])
        private_audio, private_text = self.audio_encoder(hidden_audio), self.text_encoder(hidden_text)

        fusion_inputs = {
            "all": (shared_audio, shared_text, private_audio, private_text),
            "shared": (shared_audio, shared_text),
            "private": (private_audio, private_text),
        }[self.config.fusion_inputs]
        logits = self.fusion(fusion_inputs)
        representations = dict(
            shared_audio=shared_audio, shared_text=shared_text, private_audio=private_audio, private_text=private_text
        )
        if labels is None:
            return FDRLOutput(logits=logits, **representations)

        loss_task = F.cross_entropy(logits.float(), labels)  # eq. 14
        loss_global, loss_local, loss_modality, confusion, stats = self._discriminator_losses(
            shared_audio, shared_text, private_audio, private_text, labels
        )
        loss_orthogonal = self._orthogonality(shared_audio, shared_text, private_audio, private_text)
        loss_predictor = self._predictor_loss(shared_audio, shared_text, private_audio, private_text, labels)
        loss_confusion = self._adversarial_term(*confusion)  # 0 under the reversal objective
        config = self.config
        loss = (  # eq. 15; under "confusion" the encoder's term joins the discriminators' (warmed up like the GRL)
            loss_task
            + config.alpha * (self._adversarial_term(loss_global, loss_local) + self.grl_coefficient * loss_confusion)
            + config.beta * (loss_modality + loss_orthogonal)
            + config.gamma * loss_predictor
        )
        return FDRLOutput(
            loss=loss,
            logits=logits,
            loss_task=loss_task,
            loss_global=loss_global,
            loss_local=loss_local,
            loss_modality=loss_modality,
            loss_orthogonal=loss_orthogonal,
            loss_predictor=loss_predictor,
            loss_confusion=loss_confusion,
            **representations,
            **stats,
        )

    # ----- construction from pretrained backbones ------------------------------------------------------------------
    @classmethod
    def from_encoders_pretrained(
        cls, audio_model, text_model, audio_kwargs=None, text_kwargs=None, draw_backbones=None, **config_kwargs
    ):
        """Build FDRL around pretrained backbones, as `SpeechEncoderDecoderModel.from_encoder_decoder_pretrained` does.

        Args:
            audio_model (`str` or `os.PathLike` or `PreTrainedModel`): a Hub id, a local folder or a loaded model.
                Of a Whisper checkpoint (`openai/whisper-base`, a WhisperForConditionalGeneration folder) only the
                encoder is kept, as [`FDRLWhisperEncoder`].
            text_model (`str` or `os.PathLike` or `PreTrainedModel`): likewise, for the text backbone.
            audio_kwargs, text_kwargs (`dict`, *optional*): passed to the backbones' `from_pretrained`.
            draw_backbones (`Callable`, *optional*, defaults to [`draw_random_backbones`]): called with the config
                before the heads are built. The heads start from the random state that `FDRLModel(config)` gives
                them, after its random backbones' draws; a callable that sets that state another way (a protocol
                that rebuilds from the same seed keeps it) may stand in for the draws.
            config_kwargs: the remaining [`FDRLConfig`] fields (`hidden_size`, `id2label`, `alpha`, ...).
        """
        audio, text = load_backbones(audio_model, text_model, audio_kwargs, text_kwargs)
        config = FDRLConfig(audio_config=audio.config, text_config=text.config, **config_kwargs)
        # the random state moves as `FDRLModel(config)` moves it: a seed draws the same heads either way
        (draw_backbones or draw_random_backbones)(config)
        return cls(config, audio_model=audio, text_model=text)  # the source weights, untouched


def draw_random_backbones(config):
    """(speech backbone, text backbone) with random weights from an [`FDRLConfig`]'s backbone configs, as
    `FDRLModel(config)` holds them when it is given none."""
    audio_model = speech_backbone_from_config(config.audio_config)
    text_model = AutoModel.from_config(config.text_config)
    drop_pooler(text_model)
    return audio_model, text_model


def load_backbones(audio_model, text_model, audio_kwargs=None, text_kwargs=None):
    """(speech backbone, text backbone) as FDRL holds them, from Hub ids, local folders or loaded models: a Whisper
    checkpoint's encoder alone as [`FDRLWhisperEncoder`], the text model without its unused pooler."""
    audio = _load_backbone(audio_model, audio_kwargs, "audio_model")
    audio = speech_backbone(audio.config).from_loaded(audio)
    text = _load_backbone(text_model, text_kwargs, "text_model")
    drop_pooler(text)
    return audio, text


def _load_backbone(model_or_path, kwargs, name):
    if isinstance(model_or_path, PreTrainedModel):
        return model_or_path
    if not isinstance(model_or_path, (str, bytes)) and not hasattr(model_or_path, "__fspath__"):
        raise ValueError(f"`{name}` must be a Hub id, a local folder or a PreTrainedModel, got {type(model_or_path)}")
    return AutoModel.from_pretrained(model_or_path, **(kwargs or {}))


def drop_pooler(text_model):
    """BERT's pooler is never used (FDRL pools itself); dropped so no parameter sits outside the graph."""
    if getattr(text_model, "pooler", None) is not None:
        text_model.pooler = None


def _check_inputs(audio_config, input_values, input_features, input_ids, labels, num_labels):
    """Validates the inputs; returns the speech tensor the backbone reads (`input_values` or `input_features`)."""
    name = speech_backbone(audio_config).input_name
    speech, other = (input_features, input_values) if name == "input_features" else (input_values, input_features)
    if other is not None:
        other_name = "input_values" if name == "input_features" else "input_features"
        raise ValueError(f"a {audio_config.model_type} speech backbone reads `{name}`, got `{other_name}`")
    if speech is None or input_ids is None:
        raise ValueError(f"FDRLModel needs both `{name}` (speech) and `input_ids` (text)")
    dims, shape = (3, "(batch, mel bins, frames)") if name == "input_features" else (2, "(batch, samples)")
    if speech.dim() != dims:
        raise ValueError(f"`{name}` must be {shape}, got shape {tuple(speech.shape)}")
    if input_ids.dim() != 2:
        raise ValueError(f"`input_ids` must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if speech.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"`{name}` and `input_ids` must hold the same batch, got {speech.shape[0]} and {input_ids.shape[0]}"
        )
    if labels is not None:
        if labels.shape != (speech.shape[0],):
            raise ValueError(f"`labels` must be (batch,) = ({speech.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            raise ValueError(f"`labels` must lie in [0, {num_labels}), got values {labels.unique().tolist()}")
    return speech


def _check_pooled(config, pooled_audio, pooled_text, labels):
    if pooled_audio is None or pooled_text is None:
        raise ValueError("give both `pooled_audio` and `pooled_text` (cached backbone outputs), or neither")
    for name, tensor, width in (
        ("pooled_audio", pooled_audio, config.audio_config.hidden_size),
        ("pooled_text", pooled_text, config.text_config.hidden_size),
    ):
        if tensor.dim() != 2 or tensor.shape[1] != width:
            raise ValueError(f"`{name}` must be (batch, {width}), got shape {tuple(tensor.shape)}")
    batch = pooled_audio.shape[0]
    if pooled_text.shape[0] != batch or (labels is not None and labels.shape != (batch,)):
        raise ValueError(
            f"`pooled_audio`, `pooled_text` and `labels` must hold the same batch, got "
            f"{pooled_audio.shape[0]}, {pooled_text.shape[0]} and "
            f"{None if labels is None else tuple(labels.shape)}"
        )


def safetensors_problem(path) -> Optional[str]:
    """What is wrong with a safetensors file, or None: read from its header alone (8 bytes of length, a JSON table of
    tensors and their byte offsets), which must describe exactly the bytes the file holds. A copy cut short, an
    overwritten header or a file that is not safetensors at all fails here."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        header_size = int.from_bytes(head, "little")
        if header_size > size - 8:
            return f"its header claims {header_size} bytes, but only {size - 8} follow"
        try:
            header = json.loads(file.read(header_size))
            end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors table of tensors"
    if 8 + header_size + end != size:
        return f"its header describes {8 + header_size + end} bytes, the file holds {size}"
    return None


def check_weight_files(folder):
    """Raises a `ValueError` naming the first damaged `*.safetensors` file in `folder` (see [`safetensors_problem`])."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ValueError(f"the weights file {path} is damaged ({problem}): copy or save the model again")


FDRLModel.register_for_auto_class("AutoModel")

__all__ = [
    "FDRLModel",
    "FDRLOutput",
    "FDRLPreTrainedModel",
    "FDRLWhisperEncoder",
    "GradientReversal",
    "modality_confusion",
    "modality_cross_entropy",
    "modality_terms",
    "stacked_discriminator_logits",
    "stacked_modality_terms",
    "check_weight_files",
    "discriminator_error_rates",
    "dynamic_factor_from_statistics",
    "grl_coefficient_at",
    "load_backbones",
    "local_weight_source",
    "pool_audio",
    "pool_text",
    "safetensors_problem",
    "speech_backbone_from_config",
    "SPEECH_BACKBONES",
    "SpeechBackbone",
    "speech_backbone",
    "drop_pooler",
    "conv_receptive_field",
]
