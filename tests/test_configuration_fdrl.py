import json

import pytest
from transformers import BertConfig, HubertConfig, RobertaConfig, Wav2Vec2Config

from configuration_fdrl import FDRLConfig
from conftest import tiny_audio_config, tiny_fdrl_config, tiny_text_config


def test_defaults_are_the_paper_and_the_base_backbones():
    config = FDRLConfig()
    assert (config.alpha, config.beta, config.gamma, config.mu) == (1.0, 0.5, 1.0, 0.5)
    assert config.id2label == {0: "ang", 1: "hap", 2: "neu", 3: "sad"}
    assert config.label2id == {"ang": 0, "hap": 1, "neu": 2, "sad": 3}
    assert isinstance(config.audio_config, Wav2Vec2Config) and isinstance(config.text_config, BertConfig)
    # wav2vec2-base and bert-base-uncased shapes
    assert (config.audio_config.hidden_size, config.audio_config.num_hidden_layers) == (768, 12)
    assert config.audio_config.feat_extract_norm == "group"
    assert (config.text_config.hidden_size, config.text_config.vocab_size) == (768, 30522)
    assert (config.dynamic_factor_mode, config.a_distance_proxy, config.grl_schedule, config.orthogonality) == (
        "daan",
        "error",
        "dann",
        "normalized",
    )
    assert config.dynamic_factor_bounds == [0.05, 0.95]
    assert (config.local_error_rate, config.local_weights) == ("weighted", "auto")
    # the alignment study's choice (docs/design.md): the paper's reversal, its adversarial path at the paper's 1e-5
    assert (config.adversarial_objective, config.shared_normalization, config.adversarial_learning_rate) == (
        "reversal",
        "none",
        1e-5,
    )


def test_dynamic_factor_bounds_survive_the_round_trip(tmp_path):
    tiny_fdrl_config(dynamic_factor_bounds=(0.0, 1.0), local_weights="labels").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dynamic_factor_bounds"] == [0.0, 1.0]
    loaded = FDRLConfig.from_pretrained(tmp_path)
    assert loaded.dynamic_factor_bounds == [0.0, 1.0] and loaded.local_weights == "labels"


def test_round_trip_keeps_nested_configs(tmp_path):
    config = tiny_fdrl_config(alpha=0.3, fusion_inputs="private", id2label={0: "a", 1: "b", 2: "c"})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "fdrl" and saved["audio_config"]["model_type"] == "wav2vec2"
    assert saved["auto_map"]["AutoConfig"] == "configuration_fdrl.FDRLConfig"
    loaded = FDRLConfig.from_pretrained(tmp_path)
    assert loaded.audio_config.to_dict() == config.audio_config.to_dict()
    assert loaded.text_config.to_dict() == config.text_config.to_dict()
    assert (loaded.alpha, loaded.fusion_inputs, loaded.num_labels) == (0.3, "private", 3)
    assert loaded.id2label == {0: "a", 1: "b", 2: "c"}


def test_sub_configs_from_dicts_and_other_backbones():
    config = FDRLConfig(
        audio_config={"model_type": "hubert", "hidden_size": 64, "num_attention_heads": 2},
        text_config=RobertaConfig(hidden_size=48, num_attention_heads=2),
    )
    assert isinstance(config.audio_config, HubertConfig) and config.audio_config.hidden_size == 64
    assert config.text_config.model_type == "roberta"


@pytest.mark.parametrize(
    "field, value",
    [
        ("dynamic_factor_mode", "dann"),
        ("a_distance_proxy", "accuracy"),
        ("local_error_rate", "mean"),
        ("local_weights", "softmax"),
        ("dynamic_factor_bounds", (0.9, 0.1)),
        ("dynamic_factor_bounds", (0.0, 1.5)),
        ("dynamic_factor_bounds", (0.1,)),
        ("dynamic_factor_bounds", "low"),
        ("dynamic_factor_bounds", None),
        ("grl_schedule", "linear"),
        ("orthogonality", "cosine"),
        ("fusion_inputs", "audio"),
        ("text_pooling", "max"),
        ("hidden_size", 0),
        ("fusion_num_heads", 3),  # does not divide 16
        ("alpha", -1.0),
        ("beta", float("nan")),
        ("mu", 1.5),
        ("classifier_dropout", 1.0),
        ("use_predictor", "yes"),
        ("audio_config", 3),
        ("text_config", {"hidden_size": 8}),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_fdrl_config(**{field: value})


def test_one_label_is_rejected():
    with pytest.raises(ValueError, match="num_labels"):
        FDRLConfig(audio_config=tiny_audio_config(), text_config=tiny_text_config(), id2label={0: "x"})


def test_wrapping_a_live_backbone_config_keeps_its_attention_implementation():
    """PretrainedConfig.__init__ would reset the sub-configs' attention implementation to None, and the backbone
    would then run attention behind transformers' "_attn_implementation set to None" warning."""
    from transformers import AutoModel

    from configuration_fdrl import FDRLConfig

    audio, text = AutoModel.from_config(tiny_audio_config()), AutoModel.from_config(tiny_text_config())
    resolved = (audio.config._attn_implementation, text.config._attn_implementation)
    assert None not in resolved
    config = FDRLConfig(audio_config=audio.config, text_config=text.config, hidden_size=16, fusion_num_heads=2)
    assert config.audio_config is audio.config
    assert (audio.config._attn_implementation, text.config._attn_implementation) == resolved
    FDRLConfig(audio_config=audio.config, text_config=text.config, attn_implementation="eager")  # asked: applied
    assert (audio.config._attn_implementation, text.config._attn_implementation) == ("eager", "eager")
