"""The systems table: each entry carries what the protocol needs (no `kind` switches), and a computed system pulls in
the systems it reads."""

import pytest
from transformers import AutoModel

from conftest import tiny_audio_config, tiny_text_config
from fdrl.training.systems import (
    SYSTEMS,
    BackboneClassifier,
    System,
    build_system_model,
    reference_system,
    resolve_systems,
)
from fdrl.training.trainer import FDRLTrainer, SystemTrainer
from modeling_fdrl import FDRLModel


def test_every_system_either_trains_or_is_computed_from_others():
    for system in SYSTEMS.values():
        assert system.trains != (system.combine is not None), system.name
        assert all(name in SYSTEMS for name in system.requires), system.name
    assert [s.name for s in SYSTEMS.values() if s.is_fdrl] == ["S0", "S1", "S2", "S3", "S4", "S5", "S6"]
    assert {s.name: s.modalities for s in SYSTEMS.values() if s.unimodal} == {"speech": ("audio",), "text": ("text",)}
    assert {s.name for s in SYSTEMS.values() if s.trainer_class is FDRLTrainer} == {f"S{i}" for i in range(7)}
    assert SYSTEMS["concat"].trainer_class is SystemTrainer and SYSTEMS["concat"].modalities == ("audio", "text")


def test_resolve_adds_what_late_fusion_reads_and_the_reference_follows():
    assert [s.name for s in resolve_systems(["S0", "late_fusion"])] == ["speech", "text", "S0", "late_fusion"]
    assert [s.name for s in resolve_systems(["text", "late_fusion"])] == ["speech", "text", "late_fusion"]
    assert reference_system(resolve_systems(["speech", "S3", "S2"])) == "S3"
    assert reference_system(resolve_systems(["S2", "S0"])) == "S0"
    assert reference_system(resolve_systems(["speech", "text"])) is None
    with pytest.raises(ValueError, match=r"unknown system\(s\) \['S9'\]"):
        resolve_systems(["S0", "S9"])


def test_a_new_system_is_one_entry():
    audio, text = AutoModel.from_config(tiny_audio_config()), AutoModel.from_config(tiny_text_config())
    kwargs = dict(id2label={0: "a", 1: "b", 2: "c"}, hidden_size=16, fusion_num_heads=2)
    speech = build_system_model(SYSTEMS["speech"], kwargs, audio, text)
    assert isinstance(speech, BackboneClassifier) and speech.text_model is None and speech.audio_model is audio
    assert speech.classifier.in_features == 32 and speech.classifier.out_features == 3
    ablation = build_system_model(SYSTEMS["S1"], kwargs, audio, text)
    assert isinstance(ablation, FDRLModel) and (ablation.config.alpha, ablation.config.beta) == (0.0, 0.0)
    text_only = System(
        "text_wide",
        "text, wider dropout",
        build=SYSTEMS["text"].build,
        modalities=("text",),
        config_overrides=dict(classifier_dropout=0.5),
    )
    model = build_system_model(text_only, kwargs, audio, text)
    assert model.audio_model is None and model.dropout.p == 0.5
    with pytest.raises(ValueError, match="'late_fusion' is not trained"):
        build_system_model(SYSTEMS["late_fusion"], kwargs, audio, text)
