#!/usr/bin/env python
"""Write held-out test pairs for a model trained on mixtures drawn on the fly: mixtures of the
speakers and noise files that train.py holds apart from training (the same split, from the same
seed and folders), drawn with their own random streams, so that they are neither training nor
validation examples. Score a model on them with enhancement.py and calc_metrics.py: the place to
choose settings and checkpoints, never the VoiceBank-DEMAND test pairs.

    python experiments/heldout_mixtures.py --speech_dir runs/cpu_mix/sources/speech \
        --noise_dir runs/cpu_mix/sources/noise --out_dir runs/heldout --n 48 --reverb_prob 0.3

Writes out_dir/{clean,noisy}/heldout_NNN.wav (16-bit PCM at --sr) and out_dir/manifest.json (what
each mixture is: speech, noise, SNR, gain, rooms).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from echo.data.mixing_setup import open_corpora  # noqa: E402
from echo.data.onthefly import MixtureConfig, draw_mixture, mixture_rng  # noqa: E402
from echo.util.audio import AudioError, write_audio_atomic  # noqa: E402
from echo.util.other import write_text_atomic  # noqa: E402


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech_dir", nargs="+", required=True, help="the speech folder(s) of the training run")
    parser.add_argument("--noise_dir", nargs="+", required=True, help="the noise folder(s) of the training run")
    parser.add_argument("--out_dir", required=True, help="folder to write clean/ and noisy/ into (must not exist)")
    parser.add_argument("--n", type=int, default=48, help="number of pairs")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a pair")
    parser.add_argument("--snr_range", type=float, nargs=2, default=(-5.0, 20.0), help="SNR range in dB")
    parser.add_argument("--gain_range", type=float, nargs=2, default=(-20.0, 5.0), help="level range in dB")
    parser.add_argument("--reverb_prob", type=float, default=0.0, help="probability of a room for speech and noise")
    parser.add_argument("--n_rooms", type=int, default=200, help="simulated rooms, as in training")
    parser.add_argument("--valid_fraction", type=float, default=0.1, help="held-apart share, as in training")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (it fixes the split)")
    parser.add_argument("--sr", type=int, default=16000, help="sample rate")
    parser.add_argument("--cache_dir", default=None, help="cache of decoded audio and rooms, as in training")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out_dir)
    if out.exists():
        print(f"error: {out}: exists; choose a new folder", file=sys.stderr)
        return 2
    options = dict(speech_dir=args.speech_dir, noise_dir=args.noise_dir, snr_range=tuple(args.snr_range),
                   gain_range=tuple(args.gain_range), reverb_prob=args.reverb_prob, rir_dir=None,
                   n_rooms=args.n_rooms, early_ms=50.0, valid_fraction=args.valid_fraction, cache_dir=args.cache_dir)
    try:
        _, speech, _, noise, rirs = open_corpora(options, args.sr, args.seed)
    except (AudioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = MixtureConfig(segment=int(round(args.seconds * args.sr)), snr_range=tuple(args.snr_range),
                           gain_range=tuple(args.gain_range), reverb_prob=args.reverb_prob)
    manifest = []
    for index in range(args.n):
        clean, noisy, info = draw_mixture(mixture_rng(args.seed, "heldout", index), speech, noise, config, rirs)
        name = f"heldout_{index:03d}.wav"
        write_audio_atomic(out / "clean" / name, clean, args.sr, subtype="PCM_16")
        write_audio_atomic(out / "noisy" / name, noisy, args.sr, subtype="PCM_16")
        manifest.append(dict(name=name, **{k: (float(v) if isinstance(v, (np.floating, float)) else v)
                                           for k, v in info.items()}))
    write_text_atomic(out / "manifest.json", json.dumps({"args": vars(args), "pairs": manifest}, indent=1) + "\n")
    print(f"wrote {args.n} pairs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
