#!/usr/bin/env python
"""Why late fusion keeps up with FDRL on the demo corpus: per-class recalls, confusions, the split by the kind of
transcript, and how far the two single-modality models' errors depend on each other given the class.

    python experiments/analyze_late_fusion.py experiments/results

Reads `runs/seed*_fold*.json` (run_experiments.py) and writes `late_fusion_analysis.md` and `.json` next to them.

The demo corpus draws each utterance's prosody and its sentence independently given the class
(examples/make_demo_corpus.py): half of each class speaks a sentence of its valence bank (positive: hap, negative:
ang and sad, calm: neu), the other half a neutral sentence shared by all classes. If the speech and text evidence
are conditionally independent given the class and the classes are balanced, the Bayes rule is
argmax_y log p(y | speech) + log p(y | text): exactly late fusion, given calibrated single-modality posteriors.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

ROWS = ("speech", "text", "late_fusion", "concat", "S0", "S1")
TABLE_ROWS = ("speech", "text", "concat", "late_fusion", "S0", "S1", "S2", "S3", "S4", "S5", "S6")
AROUSAL = {"ang": "high", "hap": "high", "neu": "low", "sad": "low"}


def load_records(results_dir):
    """The finished runs, as run_experiments.py's summary counts them: every table row that any run has must be in
    all of them (a run still in progress is left out)."""
    records = [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("runs/seed*_fold*.json"))]
    records = [r for r in records if "text" in r["test"]]
    wanted = {row for r in records for row in r["rows"] if row in TABLE_ROWS}
    return [r for r in records if {"speech", "text", "late_fusion"} <= wanted <= set(r["rows"])]


def error_structure(records, label_names):
    """Where each single-modality model errs: within an arousal level (speech's blind spot) or between ang and sad
    and on shared sentences (text's)."""
    result = {}
    for row in ("speech", "text"):
        within_arousal = ang_sad = shared = total = 0
        for r in records:
            kinds = [text_kind(t) for t in r["test"]["text"]]
            for truth, prediction, kind in zip(r["test"]["label"], r["rows"][row]["predictions"], kinds):
                if truth == prediction:
                    continue
                pair = {label_names[truth], label_names[prediction]}
                total += 1
                within_arousal += AROUSAL.get(label_names[truth]) == AROUSAL.get(label_names[prediction])
                ang_sad += pair == {"ang", "sad"}
                shared += kind == "shared"
        result[row] = {"errors": total, "within_arousal_level": within_arousal / max(total, 1),
                       "ang_sad": ang_sad / max(total, 1), "on_shared_sentences": shared / max(total, 1)}
    return result


def text_kind(sentence):
    """Which bank of the demo generator a transcript comes from ("positive", "negative", "calm", "shared")."""
    from make_demo_corpus import BANKS

    for name, bank in BANKS.items():
        if sentence in bank:
            return name
    return "unknown"


def ideal_text_log_posterior(kinds, label_names):
    """log p(y | which bank the sentence is from), under the generator's design (balanced classes, half shared)."""
    index = {name: i for i, name in enumerate(label_names)}
    posterior = np.full((len(kinds), len(label_names)), 1.0 / len(label_names))
    for row, kind in enumerate(kinds):
        members = {"positive": ["hap"], "negative": ["ang", "sad"], "calm": ["neu"]}.get(kind)
        if members:
            posterior[row] = 0.0
            posterior[row, [index[m] for m in members]] = 1.0 / len(members)
    return np.log(np.maximum(posterior, 1e-6))


def uar(predictions, labels, num_labels):
    recalls = [np.mean(predictions[labels == c] == c) for c in range(num_labels) if (labels == c).any()]
    return float(np.mean(recalls)) if recalls else None


def mutual_information(x, y, k):
    """I(X; Y) in bits from paired samples of two variables with values in 0..k-1."""
    joint = np.zeros((k, k))
    np.add.at(joint, (x, y), 1)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    mask = joint > 0
    return float((joint[mask] * np.log2(joint[mask] / outer[mask])).sum())


def conditional_mutual_information(x, y, z, k):
    """I(X; Y | Z) in bits: the per-class mutual information, weighted by the class shares."""
    return float(sum(np.mean(z == c) * mutual_information(x[z == c], y[z == c], k) for c in np.unique(z)))


def dependence(records, k, permutations=200, seed=0):
    """Are the speech and text predictions independent given the class? The conditional MI pooled over runs,
    against its value with the text predictions shuffled within (run, class) (independent by construction, same
    marginals: the small-sample bias), and the number of utterances both models get wrong against the number
    expected if their errors were independent given the class."""
    rng = np.random.default_rng(seed)
    speech = np.concatenate([r["rows"]["speech"]["predictions"] for r in records])
    text = [np.array(r["rows"]["text"]["predictions"]) for r in records]
    labels = [np.array(r["test"]["label"]) for r in records]
    group = np.concatenate(labels)
    observed = conditional_mutual_information(speech, np.concatenate(text), group, k)
    both_wrong, expected_both_wrong = 0, 0.0
    for r, t, lab in zip(records, text, labels):
        s = np.array(r["rows"]["speech"]["predictions"])
        for c in np.unique(lab):
            chosen = lab == c
            both_wrong += int(np.sum((s[chosen] != c) & (t[chosen] != c)))
            expected_both_wrong += chosen.sum() * np.mean(s[chosen] != c) * np.mean(t[chosen] != c)
    null = []
    for _ in range(permutations):
        shuffled = []
        for t, lab in zip(text, labels):
            t = t.copy()
            for c in np.unique(lab):
                t[lab == c] = rng.permutation(t[lab == c])
            shuffled.append(t)
        null.append(conditional_mutual_information(speech, np.concatenate(shuffled), group, k))
    true_labels = np.concatenate(labels)
    return {
        "cmi_bits_given_class": observed,
        "cmi_bits_null_mean": float(np.mean(null)),
        "cmi_bits_null_p95": float(np.percentile(null, 95)),
        "p_value": float((1 + np.sum(np.array(null) >= observed)) / (1 + permutations)),
        "both_wrong": both_wrong, "both_wrong_expected_if_independent": float(expected_both_wrong),
        "mi_bits_unconditional": mutual_information(speech, np.concatenate(text), k),
        "mi_bits_speech_vs_label": mutual_information(speech, true_labels, k),
        "mi_bits_text_vs_label": mutual_information(np.concatenate(text), true_labels, k),
    }


def calibration(records, row, k, bins=10):
    """Mean negative log-likelihood and expected calibration error of a row's test posteriors."""
    log_probs = np.concatenate([np.array(r["rows"][row]["log_probs"]) for r in records])
    labels = np.concatenate([r["test"]["label"] for r in records])
    probs = np.exp(log_probs)
    confidence, predictions = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = (confidence > low) & (confidence <= high)
        if chosen.any():
            ece += chosen.mean() * abs((predictions[chosen] == labels[chosen]).mean() - confidence[chosen].mean())
    return {"nll": float(-log_probs[np.arange(len(labels)), labels].mean()), "ece": float(ece),
            "mean_confidence": float(confidence.mean()), "accuracy": float((predictions == labels).mean())}


def speech_and_sentence_length(records, label_names):
    """The speech model hears the words too: within each class, how often it predicts a high-arousal class (ang,
    hap) for sentences longer than the class's median word count, and for the others."""
    result = {}
    for c, name in enumerate(label_names):
        words, high = [], []
        for r in records:
            for truth, sentence, prediction in zip(r["test"]["label"], r["test"]["text"],
                                                   r["rows"]["speech"]["predictions"]):
                if truth == c:
                    words.append(len(sentence.split()))
                    high.append(AROUSAL.get(label_names[prediction]) == "high")
        words, high = np.array(words), np.array(high)
        long = words > np.median(words)
        result[name] = {"high_arousal_rate_long": float(high[long].mean()) if long.any() else None,
                        "high_arousal_rate_short": float(high[~long].mean()) if (~long).any() else None}
    return result


def analyze(results_dir):
    records = load_records(results_dir)
    if not records:
        raise SystemExit(f"no finished runs with transcripts in {results_dir}/runs")
    label_names = list(records[0]["rows"]["speech"]["recall"])
    k = len(label_names)
    rows = [row for row in ROWS if all(row in r["rows"] for r in records)]
    report = {"num_runs": len(records), "label_names": label_names, "rows": rows}

    # per-run UAR by the kind of transcript, and the late fusion with an ideal text expert
    by_kind = {row: {"emotional": [], "shared": []} for row in (*rows, "late_fusion_ideal_text")}
    ideal_uar, paired = [], {row: [] for row in rows}
    for r in records:
        labels = np.array(r["test"]["label"])
        kinds = np.array([text_kind(t) for t in r["test"]["text"]])
        ideal = np.array(r["rows"]["speech"]["log_probs"]) + ideal_text_log_posterior(kinds, label_names)
        predictions = {row: np.array(r["rows"][row]["predictions"]) for row in rows}
        predictions["late_fusion_ideal_text"] = ideal.argmax(1)
        ideal_uar.append(uar(ideal.argmax(1), labels, k))
        for row, pred in predictions.items():
            for name, chosen in (("emotional", kinds != "shared"), ("shared", kinds == "shared")):
                by_kind[row][name].append(uar(pred[chosen], labels[chosen], k))
        for row in rows:
            paired[row].append(r["rows"][row]["uar"])
    report["uar_by_transcript_kind"] = {
        row: {name: float(np.mean([x for x in v if x is not None])) if any(x is not None for x in v) else None
              for name, v in kinds.items()}
        for row, kinds in by_kind.items()
    }
    report["uar"] = {row: float(np.mean(v)) for row, v in paired.items()}
    report["uar"]["late_fusion_ideal_text"] = float(np.mean(ideal_uar))

    # recalls and summed confusion matrices
    report["recall"] = {row: {name: float(np.mean([r["rows"][row]["recall"][name] for r in records]))
                              for name in label_names} for row in rows}
    report["confusion_matrix"] = {row: np.sum([r["rows"][row]["confusion_matrix"] for r in records], 0).tolist()
                                  for row in rows}

    # agreement and who is right where late fusion and FDRL disagree
    if "S0" in rows:
        late = np.concatenate([r["rows"]["late_fusion"]["predictions"] for r in records])
        fdrl = np.concatenate([r["rows"]["S0"]["predictions"] for r in records])
        labels = np.concatenate([r["test"]["label"] for r in records])
        disagree = late != fdrl
        report["late_fusion_vs_S0"] = {
            "agreement": float(np.mean(~disagree)), "disagreements": int(disagree.sum()),
            "late_fusion_right": int(np.sum(disagree & (late == labels))),
            "S0_right": int(np.sum(disagree & (fdrl == labels))),
            "paired_uar_difference_mean": float(np.mean(np.array(paired["late_fusion"]) - np.array(paired["S0"]))),
            "late_fusion_better_runs": int(np.sum(np.array(paired["late_fusion"]) > np.array(paired["S0"]))),
        }
    report["dependence"] = dependence(records, k)
    report["error_structure"] = error_structure(records, label_names)
    report["speech_and_sentence_length"] = speech_and_sentence_length(records, label_names)
    # diagnostic only (the weight is read off the test sets): how much the text model's confidence costs
    def weighted_uar(record, weight):
        rows = record["rows"]
        log_probs = np.array(rows["speech"]["log_probs"]) + weight * np.array(rows["text"]["log_probs"])
        return uar(log_probs.argmax(1), np.array(record["test"]["label"]), k)

    report["late_fusion_text_weight_diagnostic"] = {
        str(w): float(np.mean([weighted_uar(r, w) for r in records])) for w in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
    }
    report["calibration"] = {row: calibration(records, row, k) for row in ("speech", "text", "late_fusion", "S0")
                             if row in rows}
    return report


def markdown(report):
    names = report["label_names"]
    lines = [f"# Late fusion vs FDRL on the demo corpus ({report['num_runs']} runs)", "",
             "UAR (%) overall and by the kind of transcript (emotional: a sentence of the class's valence bank; "
             "shared: a sentence every class speaks). `late_fusion_ideal_text`: speech log-probabilities plus the "
             "exact text posterior of the generator's design (what a perfect text model would add).", "",
             "| row | UAR | UAR, emotional text | UAR, shared text |", "| --- | --- | --- | --- |"]
    def percent(value):
        return "n/a" if value is None else f"{100 * value:.1f}"

    for row, kinds in report["uar_by_transcript_kind"].items():
        lines.append(f"| {row} | {percent(report['uar'][row])} | {percent(kinds['emotional'])} | "
                     f"{percent(kinds['shared'])} |")
    lines += ["", "Per-class recall (%):", "", "| row | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for row, recall in report["recall"].items():
        lines.append(f"| {row} | " + " | ".join(f"{100 * recall[n]:.1f}" for n in names) + " |")
    lines += ["", "Confusion matrices summed over the runs (rows: true class, columns: predicted):", ""]
    for row, matrix in report["confusion_matrix"].items():
        lines += [f"**{row}**", "", "| true \\ predicted | " + " | ".join(names) + " |",
                  "|" + " --- |" * (len(names) + 1)]
        lines += [f"| {name} | " + " | ".join(str(v) for v in line) + " |" for name, line in zip(names, matrix)]
        lines.append("")
    d = report["dependence"]
    e = report["error_structure"]
    lines += ["Where the single-modality models err (share of their errors):", "",
              "| row | errors | within an arousal level (ang-hap, neu-sad) | ang <-> sad | on shared sentences |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {row} | {v['errors']} | {100 * v['within_arousal_level']:.0f}% | {100 * v['ang_sad']:.0f}% | "
              f"{100 * v['on_shared_sentences']:.0f}% |" for row, v in e.items()]
    lines += ["", "Dependence of the two single-modality predictions:", "",
              f"- I(speech prediction; text prediction | class) = {d['cmi_bits_given_class']:.3f} bits; with the "
              f"text predictions shuffled within class (independent by construction): {d['cmi_bits_null_mean']:.3f} "
              f"(95th percentile {d['cmi_bits_null_p95']:.3f}), permutation p = {d['p_value']:.3f}.",
              f"- Unconditional I(speech; text predictions) = {d['mi_bits_unconditional']:.3f} bits; "
              f"I(speech prediction; class) = {d['mi_bits_speech_vs_label']:.3f}, "
              f"I(text prediction; class) = {d['mi_bits_text_vs_label']:.3f}.",
              f"- Utterances both single-modality models get wrong: {d['both_wrong']}; expected if their errors were "
              f"independent given the class: {d['both_wrong_expected_if_independent']:.1f}.", ""]
    lengths = report["speech_and_sentence_length"]
    lines += ["The speech model hears the words too: share of high-arousal (ang, hap) speech predictions for sentences "
              "longer / not longer than the class's median word count: "
              + ", ".join(f"{name} {100 * v['high_arousal_rate_long']:.0f}% / {100 * v['high_arousal_rate_short']:.0f}%"
                          for name, v in lengths.items() if v["high_arousal_rate_long"] is not None
                          and v["high_arousal_rate_short"] is not None) + ".", ""]
    diagnostic = report["late_fusion_text_weight_diagnostic"]
    lines += ["Diagnostic only (the weight is read off the test sets, not a result): UAR (%) of "
              "log p(y|speech) + w log p(y|text): "
              + ", ".join(f"w = {w}: {100 * v:.1f}" for w, v in diagnostic.items()) + ".", ""]
    if "late_fusion_vs_S0" in report:
        v = report["late_fusion_vs_S0"]
        lines += [f"Late fusion and S0 agree on {100 * v['agreement']:.1f}% of the test utterances; of the "
                  f"{v['disagreements']} disagreements late fusion is right on {v['late_fusion_right']}, S0 on "
                  f"{v['S0_right']}. Paired UAR difference (late fusion - S0): "
                  f"{100 * v['paired_uar_difference_mean']:+.1f} points, late fusion better in "
                  f"{v['late_fusion_better_runs']} of {report['num_runs']} runs.", ""]
    lines += ["Calibration of the test posteriors:", "", "| row | NLL | ECE | mean confidence | accuracy |",
              "| --- | --- | --- | --- | --- |"]
    for row, c in report["calibration"].items():
        lines.append(f"| {row} | {c['nll']:.3f} | {c['ece']:.3f} | {c['mean_confidence']:.3f} | {c['accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default=str(REPO / "experiments" / "results"))
    args = parser.parse_args(argv)
    report = analyze(args.results_dir)
    (Path(args.results_dir) / "late_fusion_analysis.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (Path(args.results_dir) / "late_fusion_analysis.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
