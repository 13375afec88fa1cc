"""The flags of on-the-fly mixing and the corpora they name (see ``echo.data.onthefly``)."""
from echo.data.corpus import AudioCorpus
from echo.data.onthefly import MixtureConfig, held_apart
from echo.data.rooms import RirBank


def add_mixing_args(parser):
    group = parser.add_argument_group(
        "on-the-fly mixing", "instead of --base_dir: a new mixture of speech and noise for every training example")
    group.add_argument("--speech_dir", type=str, nargs="+", default=None,
                       help="Folder(s) of clean speech, searched recursively, any rate (resampled once, cached)")
    group.add_argument("--noise_dir", type=str, nargs="+", default=None,
                       help="Folder(s) of noise recordings, searched recursively, any rate")
    group.add_argument("--snr_range", type=float, nargs=2, default=(-5.0, 20.0), metavar=("MIN", "MAX"),
                       help="SNR of a mixture in dB, drawn uniformly (target's active speech over the noise)")
    group.add_argument("--gain_range", type=float, nargs=2, default=(-20.0, 5.0), metavar=("MIN", "MAX"),
                       help="Level of a mixture in dB, drawn uniformly (then lowered if it would clip)")
    group.add_argument("--reverb_prob", type=float, default=0.0,
                       help="Probability that the speech, and independently the noise, is heard in a room; the "
                            "target keeps the direct path and the first --early_ms of reflections")
    group.add_argument("--rir_dir", type=str, default=None,
                       help="Folder of room impulse responses to use instead of simulated rooms")
    group.add_argument("--n_rooms", type=int, default=200,
                       help="Simulated rooms in the bank (simulated once per seed, cached)")
    group.add_argument("--early_ms", type=float, default=50.0,
                       help="Reflections within this time after the direct path belong to the target")
    group.add_argument("--segment_seconds", type=float, default=4.0,
                       help="Length of a drawn mixture; it is normalised by its peak, as a file is at "
                            "enhancement, then cropped to --num_frames")
    group.add_argument("--mix_seed", type=int, default=None,
                       help="Seed of the training mixtures alone (each example's speech, noise, SNR, gain, room "
                            "and crop); default: --seed. The held-apart split, the validation mixtures and the "
                            "simulated rooms keep --seed, so a continuation of a trained model given a new "
                            "--mix_seed trains on mixtures the earlier run never drew and is validated on the "
                            "same ones")
    group.add_argument("--examples_per_epoch", type=int, default=2000,
                       help="Training mixtures per epoch (the unit of validation and checkpoints)")
    group.add_argument("--n_valid_mixtures", type=int, default=24,
                       help="Validation mixtures, drawn once from held-apart speakers and noise files")
    group.add_argument("--valid_fraction", type=float, default=0.1,
                       help="Share of speaker groups and noise files held apart for validation")
    group.add_argument("--cache_dir", type=str, default=None,
                       help="Folder of decoded audio and simulated rooms (default ~/.cache/echo/decoded)")
    return parser


def open_corpora(options, sr, seed):
    """(train speech, valid speech, train noise, valid noise, room bank or None); every problem with
    a folder is a one-line AudioError before training starts."""
    MixtureConfig(segment=1, snr_range=options["snr_range"], gain_range=options["gain_range"],
                  reverb_prob=options["reverb_prob"]).check()
    if not 0.0 < options["valid_fraction"] < 1.0:
        raise ValueError(f"--valid_fraction {options['valid_fraction']}: must lie in (0, 1)")
    cache = options["cache_dir"]
    speech = AudioCorpus(options["speech_dir"], sr, cache, what="speech")
    noise = AudioCorpus(options["noise_dir"], sr, cache, what="noise")
    train_speech, valid_speech = held_apart(speech, options["valid_fraction"], seed, "speech", by_speaker=True)
    train_noise, valid_noise = held_apart(noise, options["valid_fraction"], seed, "noise", by_speaker=False)
    rirs = None
    if options["reverb_prob"] > 0:
        if options["rir_dir"]:
            rirs = RirBank.from_corpus(AudioCorpus(options["rir_dir"], sr, cache, what="impulse response",
                                                   min_seconds=0.0), options["early_ms"])
        else:
            rirs = RirBank.simulated(options["n_rooms"], sr, seed, cache, options["early_ms"])
    print(f"on-the-fly mixing: {len(train_speech)} speech files ({train_speech.seconds() / 3600:.2f} h) and "
          f"{len(train_noise)} noise files ({train_noise.seconds() / 3600:.2f} h) for training, "
          f"{len(valid_speech)} and {len(valid_noise)} held apart for validation; "
          + (f"rooms: {rirs.source}, p = {options['reverb_prob']}" if rirs else "no reverberation"), flush=True)
    return train_speech, valid_speech, train_noise, valid_noise, rirs
