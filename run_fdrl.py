#!/usr/bin/env python
"""Train and evaluate FDRL and its baselines under the leave-one-session-out protocol, or on a corpus's official
train / dev / test splits (MELD: `--dataset meld`, no `--folds`).

    accelerate launch run_fdrl.py --data_dir /data/IEMOCAP_full_release \\
        --audio_model facebook/wav2vec2-base --text_model bert-base-uncased \\
        --folds 1 2 3 4 5 --systems S0 speech text late_fusion --output_dir outputs/fdrl-iemocap
    accelerate launch run_fdrl.py --dataset meld --data_dir /data/MELD.Raw --seeds 0 1 2 ...

`--labels neu,ang,sad` names the classes in label-id order (default: the builder's own, or a manifest's sorted set).

Arguments can also come from a JSON or YAML file, which can name a whole experiment:
`python run_fdrl.py experiments/ablations.yaml`. Every argument is listed by `python run_fdrl.py --help`.
"""

import logging

from fdrl.training.arguments import parse_arguments
from fdrl.training.progress import configure_logging
from fdrl.training.protocol import run_protocol


logger = logging.getLogger(__name__)


def main(argv=None):
    # Arguments: every one checked before anything is loaded or trained
    model_args, data_args, training_args = parse_arguments(argv)

    # Logging (the protocol's own progress bar follows --protocol_progress)
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    configure_logging(level, disable_progress_bars=training_args.disable_tqdm)
    if training_args.log_level == "passive" and training_args.should_log:
        # the run's classes are listed at the default level too, so that a typo in the data shows as an extra class
        logging.getLogger("fdrl.data.labels").setLevel(min(level, logging.INFO))
    logger.info(f"process {training_args.process_index} of {training_args.world_size}, device {training_args.device}")

    # The protocol: every fold, seed and system, the table, the Hub folder and the push
    return run_protocol(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
