"""FDRL model configuration."""

from transformers import AutoConfig, PretrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

DEFAULT_LABELS = ("ang", "hap", "neu", "sad")

# wav2vec2-base and bert-base-uncased shapes; the configs build randomly initialised backbones.
DEFAULT_AUDIO_CONFIG = {"model_type": "wav2vec2"}
DEFAULT_TEXT_CONFIG = {"model_type": "bert"}

_CHOICES = {
    "dynamic_factor_mode": ("daan", "paper", "fixed"),
    "a_distance_proxy": ("error", "error_clamped", "loss"),
    "local_error_rate": ("weighted", "unweighted"),
    "local_weights": ("auto", "predictor", "predictor_attached", "labels"),
    "grl_schedule": ("dann", "constant"),
    "adversarial_objective": ("confusion", "reversal"),
    "shared_normalization": ("none", "layer_norm"),
    "orthogonality": ("normalized", "raw"),
    "fusion_inputs": ("all", "shared", "private"),
    "text_pooling": ("mean", "cls"),
}


def _as_bounds(value):
    """`dynamic_factor_bounds` as a list of two floats (JSON keeps no tuples); checked in `_validate`."""
    try:
        return [float(bound) for bound in value]
    except (TypeError, ValueError):
        return value


def _as_config(value, default, name):
    if value is None:
        value = dict(default)
    if isinstance(value, dict):
        value = dict(value)
        if "model_type" not in value:
            raise ValueError(f"`{name}` needs a `model_type` key when given as a dict, got keys {sorted(value)}")
        return AutoConfig.for_model(value.pop("model_type"), **value)
    if isinstance(value, PretrainedConfig):
        return value
    raise ValueError(f"`{name}` must be a PretrainedConfig, a dict or None, got {type(value).__name__}")


class FDRLConfig(PretrainedConfig):
    r"""
    Configuration of an [`FDRLModel`]: a speech backbone and a text backbone, projected into one shared and two
    private subspaces, aligned by adversarial discriminators and fused by multi-head self-attention
    ("Fine-grained Disentangled Representation Learning for Multimodal Emotion Recognition", ICASSP 2024).
    Equation numbers refer to the paper. Where the paper is silent or self-contradictory a field decides, and its
    literal reading (or the earlier behaviour of this implementation) is one switch away.

    Args:
        audio_config (`PretrainedConfig` or `dict`, *optional*):
            Config of the speech backbone, any model `AutoModel` builds (wav2vec2, HuBERT, WavLM), or Whisper, of
            which only the encoder is built (`FDRLWhisperEncoder`). A dict needs a `model_type` key. Defaults to the
            shape of wav2vec2-base.
        text_config (`PretrainedConfig` or `dict`, *optional*):
            Config of the text backbone (BERT, RoBERTa, ...). Defaults to the shape of bert-base-uncased.
        hidden_size (`int`, *optional*, defaults to 256):
            Width d of the shared and private representations.
        discriminator_hidden_size (`int`, *optional*):
            Width of the hidden layer of every discriminator. Defaults to `hidden_size`.
        alpha (`float`, *optional*, defaults to 1.0):
            Weight of the adversarial alignment term (eq. 15).
        beta (`float`, *optional*, defaults to 0.5):
            Weight of the disparity terms L_p + L_d (eq. 15).
        gamma (`float`, *optional*, defaults to 1.0):
            Weight of the fine-grained predictor loss L_f (eq. 15).
        mu (`float`, *optional*, defaults to 0.5):
            Dynamic factor before its first update, and its value throughout when `dynamic_factor_mode="fixed"`.
        dynamic_factor_mode (`str`, *optional*, defaults to `"daan"`):
            `"daan"`: mu = mean_c d_l^c / (d_g + mean_c d_l^c) (DAAN's code); `"paper"`: the literal eq. 8,
            mu = d_g / (d_g + mean_c d_l^c); `"fixed"`: mu stays at `mu`.
        dynamic_factor_bounds (`tuple[float, float]`, *optional*, defaults to `(0.05, 0.95)`):
            mu is clamped to [low, high] at each update (`"daan"` and `"paper"` modes). At mu = 1 the factor (1 - mu)
            of eq. 15 also zeroes the global discriminator's own gradient, so it freezes and measures nothing
            more; `(0.0, 1.0)` gives the unbounded behaviour.
        a_distance_proxy (`str`, *optional*, defaults to `"error"`):
            `"error"`: d = 2 |1 - 2 eps| with eps the discriminator's error rate over the epoch, i.e. eps <- min(eps,
            1 - eps): a discriminator with error 0.75 separates the modalities as well as one with error 0.25 (its
            decisions are flipped, as when the reversed gradient overshoots); `"error_clamped"`: d = 2 (1 - 2 eps)
            clamped to [0, 2], which reads an error above 0.5 as perfect alignment (the earlier behaviour);
            `"loss"`: the paper's eq. 6-7, d = 2 (1 - 2 L) with L the discriminator's mean cross-entropy.
        local_error_rate (`str`, *optional*, defaults to `"weighted"`):
            `"weighted"`: each local discriminator's error rate (and mean cross-entropy, for `a_distance_proxy="loss"`)
            is weighted by the class weights, eps_l^c = sum_i y_i^c err_i^c / sum_i y_i^c over the 2 x batch samples;
            `"unweighted"`: a plain mean over all of them (the earlier behaviour), which the samples with y_i^c ~ 0,
            whose near-zero inputs can only be guessed at, pull toward 0.5.
        local_weights (`str`, *optional*, defaults to `"auto"`):
            The class weights y_i^c that scale the local discriminators' inputs (eq. 5). `"predictor"`: the
            fine-grained predictor's softmax for S_i, detached, so no unreversed gradient trains the predictor and
            the shared encoder to help the local discriminators; `"predictor_attached"`: the same softmax, not
            detached (DAAN's code, the earlier behaviour); `"labels"`: the one-hot emotion labels; `"auto"`:
            `"predictor"` when `use_predictor` is on and `gamma > 0`, else `"labels"` (an untrained predictor's
            softmax means nothing, ablation S6).
        adversarial_objective (`str`, *optional*, defaults to `"reversal"`):
            How the shared encoder E_s plays against the alignment discriminators (eq. 4-5). `"reversal"`: the
            paper's gradient reversal layer (Ganin & Lempitsky 2015, DANN): the discriminators see S_i behind it, so
            E_s MAXIMISES their cross-entropy, which has no upper bound (on frozen pretrained features at lr 1e-3 the
            shared vectors grow by orders of magnitude and drift apart, docs/design.md). `"confusion"`: the domain
            confusion objective (Tzeng et al. 2015; ADDA, Tzeng et al. 2017, eq. 8): the discriminators train on
            DETACHED S_i, and E_s is trained to bring the frozen discriminators' outputs to 50/50 (cross-entropy
            against the uniform target, bounded below by log 2, zero gradient at a confused discriminator). The
            encoder's term is weighted like the discriminators' ((1 - mu) global, mu local, times `alpha`) and by the
            reversal coefficient's schedule.
        shared_normalization (`str`, *optional*, defaults to `"none"`):
            `"layer_norm"`: a LayerNorm without learnt scale at E_s's output bounds the shared space (every S_i has
            norm sqrt(d), as MISA bounds its projections); `"none"`: E_s as in eq. 3.
        discriminator_dropout (`float`, *optional*, defaults to 0.0):
            Dropout after the hidden layer of the global and local alignment discriminators (DAAN's code uses 0.5).
        adversarial_learning_rate (`float`, *optional*, defaults to 1e-5):
            The learning rate of the adversarial path (E_s and the alignment discriminators) is at most this (an
            AdamW parameter group of `FDRLTrainer`: min(this, the run's learning rate)); the rest keeps the run's.
            1e-5 is the paper's rate, at which its gradient reversal stays bounded: with the heads at 1e-3 (the
            demo's recipe) the reversal diverges when E_s and the discriminators learn at 1e-3 too, and stays stable
            with them at 1e-5 (the alignment study, docs/design.md). `None`: the run's learning rate everywhere (the
            paper's literal reading, one optimiser setting for all).
        grl_schedule (`str`, *optional*, defaults to `"dann"`):
            `"dann"`: the gradient reversal coefficient is `grl_lambda * (2 / (1 + exp(-10 p)) - 1)` with p the
            training progress in [0, 1]; `"constant"`: it is `grl_lambda`.
        grl_lambda (`float`, *optional*, defaults to 1.0):
            Scale of the gradient reversal coefficient.
        orthogonality (`str`, *optional*, defaults to `"normalized"`):
            `"normalized"`: S and P centred over the batch, rows L2-normalised, ||S^T P||_F^2 / d^2 (MISA);
            `"raw"`: the literal eq. 10, ||S^T P||_F^2.
        use_global_discriminator (`bool`, *optional*, defaults to `True`): compute L_g (eq. 4).
        use_local_discriminators (`bool`, *optional*, defaults to `True`): compute L_l (eq. 5).
        use_modality_discriminator (`bool`, *optional*, defaults to `True`): compute L_p (eq. 9).
        use_orthogonality (`bool`, *optional*, defaults to `True`): compute L_d (eq. 10).
        use_predictor (`bool`, *optional*, defaults to `True`): compute L_f (eq. 11).
        fusion_inputs (`str`, *optional*, defaults to `"all"`):
            Which representations the fusion attends over: `"all"` (S_a, S_t, P_a, P_t), `"shared"` (S_a, S_t) or
            `"private"` (P_a, P_t).
        fusion_num_heads (`int`, *optional*, defaults to 4):
            Heads of the fusion's multi-head self-attention (eq. 12-13). Must divide `hidden_size`.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout before the final classifier.
        text_pooling (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (masked mean over tokens) or `"cls"` (the first token).
        freeze_feature_encoder (`bool`, *optional*, defaults to `False`):
            Freeze the speech backbone's convolutional feature encoder.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of FDRL's own layers (the backbones keep theirs).
    """

    model_type = "fdrl"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}
    keys_to_ignore_at_inference = [
        "loss_task",
        "loss_global",
        "loss_local",
        "loss_modality",
        "loss_orthogonal",
        "loss_predictor",
        "loss_confusion",
        "shared_audio",
        "shared_text",
        "private_audio",
        "private_text",
        "global_errors",
        "global_count",
        "global_loss_sum",
        "local_errors",
        "local_counts",
        "local_loss_sums",
    ]

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        hidden_size=256,
        discriminator_hidden_size=None,
        alpha=1.0,
        beta=0.5,
        gamma=1.0,
        mu=0.5,
        dynamic_factor_mode="daan",
        dynamic_factor_bounds=(0.05, 0.95),
        a_distance_proxy="error",
        local_error_rate="weighted",
        local_weights="auto",
        adversarial_objective="reversal",
        shared_normalization="none",
        discriminator_dropout=0.0,
        adversarial_learning_rate=1e-5,
        grl_schedule="dann",
        grl_lambda=1.0,
        orthogonality="normalized",
        use_global_discriminator=True,
        use_local_discriminators=True,
        use_modality_discriminator=True,
        use_orthogonality=True,
        use_predictor=True,
        fusion_inputs="all",
        fusion_num_heads=4,
        classifier_dropout=0.1,
        text_pooling="mean",
        freeze_feature_encoder=False,
        initializer_range=0.02,
        **kwargs,
    ):
        if "id2label" not in kwargs and "label2id" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(DEFAULT_LABELS))
        if kwargs.get("id2label") is not None and kwargs.get("label2id") is None:
            kwargs["label2id"] = {label: int(index) for index, label in kwargs["id2label"].items()}
        self.audio_config = _as_config(audio_config, DEFAULT_AUDIO_CONFIG, "audio_config")
        self.text_config = _as_config(text_config, DEFAULT_TEXT_CONFIG, "text_config")
        self.hidden_size = hidden_size
        self.discriminator_hidden_size = discriminator_hidden_size or hidden_size
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.mu = mu
        self.dynamic_factor_mode = dynamic_factor_mode
        self.dynamic_factor_bounds = _as_bounds(dynamic_factor_bounds)
        self.a_distance_proxy = a_distance_proxy
        self.local_error_rate = local_error_rate
        self.local_weights = local_weights
        self.adversarial_objective = adversarial_objective
        self.shared_normalization = shared_normalization
        self.discriminator_dropout = discriminator_dropout
        self.adversarial_learning_rate = adversarial_learning_rate
        self.grl_schedule = grl_schedule
        self.grl_lambda = grl_lambda
        self.orthogonality = orthogonality
        self.use_global_discriminator = use_global_discriminator
        self.use_local_discriminators = use_local_discriminators
        self.use_modality_discriminator = use_modality_discriminator
        self.use_orthogonality = use_orthogonality
        self.use_predictor = use_predictor
        self.fusion_inputs = fusion_inputs
        self.fusion_num_heads = fusion_num_heads
        self.classifier_dropout = classifier_dropout
        self.text_pooling = text_pooling
        self.freeze_feature_encoder = freeze_feature_encoder
        self.initializer_range = initializer_range
        # PretrainedConfig.__init__ sets every sub-config's attention implementation to the one asked for here (None
        # when none is): a backbone's own config, resolved when its model was built, would lose it, and that live
        # model would then run attention with `_attn_implementation` None. Without a request, each keeps its own.
        kept = None if kwargs.get("attn_implementation") else [c._attn_implementation for c in self._backbone_configs]
        super().__init__(**kwargs)
        for sub_config, implementation in zip(self._backbone_configs, kept or ()):
            sub_config._attn_implementation = implementation
        self._validate()

    @property
    def _backbone_configs(self):
        return (self.audio_config, self.text_config)

    def _validate(self):
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("hidden_size", "discriminator_hidden_size", "fusion_num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if self.hidden_size % self.fusion_num_heads:
            raise ValueError(
                f"`fusion_num_heads` must divide `hidden_size`, got {self.fusion_num_heads} and {self.hidden_size}"
            )
        for name in ("alpha", "beta", "gamma", "grl_lambda"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"`{name}` must be a non-negative number, got {value!r}")
        if not isinstance(self.mu, (int, float)) or not 0.0 <= self.mu <= 1.0:
            raise ValueError(f"`mu` must lie in [0, 1], got {self.mu!r}")
        bounds = self.dynamic_factor_bounds
        if not (isinstance(bounds, list) and len(bounds) == 2 and 0.0 <= bounds[0] <= bounds[1] <= 1.0):
            raise ValueError(f"`dynamic_factor_bounds` must be (low, high) with 0 <= low <= high <= 1, got {bounds!r}")
        for name in ("classifier_dropout", "discriminator_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1), got {value!r}")
        rate = self.adversarial_learning_rate
        if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0):
            raise ValueError(f"`adversarial_learning_rate` must be a positive number or None, got {rate!r}")
        if not self.initializer_range > 0:
            raise ValueError(f"`initializer_range` must be positive, got {self.initializer_range!r}")
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2, got {self.num_labels}")
        for name in (
            "use_global_discriminator",
            "use_local_discriminators",
            "use_modality_discriminator",
            "use_orthogonality",
            "use_predictor",
            "freeze_feature_encoder",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}")


FDRLConfig.register_for_auto_class()

__all__ = ["FDRLConfig"]
