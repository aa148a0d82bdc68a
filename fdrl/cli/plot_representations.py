"""A Fig. 3-like figure of a trained FDRL model on one held-out session: `fdrl-plot-representations`.

    fdrl-plot-representations --model demo_output/model --data_dir demo_data/IEMOCAP_demo --session 5 \\
        --output representations.png
    fdrl-plot-representations --model s1/model s0/model --names S1 S0 --data_dir demo_data/IEMOCAP_demo \\
        --session 5 --output s1_s0.png

Each model reads each utterance of the session (corpus transcripts); its S_a, S_t, P_a and P_t go through
`fdrl.evaluation.plots.plot_representation_rows` (one row per model, side by side), and the alignment diagnostics
of the same vectors (without the training-split reference: no transfer) are printed per model.
"""

import argparse
import json

import numpy as np
import torch

from fdrl.data.audio import decode_audio
from fdrl.evaluation.alignment import alignment_metrics
from fdrl.evaluation.plots import REPRESENTATION_NAMES, plot_representation_rows


def representations_of(model, processor, examples, batch_size=8):
    """{name: (n, hidden)} of FDRL's four vectors for `examples` (eval mode, one batch at a time)."""
    outputs = {name: [] for name in REPRESENTATION_NAMES}
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        audio = [decode_audio(e["audio"], e["id"]) for e in batch]
        inputs = processor(
            audio=[a for a, _ in audio], sampling_rate=[r for _, r in audio], text=[e["text"] for e in batch]
        )
        with torch.no_grad():
            result = model(**inputs)
        for name in outputs:
            outputs[name].append(result[name].float().numpy())
    return {name: np.concatenate(values) for name, values in outputs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fdrl-plot-representations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+", help="FDRL model folders (or Hub ids), one row each.")
    parser.add_argument("--names", nargs="+", help="A title per model (default: the folders).")
    parser.add_argument("--data_dir", required=True, help="A corpus in IEMOCAP's layout.")
    parser.add_argument("--session", type=int, required=True, help="The session to draw (the model's test session).")
    parser.add_argument("--output", required=True, help="The PNG to write.")
    args = parser.parse_args(argv)

    from transformers import AutoConfig, AutoModel, AutoProcessor

    from fdrl.data.corpus import available_sessions, load_corpus, session_examples

    # the corpus's label ids follow the (first) model's classes, in its order, whatever order it was trained with
    config = AutoConfig.from_pretrained(args.model[0], trust_remote_code=True)
    args.manifest, args.labels = None, [config.id2label[i] for i in range(config.num_labels)]
    data = load_corpus(args)
    if args.session not in available_sessions(data):
        parser.error(f"--session {args.session}: {args.data_dir} has the sessions {available_sessions(data)}")
    names = args.names or args.model
    if len(names) != len(args.model):
        parser.error(f"--names gives {len(names)} titles for {len(args.model)} models")
    examples = [e for e in session_examples(data, [args.session]) if str(e["text"]).strip()]
    labels = [e["label"] for e in examples]
    rows, label_names = [], None
    for name, path in zip(names, args.model):
        model = AutoModel.from_pretrained(path, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        vectors = representations_of(model, processor, examples)
        label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        rows.append((name, vectors, labels))
        diagnostics = alignment_metrics(
            vectors["shared_audio"], vectors["shared_text"], np.asarray(labels), model.config.id2label
        )
        print(json.dumps({"model": name, **{k: round(v, 4) for k, v in diagnostics.items()}}, indent=1))
    plot_representation_rows(rows, label_names, args.output, title=f"session {args.session}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
