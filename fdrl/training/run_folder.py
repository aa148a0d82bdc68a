"""What `--output_dir` may already hold, checked before any data is loaded.

- A folder with an earlier run in it (`results.json`, run records under `runs/`, or `seed{S}/` fold folders) is
  refused unless the user says what to do with it: `--resume_from_checkpoint true` carries on with its records,
  `--overwrite_output_dir true` starts over (what the protocol wrote there is deleted first, so no old record is
  reused; other files are left). An absent or empty folder, or one holding only the lock file or `run_settings.json`
  of a run that stopped before training, is used as it is.
- `run_settings.json` records the settings that define a run's numbers (`defining_settings`). A resume whose
  settings differ is refused, naming each field with its old and new value: the old records are not the new run's.
  Seeds, folds and systems do not define a run (adding a seed or a system to a resumed run is legitimate), nor do
  settings that only place, log or speed up the work.
"""

import dataclasses
import enum
import json
import re
import shutil
from pathlib import Path

from transformers.utils import logging

from fdrl.io import write_json

from .trainer import resuming


logger = logging.get_logger(__name__)

RUN_SETTINGS_FILE = "run_settings.json"
RESULT_FILES = ("results.json", "results.md", RUN_SETTINGS_FILE)
RESULT_FOLDERS = ("runs", "model")
_FOLD_FOLDER = re.compile(r"^seed-?\d+$")
# Fields of ModelArguments and DataArguments that only say where things are cached (every other one defines a run).
NOT_DEFINING = ("cache_dir", "rebuild_cache")
# The training settings that change the numbers. The rest of TrainingArguments places, logs, schedules checkpoints
# or spreads the work (output_dir, logging_steps, report_to, disable_tqdm, hub ids, dataloader workers, parallel
# runs, the eval batch size) or names what to run (seeds, folds, systems).
TRAINING_SETTINGS = (
    "learning_rate",
    "backbone_learning_rate",
    "unimodal_learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "optim_args",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "num_train_epochs",
    "unimodal_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "dataloader_drop_last",
    "train_sampling_strategy",
    "label_smoothing_factor",
    "neftune_noise_alpha",
    "eval_strategy",
    "eval_steps",
    "metric_for_best_model",
    "greater_is_better",
    "load_best_model_at_end",
    "early_stopping_patience",
    "validation_fraction",
    "freeze_backbones",
    "alignment_train_samples",
    "fp16",
    "bf16",
    "data_seed",
    "full_determinism",
)
# Arguments naming a local file or folder: recorded as an absolute path, so a resume from another folder matches.
PATH_SETTINGS = (
    "model_name_or_path",
    "audio_model",
    "text_model",
    "processor_name_or_path",
    "data_dir",
    "manifest",
    "test_transcripts",
)


def _jsonable(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def defining_settings(model_args, data_args, training_args):
    """{argument name: value} of the settings that define a run (see the module docstring), as JSON values."""
    settings = {}
    for arguments in (model_args, data_args):
        for item in dataclasses.fields(arguments):
            if item.name not in NOT_DEFINING:
                settings[item.name] = getattr(arguments, item.name)
    settings.update({name: getattr(training_args, name) for name in TRAINING_SETTINGS})
    for name in PATH_SETTINGS:
        value = settings.get(name)
        if isinstance(value, str) and Path(value).exists():
            settings[name] = str(Path(value).resolve())
    return {name: _jsonable(value) for name, value in settings.items()}


def earlier_run(output_dir):
    """What in `output_dir` an earlier run wrote: `results.json`, run records, fold folders (names, sorted)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = ["results.json"] if (output_dir / "results.json").is_file() else []
    found += sorted(f"runs/{p.name}" for p in (output_dir / "runs").glob("*.json"))
    found += sorted(p.name for p in output_dir.iterdir() if p.is_dir() and _FOLD_FOLDER.match(p.name))
    return found


def start_over(output_dir):
    """Delete what the protocol writes into `output_dir` (results, records, model and fold folders, run settings);
    anything else in it is left."""
    output_dir = Path(output_dir)
    removed = [p for p in output_dir.iterdir() if p.is_dir() and _FOLD_FOLDER.match(p.name)]
    removed += [output_dir / name for name in RESULT_FOLDERS + RESULT_FILES if (output_dir / name).exists()]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    logger.warning(f"--overwrite_output_dir: deleted {', '.join(sorted(p.name for p in removed))} in {output_dir}")


def settings_changes(old, new):
    """'--name old -> new' for every setting recorded in `old` whose value differs in `new`."""
    return [f"--{name} {old[name]!r} -> {new.get(name)!r}" for name in old if old[name] != new.get(name)]


def check_output_dir(model_args, data_args, training_args):
    """Refuse an `--output_dir` whose earlier run would be silently replaced or mixed in, or a resume with other
    settings; start over when asked; then record this run's settings. Runs before any data is loaded."""
    output_dir = Path(training_args.output_dir)
    earlier = earlier_run(output_dir)
    settings = defining_settings(model_args, data_args, training_args)
    if earlier and training_args.overwrite_output_dir:
        if training_args.should_save:
            start_over(output_dir)
    elif earlier and not resuming(training_args.resume_from_checkpoint):
        raise FileExistsError(
            f"--output_dir {output_dir} holds an earlier run ({', '.join(earlier[:5])}"
            f"{', ...' if len(earlier) > 5 else ''}): pass --resume_from_checkpoint true to carry on with its "
            f"records, --overwrite_output_dir true to delete them and start over, or give another --output_dir"
        )
    elif earlier:
        _check_resumed_settings(output_dir, settings)
    if training_args.should_save:
        write_json(output_dir / RUN_SETTINGS_FILE, settings)


def _check_resumed_settings(output_dir, settings):
    path = output_dir / RUN_SETTINGS_FILE
    if not path.is_file():
        logger.warning(f"{output_dir} has no {RUN_SETTINGS_FILE} (an older run): its settings cannot be compared")
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the resumed run's settings cannot be compared") from None
    changes = settings_changes(old, settings)
    if changes:
        raise ValueError(
            f"--resume_from_checkpoint true with settings that differ from those of the run in {output_dir} "
            f"({path.name}), whose records would be reported as this run's: {'; '.join(changes)}. Resume with the "
            f"old settings, or start over with --overwrite_output_dir true, or give another --output_dir"
        )
