#!/usr/bin/env python
"""Speak the web demo's example clips (app/examples/<name>.wav + <name>.txt) with espeak-ng.

One clip per class, each spoken as the demo corpus speaks that class (fdrl/data/demo_corpus.py: the class's
mean pitch, rate and amplitude, a sentence from its word bank, one of its voices), so the model `make demo` trains
hears the kind of speech it learnt from. 16 kHz mono 16-bit PCM, a few seconds each. The clips are committed; run
this again only to change them:

    python examples/make_app_examples.py [--output_dir app/examples]
"""

import argparse
import logging
from pathlib import Path

from fdrl.data import demo_corpus as corpus


logger = logging.getLogger(__name__)

# name -> (class whose prosody it takes, voice, transcript from that class's bank in the demo corpus)
CLIPS = {
    "angry": ("ang", "en-us+m1", "You promised you would be there, and you weren't."),
    "happy": ("hap", "en-us+f2", "They offered me the job this morning."),
    "neutral": ("neu", "en-us+m3", "The package should arrive on Tuesday."),
    "sad": ("sad", "en-us+f4", "The dog ran away last night."),
}


def prosody_of(label):
    """The class's mean espeak-ng pitch, rate and amplitude in the demo corpus."""
    return {name: mean for name, (mean, _) in corpus.PROSODY[label].items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output_dir",
        default=str(Path(__file__).resolve().parents[1] / "app" / "examples"),
        help="Where the .wav and .txt files go.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus._espeak_version()  # fails with the install hint when espeak-ng is missing
    for name, (label, voice, text) in CLIPS.items():
        samples = corpus.synthesize((output_dir / f"{name}.wav", voice, prosody_of(label), text))
        (output_dir / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        logger.info(f"{name}.wav: {samples / corpus.SAMPLING_RATE:.2f} s, {label} prosody, {text!r}")


if __name__ == "__main__":
    main()
