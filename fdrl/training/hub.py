"""Model folders (what a Hub model repository holds), the model card with the protocol's table, and the push."""

import json
import os
import shutil
from pathlib import Path

from transformers.utils import logging

from fdrl.data.corpus import OFFICIAL, fold_name
from fdrl.evaluation.reporting import markdown_report
from pipeline_fdrl import TASK, save_pipeline

from .systems import DESCRIPTIONS


logger = logging.get_logger(__name__)


def save_model_folder(model, processor, folder):
    """Weights (safetensors), config with auto_map and `custom_pipelines`, remote-code files and the processor: a
    Hub model repository that `pipeline("multimodal-emotion-recognition", ..., trust_remote_code=True)` loads."""
    return save_pipeline(model, processor, folder)


def assemble_hub_folder(output_dir, seed, fold, summary, model_args, data_args, training_args):
    """`output_dir/model`: the reference system's model of the last fold (the official splits' run, on MELD) of the
    first seed, the run's results and a card with every system's results."""
    hub_dir = Path(output_dir) / "model"
    source = Path(output_dir) / f"seed{seed}" / fold_name(fold) / "model"
    if not source.is_dir():
        logger.warning(
            f"no model folder at {source} (the reference system {summary['reference']} did not run): "
            "no Hub folder written"
        )
        return None
    if hub_dir.exists():
        shutil.rmtree(hub_dir)
    shutil.copytree(source, hub_dir)
    (hub_dir / "training_args.json").write_text(training_args.to_json_string())
    shutil.copy2(Path(output_dir) / "results.json", hub_dir / "results.json")
    write_model_card(hub_dir, summary, fold, model_args, data_args, training_args)
    return hub_dir


def base_model_id(model):
    """The Hub id a backbone stands for: the id itself, or for a `make pretrained` folder the id in its
    `fdrl_provenance.json`; None for another local folder (it has no Hub id) or no backbone."""
    if not model or not isinstance(model, (str, os.PathLike)):
        return None
    provenance = Path(model) / "fdrl_provenance.json"
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("stands_for")
    return None if Path(model).exists() else str(model)


def _dataset_name(data_args):
    if data_args.manifest:
        return "custom manifest"
    if getattr(data_args, "dataset", None) == "meld":
        return "MELD"
    if "demo" in str(data_args.data_dir).lower():
        return "FDRL spoken demo corpus (espeak-ng, IEMOCAP layout)"
    return "IEMOCAP"


def write_model_card(folder, summary, fold, model_args, data_args, training_args):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    dataset_name = _dataset_name(data_args)
    official = fold == OFFICIAL
    model_name = training_args.hub_model_id or Path(training_args.output_dir).name
    reference = summary["reference"]
    entry = summary["systems"][reference]
    eval_results = [
        EvalResult(
            task_type="audio-classification",
            task_name="Multimodal emotion recognition",
            dataset_type=dataset_name.lower() if dataset_name in ("IEMOCAP", "MELD") else "custom",
            dataset_name=dataset_name,
            dataset_split=(
                f"test ({summary['num_runs']} seeds)"
                if official
                else f"leave-one-session-out ({summary['num_runs']} runs)"
            ),
            metric_type=metric,
            metric_name=name,
            metric_value=round(100 * entry["mean"][key], 2),
        )
        for key, metric, name in (
            ("war", "accuracy", "WAR (accuracy)"),
            ("uar", "recall", "UAR (unweighted average recall)"),
            ("weighted_f1", "f1", "weighted F1"),
        )
        if entry["mean"].get(key) is not None
    ]
    base_models = [base_model_id(model_args.audio_model), base_model_id(model_args.text_model)]
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=eval_results,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="audio-classification",
        base_model=[m for m in base_models if m] or None,
        tags=["emotion-recognition", "multimodal", "speech", "fdrl", "custom_code", TASK],
    )
    labels = ", ".join(summary["label_names"])
    backbones = (
        f"speech backbone `{base_models[0] or model_args.audio_model}`, text backbone "
        f"`{base_models[1] or model_args.text_model}`"
        if model_args.audio_model
        else f"randomly initialised `{model_args.model_preset or 'checkpoint'}` backbones"
    )
    frozen = (
        "frozen (their pooled outputs cached; only FDRL's own layers trained)"
        if training_args.freeze_backbones
        else "fine-tuned"
    )
    if official:
        protocol = (
            f"the corpus's official splits: train on train, choose the epoch by UAR on the validation (dev) split, "
            f"report the test split, once per seed. This repository holds the {reference} model of seed "
            f"{training_args.seeds[0]}; the table reports every system on every seed."
        )
    else:
        protocol = (
            f"leave-one-session-out: train on the other sessions (a stratified "
            f"{training_args.validation_fraction:.0%} of them held out for model selection by validation UAR), test "
            f"on the held-out one. This repository holds the {reference} model trained with **session {fold} held "
            f"out**; the table reports every system on every fold."
        )
    patience = training_args.early_stopping_patience
    budget = (
        f"AdamW, learning rate {training_args.learning_rate:g}, batch {training_args.per_device_train_batch_size} "
        f"per device, {'at most ' if patience else ''}{training_args.num_train_epochs:g} epochs"
        + (f", stopping once validation UAR has not improved for {patience} evaluations" if patience else "")
    )
    content = f"""---
{card_data.to_yaml()}
---

# {model_name}

FDRL (Fine-grained Disentangled Representation Learning, ICASSP 2024) recognises emotion from speech and its
transcript together. Speech and text are projected into a shared and two private subspaces; adversarial
discriminators align the shared representations globally and per emotion class, a modality discriminator and an
orthogonality loss keep the private ones distinct, and multi-head self-attention fuses the four.

- **Backbones:** {backbones}, {frozen}.
- **Labels ({len(summary["label_names"])} classes, in label-id order):** {labels}
- **Training data:** {dataset_name}
- **Protocol:** {protocol}
- **Training budget:** {budget}.
- **Metrics:** WAR (weighted average recall) = accuracy; UAR (unweighted average recall) = mean of the per-class
  recalls; macro F1 and weighted F1 (each class's F1 weighted by its share of the test set, MELD's usual figure).
  Differences from {reference} are paired by run (same split, seed and starting backbones).

## Results (%)

{markdown_report(summary, DESCRIPTIONS)}

## Use

The model runs as the custom pipeline task `{TASK}` (remote code):

```python
from transformers import pipeline

classifier = pipeline("{TASK}", model="{model_name}", trust_remote_code=True)
classifier({{"audio": "clip.wav", "text": "I can't believe this"}})
```

## Intended use and limits

For research on emotion recognition from English speech with transcripts, of the kind it was trained on (IEMOCAP:
acted, dyadic; MELD: multi-party scenes of one TV series). Emotion labels are perceptions of annotators, not what a
speaker felt; a model trained on a few actors (IEMOCAP has ten, MELD's scenes six main ones) does not transfer
reliably to other speakers, languages, recording conditions or spontaneous speech. Do not use it to make decisions
about people (hiring, policing, health, education, credit), and do not infer emotion from people who have not agreed
to it. Figures on the synthetic demo corpus only show that the pipeline works; they say nothing about real speech.
"""
    ModelCard(content).save(Path(folder) / "README.md")


def push_folder(folder, training_args):
    """Upload the Hub folder to `--hub_model_id` (created if needed)."""
    from huggingface_hub import HfApi

    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/fdrl-iemocap)")
    api = HfApi(token=training_args.hub_token)
    repo = api.create_repo(training_args.hub_model_id, private=bool(training_args.hub_private_repo), exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo.repo_id,
        commit_message=f"FDRL: leave-one-session-out run ({Path(training_args.output_dir).name})",
    )
    logger.info(f"pushed {folder} to {repo.repo_id}")
    return repo.repo_id
