#!/usr/bin/env python
"""The evidence table: single modalities, two fusion baselines, FDRL and its ablations S1-S6 (Table 2), under
5-fold leave-one-session-out on the spoken demo corpus, several seeds, one small model size and one budget.

    OMP_NUM_THREADS=1 python experiments/run_experiments.py --data_dir demo_data/IEMOCAP_demo \\
        --seeds 0,1,2 --folds 1,2,3,4,5 --output_dir experiments/results

Per (seed, fold) the two backbones are warm-started ONCE, each on its own modality (train split for training,
validation split for selecting the epoch; the test session is never seen). Their test predictions are the
"speech only" and "text only" rows, and the sum of their log-probabilities is "late fusion" (no training). Every
trained fusion row (the concatenation baseline and FDRL S0-S6) then starts from deep copies of those same two
backbones and gets the same budget (epochs, learning rate, batch, selection on validation UAR).

Rows S4 and S5: the paper's text says S4/S5 keep the whole framework (every loss) and feed only part of the
representations to the fusion; its table names them "w/o fine-grained alignment" and "w/o fine-grained
disparity". We read S4 = fusion over the private representations P_a, P_t only (the aligned, shared ones are not
used) and S5 = fusion over the shared representations S_a, S_t only (FDRL_SPEC.md section 8).

Outputs, in `--output_dir`: `runs/seed{S}_fold{F}.json` (written after every row, so an interrupted run resumes
where it stopped; the warm-started backbones are kept in `warm_start/` for that), `summary.json`, `ablations.md`.
With `--save_models seed:fold`, that run also keeps the model folders S0, S1 and S0 with mu fixed at 0 in
`models/` (for plot_representations.py and plot_training.py).
"""

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: 2 threads per op were 10x slower (DEMO_NOTES)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transformers import AutoModel, Trainer, set_seed  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from metrics_fdrl import classification_metrics, trainer_metrics  # noqa: E402
from modeling_fdrl import FDRLModel, _drop_pooler, pool_audio, pool_text  # noqa: E402
from processing_fdrl import FDRLProcessor  # noqa: E402
from protocol_fdrl import PRESETS, fold_splits, preset_backbone_configs, save_model_folder  # noqa: E402
from trainer_fdrl import FDRLDataCollator, FDRLTrainer, FDRLTrainingArguments, UnimodalClassifier  # noqa: E402


logger = logging.getLogger("run_experiments")

# ----- the rows ------------------------------------------------------------------------------------------------------
# FDRL variants: FDRLConfig overrides on top of the preset. S4/S5: see the module docstring.
FDRL_VARIANTS = {
    "S0": {},
    "S1": dict(alpha=0.0, beta=0.0),
    "S2": dict(use_global_discriminator=False),
    "S3": dict(use_local_discriminators=False),
    "S4": dict(fusion_inputs="private"),
    "S5": dict(fusion_inputs="shared"),
    "S6": dict(gamma=0.0),
}
# Not a table row: S0 with mu held at 0 (global alignment only), trained for Fig. 3 (b) in the --save_models run.
EXTRA_VARIANTS = {"S0_mu0": dict(dynamic_factor_mode="fixed", mu=0.0)}
ROW_NAMES = {
    "speech": "speech only (warm-started wav2vec2 + linear)",
    "text": "text only (warm-started BERT + linear)",
    "concat": "concatenation baseline (mean-pooled backbones, concatenated, linear)",
    "late_fusion": "late fusion (sum of the two single-modality log-probabilities, no training)",
    "S0": "S0 FDRL (full)",
    "S1": "S1 w/o (L_g + L_l) + (L_p + L_d): alpha = beta = 0",
    "S2": "S2 w/o global discriminator",
    "S3": "S3 w/o local discriminators",
    "S4": "S4 w/o fine-grained alignment: fusion over P_a, P_t only",
    "S5": "S5 w/o fine-grained disparity: fusion over S_a, S_t only",
    "S6": "S6 w/o fine-grained predictor: gamma = 0",
    "S0_mu0": "S0 with mu fixed at 0 (not in Table 2)",
}
ALL_ROWS = ("speech", "text", "concat", "late_fusion", *FDRL_VARIANTS)
TRAINED_ROWS = ("concat", *FDRL_VARIANTS)
# Table 2 of the paper (IEMOCAP, %), for reference only: a different corpus, backbones and budget.
PAPER_TABLE2 = {
    "S0": {"war": 78.34, "uar": 79.44}, "S1": {"war": 76.47, "uar": 77.36}, "S2": {"war": 77.39, "uar": 78.26},
    "S3": {"war": 77.51, "uar": 78.44}, "S4": {"war": 77.15, "uar": 77.43}, "S5": {"war": 76.69, "uar": 78.01},
    "S6": {"war": 77.71, "uar": 78.67},
}
METRICS = ("war", "uar", "macro_f1")


class ConcatClassifier(nn.Module):
    """The plain early-fusion baseline: both backbones mean-pooled, concatenated, dropout, one linear layer."""

    def __init__(self, audio_model, text_model, num_labels, dropout=0.1):
        super().__init__()
        self.audio_model, self.text_model = audio_model, text_model
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(audio_model.config.hidden_size + text_model.config.hidden_size, num_labels)

    def forward(self, input_values=None, audio_attention_mask=None, input_ids=None, text_attention_mask=None,
                token_type_ids=None, labels=None):
        pooled = torch.cat([pool_audio(self.audio_model, input_values, audio_attention_mask),
                            pool_text(self.text_model, input_ids, text_attention_mask, token_type_ids)], -1)
        logits = self.classifier(self.dropout(pooled))  # (batch, num_labels)
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits.float(), labels), "logits": logits}


# ----- arguments -----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_dir", default="demo_data/IEMOCAP_demo",
                        help="The demo corpus (examples/make_demo_corpus.py) or any folder in IEMOCAP's layout.")
    parser.add_argument("--output_dir", default=str(REPO / "experiments" / "results"))
    parser.add_argument("--scratch_dir", default=None,
                        help="Trainer checkpoints while a row trains (default: <output_dir>/scratch, deleted after).")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
    parser.add_argument("--folds", default="1,2,3,4,5", help="Comma-separated test sessions.")
    parser.add_argument("--rows", default=",".join(TRAINED_ROWS),
                        help=f"Trained rows to run, from {','.join(TRAINED_ROWS)} (speech, text and late fusion "
                             "always come with the warm start).")
    parser.add_argument("--tiny", action="store_true",
                        help="Test settings: the 'tiny' preset, one epoch per stage, unless set explicitly.")
    parser.add_argument("--model_preset", default=None, help="'demo' (default) or 'tiny' (with --tiny).")
    parser.add_argument("--audio_epochs", type=float, default=None, help="Speech warm start epochs (default 8).")
    parser.add_argument("--text_epochs", type=float, default=None, help="Text warm start epochs (default 20).")
    parser.add_argument("--warm_start_lr", type=float, default=1e-3, help="Learning rate of the warm starts.")
    parser.add_argument("--epochs", type=float, default=None, help="Epochs of every fusion row (default 3).")
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="Learning rate of the (warm-started) backbones in every fusion row.")
    parser.add_argument("--head_lr", type=float, default=1e-3,
                        help="Learning rate of the layers every fusion row adds on top of the backbones (FDRL's "
                             "encoders, discriminators, predictor and fusion; the concatenation's classifier).")
    parser.add_argument("--max_steps", type=int, default=-1, help="Cap every training stage (tests).")
    parser.add_argument("--train_feature_encoder", action="store_true",
                        help="Also fine-tune the speech backbone's convolutional feature encoder in the fusion rows "
                             "(by default it is frozen after the warm start, as run_audio_classification.py does: "
                             "half the step time on CPU).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--validation_fraction", type=float, default=0.1)
    parser.add_argument("--vocab_size", type=int, default=1000, help="WordPiece vocabulary learnt per fold.")
    parser.add_argument("--logging_steps", type=int, default=5)
    parser.add_argument("--save_models", default="0:1",
                        help="'seed:fold' whose S0, S1 and S0-with-mu-0 model folders are kept in <output_dir>/"
                             "models ('' for none).")
    parser.add_argument("--num_workers", type=int, default=1, help="Data-loading worker processes.")
    parser.add_argument("--summary_only", action="store_true",
                        help="Only rewrite summary.json and ablations.md from the finished runs in --output_dir.")
    args = parser.parse_args(argv)
    args.model_preset = args.model_preset or ("tiny" if args.tiny else "demo")
    defaults = dict(audio_epochs=1, text_epochs=1, epochs=1) if args.tiny else dict(audio_epochs=8, text_epochs=20,
                                                                                       epochs=3)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.fold_list = [int(f) for f in args.folds.split(",") if f.strip()]
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.row_list if r not in TRAINED_ROWS]
    if unknown:
        parser.error(f"--rows: unknown {unknown}; choose from {list(TRAINED_ROWS)}")
    args.save_run = tuple(int(x) for x in args.save_models.split(":")) if args.save_models else None
    return args


# ----- data ----------------------------------------------------------------------------------------------------------
def decoded(split):
    """A split as a list of plain examples with the audio decoded once (the collator would decode every epoch)."""
    examples = []
    for example in split:
        audio = example["audio"]
        if hasattr(audio, "get_all_samples"):  # torchcodec AudioDecoder (datasets 5)
            samples = audio.get_all_samples()
            audio = {"array": samples.data.numpy().reshape(-1), "sampling_rate": int(samples.sample_rate)}
        else:
            audio = {"array": np.asarray(audio["array"]), "sampling_rate": int(audio["sampling_rate"])}
        examples.append({"id": example["id"], "audio": audio, "text": example["text"], "label": example["label"]})
    return examples


def training_arguments(args, output_dir, seed, epochs, learning_rate):
    return FDRLTrainingArguments(
        output_dir=str(output_dir), seed=seed, num_train_epochs=epochs, max_steps=args.max_steps,
        learning_rate=learning_rate, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=32,
        save_total_limit=1, logging_steps=args.logging_steps, disable_tqdm=True, report_to="none", use_cpu=True,
        dataloader_num_workers=args.num_workers, log_level="warning", validation_fraction=args.validation_fraction,
    )


def test_logits(trainer, examples):
    output = trainer.predict(examples, metric_key_prefix="test")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return np.asarray(logits, dtype=np.float64), np.asarray(output.label_ids)


def log_softmax(logits):
    return torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), -1).numpy()


def row_result(log_probs, labels, label_names, seconds=None, **extra):
    predictions = np.argmax(log_probs, -1)
    metrics = classification_metrics(predictions, labels, label_names)
    result = {k: metrics[k] for k in ("war", "uar", "macro_f1", "weighted_f1", "recall", "confusion_matrix")}
    result["predictions"] = predictions.tolist()
    result["log_probs"] = np.round(log_probs, 5).tolist()
    if seconds is not None:
        result["seconds"] = round(seconds, 1)
    result.update(extra)
    return result


# ----- one (seed, fold) ----------------------------------------------------------------------------------------------
class Run:
    """Everything of one (seed, fold): data, processor, warm-started backbones, and the rows, saved as they finish."""

    def __init__(self, args, data, label_names, seed, fold):
        self.args, self.seed, self.fold, self.label_names = args, seed, fold, label_names
        self.path = Path(args.output_dir) / "runs" / f"seed{seed}_fold{fold}.json"
        self.warm_dir = Path(args.output_dir) / "warm_start" / f"seed{seed}_fold{fold}"
        self.scratch = Path(args.scratch_dir or Path(args.output_dir) / "scratch") / f"seed{seed}_fold{fold}"
        splits = fold_splits(data, fold, args.validation_fraction, seed)
        self.examples = {name: decoded(split) for name, split in splits.items()}
        self.record = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if self.record and not (self.warm_dir / "audio").is_dir():
            self.record = {}  # the backbones its rows started from are gone: redo the whole run
        self.record.setdefault("seed", seed)
        self.record.setdefault("fold", fold)
        self.record.setdefault("rows", {})
        self.record.setdefault("seconds", {})
        self.record["settings"] = settings(args)
        self.record["test"] = {key: [e[key] for e in self.examples["test"]] for key in ("id", "label", "text")}
        self.record["sizes"] = {name: len(split) for name, split in self.examples.items()}

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.record))
        temporary.replace(self.path)  # never a half-written file

    def collator(self):
        return FDRLDataCollator(self.processor)

    # warm start: the speech-only and text-only rows, and the late fusion of the two
    def warm_start(self):
        args = self.args
        if (self.warm_dir / "audio").is_dir() and {"speech", "text", "late_fusion"} <= set(self.record["rows"]):
            self.processor = FDRLProcessor.from_pretrained(self.warm_dir / "processor")
            self.audio = AutoModel.from_pretrained(self.warm_dir / "audio")
            self.text = AutoModel.from_pretrained(self.warm_dir / "text")
            return
        texts = [e["text"] for e in self.examples["train"] + self.examples["validation"]]
        self.processor = FDRLProcessor.from_texts(texts, vocab_size=args.vocab_size)
        audio_config, text_config = preset_backbone_configs(args.model_preset, len(self.processor.tokenizer))
        set_seed(self.seed)
        self.audio, self.text = AutoModel.from_config(audio_config), AutoModel.from_config(text_config)
        _drop_pooler(self.text)
        log_probs = {}
        for row, modality, backbone, epochs in (("speech", "audio", self.audio, args.audio_epochs),
                                                ("text", "text", self.text, args.text_epochs)):
            start = time.time()
            set_seed(self.seed)
            model = UnimodalClassifier(backbone, modality, len(self.label_names))
            trainer = Trainer(model=model, train_dataset=self.examples["train"],
                              eval_dataset=self.examples["validation"], data_collator=self.collator(),
                              compute_metrics=trainer_metrics(self.label_names),
                              args=training_arguments(args, self.scratch / row, self.seed, epochs, args.warm_start_lr))
            trainer.train()
            logits, labels = test_logits(trainer, self.examples["test"])
            log_probs[row] = log_softmax(logits)
            self.record["rows"][row] = row_result(log_probs[row], labels, self.label_names, time.time() - start,
                                                  best_validation_uar=trainer.state.best_metric)
            shutil.rmtree(self.scratch / row, ignore_errors=True)
        fused = log_probs["speech"] + log_probs["text"]  # product of experts: log p(y|a) + log p(y|t)
        self.record["rows"]["late_fusion"] = row_result(fused, labels, self.label_names, 0.0)
        self.processor.save_pretrained(self.warm_dir / "processor")
        self.audio.save_pretrained(self.warm_dir / "audio")
        self.text.save_pretrained(self.warm_dir / "text")
        self.save()

    # the trained fusion rows, each from copies of the same warm-started backbones
    def train_row(self, row, keep_dir=None):
        args = self.args
        start = time.time()
        set_seed(self.seed)
        audio, text = copy.deepcopy(self.audio), copy.deepcopy(self.text)
        output_dir = self.scratch / row
        training_args = training_arguments(args, output_dir, self.seed, args.epochs, args.lr)
        if row == "concat":
            if not args.train_feature_encoder:
                audio.freeze_feature_encoder()
            model, trainer_class = ConcatClassifier(audio, text, len(self.label_names)), Trainer
        else:
            overrides = {**FDRL_VARIANTS, **EXTRA_VARIANTS}[row]
            kwargs = {**PRESETS[args.model_preset]["fdrl"], "id2label": dict(enumerate(self.label_names)),
                      "freeze_feature_encoder": not args.train_feature_encoder, **overrides}
            model, trainer_class = FDRLModel.from_encoders_pretrained(audio, text, **kwargs), FDRLTrainer
        trainer = trainer_class(
            model=model, args=training_args, train_dataset=self.examples["train"], data_collator=self.collator(),
            eval_dataset=self.examples["validation"], compute_metrics=trainer_metrics(self.label_names),
            optimizer_cls_and_kwargs=(torch.optim.AdamW,
                                      {"params": parameter_groups(model, args), "weight_decay": 0.0}),
        )
        trainer.train()
        logits, labels = test_logits(trainer, self.examples["test"])
        extra = dict(best_validation_uar=trainer.state.best_metric)
        if row != "concat":
            extra["dynamic_factor"] = float(trainer.fdrl_model.dynamic_factor)
        self.record["rows"][row] = row_result(log_softmax(logits), labels, self.label_names, time.time() - start,
                                              **extra)
        if keep_dir is not None:
            keep_model(trainer, self.processor, Path(keep_dir) / row, self)
        shutil.rmtree(output_dir, ignore_errors=True)
        self.save()


def parameter_groups(model, args):
    """Backbones at `lr`, the layers on top of them at `head_lr` (one linear decay scales both)."""
    backbone, heads = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (backbone if name.startswith(("audio_model.", "text_model.")) else heads).append(parameter)
    return [{"params": backbone, "lr": args.lr}, {"params": heads, "lr": args.head_lr or args.lr}]


def keep_model(trainer, processor, folder, run):
    """The best model (FDRL's save format, loadable by the pipeline), its training log and the fold it belongs to."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_model_folder(trainer, processor, folder)
    trainer.state.save_to_json(str(folder / "trainer_state.json"))  # every logged loss term, mu, GRL coefficient
    info = dict(seed=run.seed, test_session=run.fold, data_dir=str(Path(run.args.data_dir).resolve()),
                validation_fraction=run.args.validation_fraction, test_ids=run.record["test"]["id"],
                label_names=run.label_names, test_metrics={k: run.record["rows"][folder.name][k] for k in METRICS})
    (folder / "experiment.json").write_text(json.dumps(info, indent=2))


def settings(args):
    keys = ("model_preset", "audio_epochs", "text_epochs", "warm_start_lr", "epochs", "lr", "max_steps",
            "head_lr", "batch_size", "validation_fraction", "vocab_size", "train_feature_encoder")
    return {k: getattr(args, k) for k in keys}


class RunLock:
    """`runs/seed{S}_fold{F}.lock` holds the pid working on that run, so several processes (with the same arguments)
    can share the list of runs; a lock whose process is gone is taken over."""

    def __init__(self, output_dir, seed, fold):
        self.path = Path(output_dir) / "runs" / f"seed{seed}_fold{fold}.lock"

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._holder_alive():
                    return False
                self.path.unlink(missing_ok=True)  # stale: its process died
                continue
            os.write(descriptor, str(os.getpid()).encode())
            os.close(descriptor)
            return True
        return False

    def _holder_alive(self):
        try:
            pid = int(self.path.read_text().strip() or 0)
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:  # alive, someone else's
            return True
        return pid > 0

    def release(self):
        self.path.unlink(missing_ok=True)


def run_one(args, data, label_names, seed, fold):
    lock = RunLock(args.output_dir, seed, fold)
    if not lock.acquire():
        logger.warning(f"seed {seed} fold {fold}: another process is on it, skipped")
        return None
    try:
        return _run_one(args, data, label_names, seed, fold)
    finally:
        lock.release()


def _run_one(args, data, label_names, seed, fold):
    run = Run(args, data, label_names, seed, fold)
    keep_dir = Path(args.output_dir) / "models" if args.save_run == (seed, fold) else None
    rows = list(args.row_list)
    if keep_dir is not None:
        rows += [r for r in ("S0", "S1", *EXTRA_VARIANTS) if r not in rows]
    todo = [r for r in rows if r not in run.record["rows"] or (keep_dir is not None and r in ("S0", "S1", "S0_mu0")
                                                                 and not (keep_dir / r / "config.json").is_file())]
    if not todo and {"speech", "text", "late_fusion"} <= set(run.record["rows"]):
        logger.warning(f"seed {seed} fold {fold}: done, skipped")
        return run.record
    start = time.time()
    run.warm_start()
    run.record["seconds"]["warm_start"] = run.record["seconds"].get("warm_start") or round(time.time() - start, 1)
    for row in todo:
        run.train_row(row, keep_dir if row in ("S0", "S1", "S0_mu0") else None)
        logger.warning(f"seed {seed} fold {fold} {row}: UAR {run.record['rows'][row]['uar']:.3f} "
                       f"({run.record['rows'][row]['seconds']:.0f} s)")
    run.record["seconds"]["total"] = round(sum(r.get("seconds", 0) for r in run.record["rows"].values()), 1)
    run.save()
    shutil.rmtree(run.scratch, ignore_errors=True)
    return run.record


# ----- summary -------------------------------------------------------------------------------------------------------
def summarize_runs(records):
    """Mean +- std over every (seed, fold) per row, and the paired difference to S0 (same backbones, same split)."""
    rows = [r for r in (*ALL_ROWS, *EXTRA_VARIANTS) if any(r in rec["rows"] for rec in records)]
    summary = {"rows": {}, "num_runs": len(records), "runs": sorted((rec["seed"], rec["fold"]) for rec in records),
               "paper_table2": PAPER_TABLE2, "row_names": ROW_NAMES, "settings": records[0]["settings"]}
    for row in rows:
        done = [rec for rec in records if row in rec["rows"]]
        entry = {"name": ROW_NAMES[row], "num_runs": len(done)}
        for metric in METRICS:
            values = [rec["rows"][row][metric] for rec in done]
            entry[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                             else 0.0, "values": values}
        paired = [rec["rows"][row]["uar"] - rec["rows"]["S0"]["uar"] for rec in done if "S0" in rec["rows"]]
        if paired and row != "S0":
            entry["uar_minus_S0"] = {"mean": float(np.mean(paired)),
                                     "std": float(np.std(paired, ddof=1)) if len(paired) > 1 else 0.0,
                                     "wins": int(sum(d > 0 for d in paired)), "ties": int(sum(d == 0 for d in paired)),
                                     "num_runs": len(paired)}
        entry["recall"] = {name: float(np.mean([rec["rows"][row]["recall"][name] for rec in done]))
                           for name in done[0]["rows"][row]["recall"]}
        entry["confusion_matrix"] = np.sum([rec["rows"][row]["confusion_matrix"] for rec in done], 0).tolist()
        summary["rows"][row] = entry
    return summary


def markdown(summary):
    def cell(entry, metric):
        return f"{100 * entry[metric]['mean']:.1f} ± {100 * entry[metric]['std']:.1f}"

    settings_ = summary["settings"]
    lines = [
        "# Evidence table: FDRL and its ablations on the spoken demo corpus",
        "",
        f"5-fold leave-one-session-out, {summary['num_runs']} finished runs (seed, test session): "
        + ", ".join(f"({s}, {f})" for s, f in summary["runs"]) + "."
        + (f" Not finished (left out): {', '.join(f'({s}, {f})' for s, f in summary['unfinished_runs'])}."
           if summary.get("unfinished_runs") else ""),
        f"Mean ± std over the runs, in %. Model preset `{settings_['model_preset']}`; warm start speech "
        f"{settings_['audio_epochs']:g} / text {settings_['text_epochs']:g} epochs at lr "
        f"{settings_['warm_start_lr']:g}; "
        f"every trained fusion row {settings_['epochs']:g} epochs, backbones at lr {settings_['lr']:g} and the layers "
        f"added on top at {settings_.get('head_lr') or settings_['lr']:g}"
        + ("" if settings_.get("train_feature_encoder") else ", the speech feature encoder (CNN) frozen")
        + f", batch {settings_['batch_size']}, the epoch chosen by validation UAR. WAR = UAR whenever the test session "
        "is balanced (the demo corpus: 25 per class). Δ UAR vs S0: paired difference on the same "
        "(seed, fold) (same warm-started backbones), mean ± std, and in how many runs the row beat S0. "
        "Paper: Table 2 (IEMOCAP with wav2vec2-base + BERT-base), for reference only.",
        "",
        "| row | WAR | UAR | macro F1 | Δ UAR vs S0 (wins) | paper WAR | paper UAR | paper Δ UAR vs S0 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, entry in summary["rows"].items():
        if row in EXTRA_VARIANTS:
            continue
        paired = entry.get("uar_minus_S0")
        delta = (f"{100 * paired['mean']:+.1f} ± {100 * paired['std']:.1f} ({paired['wins']}/{paired['num_runs']})"
                 if paired else "")
        paper = PAPER_TABLE2.get(row)
        paper_cells = (f"{paper['war']:.2f} | {paper['uar']:.2f} | "
                       + (f"{paper['uar'] - PAPER_TABLE2['S0']['uar']:+.2f}" if row != "S0" else "")
                       if paper else " | | ")
        runs = f" (n={entry['num_runs']})" if entry["num_runs"] != summary["num_runs"] else ""
        lines.append(f"| {entry['name']}{runs} | {cell(entry, 'war')} | {cell(entry, 'uar')} | "
                     f"{cell(entry, 'macro_f1')} | {delta} | {paper_cells} |")
    rows = [row for row in summary["rows"] if row not in EXTRA_VARIANTS]
    lines += ["", "UAR (%) per run:", "", "| seed | test session | " + " | ".join(rows) + " |",
              "|" + " --- |" * (len(rows) + 2)]
    for index, (seed, fold) in enumerate(summary["runs"]):
        cells = " | ".join(f"{100 * summary['rows'][row]['uar']['values'][index]:.0f}" for row in rows)
        lines.append(f"| {seed} | {fold} | {cells} |")
    labels = list(next(iter(summary["rows"].values()))["recall"])
    lines += ["", "Per-class recall (%), mean over the runs:", "",
              "| row | " + " | ".join(labels) + " |", "|" + " --- |" * (len(labels) + 1)]
    for row, entry in summary["rows"].items():
        runs = f" (n={entry['num_runs']})" if entry["num_runs"] != summary["num_runs"] else ""
        lines.append(f"| {row}{runs} | " + " | ".join(f"{100 * entry['recall'][c]:.1f}" for c in labels) + " |")
    return "\n".join(lines) + "\n"


def write_summary(output_dir):
    """summary.json and ablations.md over the finished runs: those with every row that any run has (a run still in
    progress is left out, and named in `unfinished_runs`)."""
    records = [json.loads(p.read_text()) for p in sorted(Path(output_dir).glob("runs/seed*_fold*.json"))]
    wanted = {row for r in records for row in r["rows"] if row in ALL_ROWS}
    finished = [r for r in records if {"speech", "text", "late_fusion"} <= wanted <= set(r["rows"])]
    if not finished:
        return None
    summary = summarize_runs(finished)
    summary["unfinished_runs"] = sorted((r["seed"], r["fold"]) for r in records if r not in finished)
    for name, text in (("summary.json", json.dumps(summary, indent=1)), ("ablations.md", markdown(summary))):
        temporary = Path(output_dir) / f".{name}.{os.getpid()}"
        temporary.write_text(text)
        temporary.replace(Path(output_dir) / name)  # several processes may write it: never half a file
    return summary


# ----- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    if args.summary_only:
        summary = write_summary(args.output_dir)
        print((Path(args.output_dir) / "ablations.md").read_text() if summary else "no finished run")
        return summary
    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from iemocap import load_iemocap

    data = load_iemocap(args.data_dir)
    label_names = next(iter(data.values())).features["label"].names
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    start = time.time()
    for seed in args.seed_list:  # seed-major: an interrupted run leaves whole seeds
        for fold in args.fold_list:
            run_one(args, data, label_names, seed, fold)
            write_summary(args.output_dir)
            logger.warning(f"seed {seed} fold {fold} finished, {time.time() - start:.0f} s since start")
    summary = write_summary(args.output_dir)
    try:  # each run removed its own scratch folder; another process may still be using the root
        (Path(args.scratch_dir or Path(args.output_dir) / "scratch")).rmdir()
    except OSError:
        pass
    print((Path(args.output_dir) / "ablations.md").read_text())
    return summary


if __name__ == "__main__":
    main()
