"""The evaluate metric module, the paired multi-system summary and its table, on numbers worked out by hand."""

import pytest

from fdrl.evaluation.metrics import classification_metrics, load_metric
from fdrl.evaluation.reporting import markdown_report, paired_difference, summarize_runs


LABELS = ["ang", "hap", "neu", "sad"]


def test_metric_module_loads_offline_and_scores_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 2, 3]
    predictions = [0, 0, 0, 1, 1, 0, 2, 2]
    result = load_metric().compute(predictions=predictions, references=labels, num_labels=4)
    assert result["war"] == pytest.approx(5 / 8)  # accuracy
    assert result["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1 + 0) / 4)  # mean per-class recall
    assert result["recall"] == [0.75, 0.5, 1.0, 0.0]
    assert result["confusion_matrix"][0] == [3, 1, 0, 0] and result["confusion_matrix"][3] == [0, 0, 1, 0]
    assert result["num_samples"] == 8
    with pytest.raises(ValueError, match=r"class ids \[4\] are outside 0..3"):
        load_metric().compute(predictions=[4], references=[0], num_labels=4)


def test_weighted_f1_by_hand():
    labels = [0, 0, 0, 0, 1, 1, 2, 3]
    predictions = [0, 0, 0, 1, 1, 0, 2, 2]
    result = load_metric().compute(predictions=predictions, references=labels, num_labels=4)
    # per-class F1: ang 2*3/(2*3+1+1) = 3/4, hap 2*1/(2*1+1+1) = 1/2, neu 2*1/(2*1+1+0) = 2/3, sad 0;
    # weighted by the support 4, 2, 1, 1 of 8 utterances; macro F1 is their plain mean.
    assert result["weighted_f1"] == pytest.approx((4 * 3 / 4 + 2 * 1 / 2 + 1 * 2 / 3 + 0) / 8)  # 7/12
    assert result["macro_f1"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3 + 0) / 4)  # 23/48
    # a class that is predicted but absent from the references has no support: it weighs nothing
    skewed = load_metric().compute(predictions=[0, 0, 1, 3], references=[0, 0, 1, 1], num_labels=4)
    assert skewed["weighted_f1"] == pytest.approx((2 * 1.0 + 2 * 2 / 3) / 4)  # hap: P 1, R 1/2, F1 2/3


def test_one_pass_scores_are_bit_for_bit_scikit_learns_averaging_functions():
    """The module averages one `precision_recall_fscore_support` pass itself; each figure must equal, exactly, what
    scikit-learn's own function for it returns, over random predictions with absent and predicted-only classes."""
    import warnings

    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    rng, metric, with_absent_class = np.random.default_rng(0), load_metric(), 0
    for trial in range(400):
        num_labels, count = int(rng.integers(2, 8)), int(rng.integers(1, 120))
        references, predictions = rng.integers(0, num_labels, count), rng.integers(0, num_labels, count)
        if trial % 3 == 0:  # the last class only predicted, never true
            references = np.where(references == num_labels - 1, 0, references)
        result = metric._compute(predictions=predictions, references=references, num_labels=num_labels)
        classes = np.arange(num_labels)
        present = np.isin(classes, references)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = {
                "uar": balanced_accuracy_score(references, predictions),
                "macro_f1": f1_score(
                    references, predictions, labels=classes[present], average="macro", zero_division=0
                ),
                "weighted_f1": f1_score(references, predictions, labels=classes, average="weighted", zero_division=0),
            }
            recalls = recall_score(references, predictions, labels=classes, average=None, zero_division=0)
        assert {key: result[key] for key in expected} == {key: float(value) for key, value in expected.items()}
        assert result["recall"] == [float(r) if p else None for r, p in zip(recalls, present)]
        with_absent_class += not present.all()
    assert with_absent_class >= 130  # a third of the draws, and more by chance, have a class absent from the truth


def test_a_class_absent_from_the_test_session_has_no_recall():
    metrics = classification_metrics([0, 1, 1], [0, 1, 2], LABELS)  # no "sad" in the references
    assert metrics["recall"] == {"ang": 1.0, "hap": 1.0, "neu": 0.0, "sad": None}
    assert metrics["uar"] == pytest.approx(2 / 3)  # over the three present classes
    with pytest.raises(ValueError, match="match"):
        classification_metrics([0, 1], [0], ["a", "b"])


def _metrics(uar, war=0.5):
    return {
        "war": war,
        "uar": uar,
        "macro_f1": uar,
        "weighted_f1": war,
        "recall": {"ang": uar, "hap": None, "neu": 0.5, "sad": 0.5},
    }


def test_paired_differences_wins_ties_losses_by_hand():
    runs = [
        {"seed": 0, "fold": f, "systems": {"S0": _metrics(s0), "speech": _metrics(sp), "S1": _metrics(s1)}}
        for f, s0, sp, s1 in ((1, 0.60, 0.50, 0.60), (2, 0.70, 0.75, 0.65), (3, 0.50, 0.40, 0.55))
    ]
    summary = summarize_runs(runs, LABELS)
    speech = summary["systems"]["speech"]
    assert speech["mean"]["uar"] == pytest.approx(0.55)
    assert speech["std"]["uar"] == pytest.approx(0.1802776)  # sample std of 0.50, 0.75, 0.40
    paired = speech["paired"]["uar"]
    # differences -0.10, +0.05, -0.10: mean -0.05, sample std 0.0866025
    assert paired["mean"] == pytest.approx(-0.05) and paired["std"] == pytest.approx(0.0866025)
    assert (paired["wins"], paired["ties"], paired["losses"], paired["n"]) == (1, 0, 2, 3)
    s1 = summary["systems"]["S1"]["paired"]["uar"]
    assert (s1["wins"], s1["ties"], s1["losses"]) == (1, 1, 1) and s1["mean"] == pytest.approx(0.0)
    assert "paired" not in summary["systems"]["S0"]
    assert summary["systems"]["speech"]["recall_mean"] == {
        "ang": pytest.approx(0.55),
        "hap": None,
        "neu": 0.5,
        "sad": 0.5,
    }
    table = markdown_report(summary, {"speech": "speech only"})
    # WAR, UAR, macro F1 (= UAR in _metrics), weighted F1 (= WAR in _metrics)
    assert "| speech: speech only | 3 | 50.00 ± 0.00 | 55.00 ± 18.03 | 55.00 ± 18.03 | 50.00 ± 0.00 |" in table
    assert "| system | runs | WAR | UAR | macro F1 | weighted F1 |" in table
    assert "-5.00 ± 8.66 | 1/0/2 |" in table
    assert "| 0 | 2 | 70.00 | 75.00 | 65.00 |" in table  # the per-run UAR table


def test_paired_difference_skips_runs_missing_a_side():
    assert paired_difference([0.5, None, 0.7], [0.4, 0.6, None]) == {
        "mean": pytest.approx(0.1),
        "std": 0.0,
        "n": 1,
        "wins": 1,
        "ties": 0,
        "losses": 0,
    }
    assert paired_difference([None], [0.5]) is None
    with pytest.raises(ValueError, match="no finished runs"):
        summarize_runs([], LABELS)


def test_fig3_like_figure_and_training_curves_are_drawn(tmp_path):
    import numpy as np

    from fdrl.evaluation.plots import plot_representations, plot_training

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    reps = {
        name: rng.normal(size=(40, 8)) + shift
        for name, shift in (("shared_audio", 0.0), ("shared_text", 1.0), ("private_audio", 3.0), ("private_text", -3.0))
    }
    plot_representations(reps, labels, LABELS, tmp_path / "fig3.png", title="test")
    assert (tmp_path / "fig3.png").stat().st_size > 20000
    history = [{"epoch": e, "loss": 1.0 / e, "dynamic_factor": 0.5} for e in (1, 2, 3)]
    plot_training(
        {"log_history": history},
        tmp_path / "curves.png",
        [("loss", ["loss"]), ("mu", ["dynamic_factor"]), ("never logged", ["eval_uar"])],
    )
    assert (tmp_path / "curves.png").stat().st_size > 10000
    with pytest.raises(ValueError, match="none of the keys"):
        plot_training({"log_history": history}, tmp_path / "none.png", [("x", ["eval_uar"])])


def test_side_by_side_figure_has_one_row_per_model_and_diverging_norms_get_a_log_scale(tmp_path, monkeypatch):
    import numpy as np
    from matplotlib.image import imread

    from fdrl.evaluation.plots import plot_representation_rows, plot_training

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    reps = {name: rng.normal(size=(40, 8)) for name in ("shared_audio", "shared_text", "private_audio", "private_text")}
    plot_representation_rows([("S1", reps, labels)], LABELS, tmp_path / "one.png")
    plot_representation_rows([("S1", reps, labels), ("S0", reps, labels)], LABELS, tmp_path / "two.png")
    one, two = imread(tmp_path / "one.png"), imread(tmp_path / "two.png")
    assert one.shape[1] == two.shape[1] and two.shape[0] == 2 * one.shape[0]  # 4.6 inches per row, same width
    history = [{"epoch": e, "eval_alignment_norm_audio": 10.0**e} for e in (0, 1, 2, 3, 4)]
    from matplotlib.figure import Figure

    drawn = {}
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        drawn["scale"] = self.axes[0].get_yscale()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    plot_training({"log_history": history}, tmp_path / "norms.png", [("norms", ["eval_alignment_norm_audio"])])
    assert drawn["scale"] == "log"
