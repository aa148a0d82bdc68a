import numpy as np
import pytest
import torch
from conftest import make_batch, tiny_fdrl_config

from fdrl.evaluation.metrics import classification_metrics, markdown_table, summarize
from modeling_fdrl import FDRLModel, dynamic_factor_from_statistics
from processing_fdrl import FDRLProcessor
from fdrl.training.trainer import LOSS_TERMS, STAT_KEYS, FDRLDataCollator, FDRLTrainer, FDRLTrainingArguments


def _example(seconds, text, label, rate=16000):
    return {"id": f"utt{label}", "audio": {"array": np.ones(int(seconds * rate), np.float32), "sampling_rate": rate},
            "text": text, "label": label}


def test_collator_batches_both_modalities_or_one():
    processor = FDRLProcessor.from_texts(["hello there", "good day to you"], vocab_size=60)
    examples = [_example(0.5, "hello there", 1), _example(0.25, "good day to you", 3, rate=8000)]
    batch = FDRLDataCollator(processor)(examples)
    assert batch["input_values"].shape == (2, 8000)  # 0.25 s at 8 kHz resampled to 4000 samples, padded
    assert batch["audio_attention_mask"].sum(1).tolist() == [8000, 4000]
    assert batch["labels"].tolist() == [1, 3]
    assert set(FDRLDataCollator(processor, modalities=("text",))(examples)) == {
        "input_ids", "text_attention_mask", "token_type_ids", "labels"}
    assert set(FDRLDataCollator(processor, modalities=("audio",))(examples)) == {
        "input_values", "audio_attention_mask", "labels"}
    broken = dict(examples[0], id="Ses01F_impro01_F000", audio={"sampling_rate": 16000})
    with pytest.raises(ValueError, match="Ses01F_impro01_F000"):
        FDRLDataCollator(processor)([broken])


@pytest.fixture
def trainer(tmp_path):
    torch.manual_seed(0)
    args = FDRLTrainingArguments(output_dir=str(tmp_path), use_cpu=True, test_session=1, report_to="none",
                                 eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    return FDRLTrainer(model=FDRLModel(tiny_fdrl_config()), args=args)


def test_epoch_statistics_are_summed_and_give_mu(trainer):
    model = trainer.model.train()
    outputs = []
    for seed in (0, 1):
        loss, output = trainer.compute_loss(model, make_batch(seed=seed), return_outputs=True)
        outputs.append(output)
    summed = {key: sum(o[key].detach().double() for o in outputs) for key in STAT_KEYS}
    expected = dynamic_factor_from_statistics(summed, "daan", "error", 0.5)
    assert summed["global_count"].item() == 16  # 2 batches x 4 utterances x 2 modalities
    assert trainer.end_epoch() == pytest.approx(expected)
    assert trainer.model.dynamic_factor.item() == pytest.approx(expected)
    assert trainer.end_epoch() is None  # statistics were reset


def test_logs_carry_the_averaged_terms_mu_and_grl(trainer):
    model = trainer.model.train()
    outputs = [trainer.compute_loss(model, make_batch(seed=s), return_outputs=True)[1] for s in (0, 1)]
    trainer.log({"loss": 1.0})
    entry = trainer.state.log_history[-1]
    for term in LOSS_TERMS:
        assert entry[term] == pytest.approx((outputs[0][term] + outputs[1][term]).item() / 2, abs=2e-6), term
    assert entry["dynamic_factor"] == 0.5 and entry["grl_coefficient"] == 0.0  # progress 0 at step 0
    trainer.log({"eval_loss": 2.0})  # evaluation logs are left alone
    assert "loss_task" not in trainer.state.log_history[-1]


def test_metrics_war_uar_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 2, 3]
    predictions = [0, 0, 0, 1, 1, 0, 2, 2]
    metrics = classification_metrics(predictions, labels, ["ang", "hap", "neu", "sad"])
    assert metrics["war"] == pytest.approx(5 / 8)  # accuracy
    assert metrics["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1 + 0) / 4)  # mean per-class recall
    assert metrics["recall"] == {"ang": 0.75, "hap": 0.5, "neu": 1.0, "sad": 0.0}
    assert metrics["confusion_matrix"][0] == [3, 1, 0, 0] and metrics["confusion_matrix"][3] == [0, 0, 1, 0]
    summary = summarize([{"fold": 1, "seed": 0, "war": 0.5, "uar": 0.4, "macro_f1": 0.3, "weighted_f1": 0.2},
                         {"fold": 2, "seed": 0, "war": 0.7, "uar": 0.6, "macro_f1": 0.5, "weighted_f1": 0.4}])
    assert summary["mean"]["war"] == pytest.approx(0.6) and summary["std"]["war"] == pytest.approx(0.1414214)
    assert "**60.00 ± 14.14**" in markdown_table(summary)
    with pytest.raises(ValueError, match="match"):
        classification_metrics([0, 1], [0], ["a", "b"])
