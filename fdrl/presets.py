"""Random-initialisation sizes of the backbones and of FDRL's heads: `--model_preset`, the test suite's tiny models
(tests/conftest.py) and the benchmarks' `--tiny` runs (bench/common.py) all read them from here, so "tiny" means one
thing everywhere. "base" has the shapes of wav2vec2-base and bert-base.

This module sits at the top of the package (it imports only transformers) so that `fdrl.data`, `fdrl.training`,
the tests and the benchmarks may all import it without importing each other.
"""

from transformers import BertConfig, Wav2Vec2Config


TINY = dict(
    audio=dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_kernel=(40, 8, 4),
        conv_stride=(20, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    ),
    text=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
    fdrl=dict(hidden_size=16, fusion_num_heads=2, initializer_range=0.1),
)
PRESETS = {
    "tiny": TINY,
    "demo": dict(
        audio=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            conv_dim=(64, 64, 64),
            conv_kernel=(40, 8, 4),
            conv_stride=(20, 4, 4),
            num_conv_pos_embeddings=32,
            num_conv_pos_embedding_groups=4,
        ),
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        fdrl=dict(hidden_size=64, fusion_num_heads=4, initializer_range=0.1),
    ),
    "base": dict(audio={}, text={}, fdrl=dict(hidden_size=256)),
}
# Every preset's wav2vec2: pre-norm layers, no time masking and no layer drop (same numbers at each seed).
AUDIO_COMMON = dict(feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0, layerdrop=0.0)


def preset_backbone_configs(preset, vocab_size, max_position_embeddings=512):
    """(Wav2Vec2Config, BertConfig) of the named preset; `vocab_size` is the fold's tokenizer's."""
    if preset not in PRESETS:
        raise ValueError(f"--model_preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes = PRESETS[preset]
    audio = Wav2Vec2Config(**{**AUDIO_COMMON, **sizes["audio"]}) if sizes["audio"] else Wav2Vec2Config()
    text = BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **sizes["text"])
    return audio, text


def preset_fdrl_kwargs(preset):
    """FDRLConfig fields of the named preset (none without a preset)."""
    return dict(PRESETS[preset]["fdrl"]) if preset else {}
