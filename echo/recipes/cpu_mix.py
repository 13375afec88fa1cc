"""The shipped CPU model trained on mixtures drawn on the fly: every example a new mixture of real
speech and real or generated noise, in a simulated room with probability ``--reverb_prob``.

    nohup python -m echo.recipes.cpu_mix --out_dir runs/cpu_mix > runs/cpu_mix.log 2>&1 &

Sources (``out_dir/sources``, staged once as links and generated files): all the speech under
``data_root/speech`` (every corpus, the LibriSpeech speakers of the babble held apart), the noise
recordings under ``data_root/noise``, the noise of the VoiceBank-DEMAND training pairs and the
DNS-3 synthetic pairs decoupled as noisy - clean, and the generated babble, speech-shaped and
coloured noise of ``echo.recipes.cpu_small``. The VoiceBank-DEMAND test pairs (p232) and the
DNS-3 blind recordings are never read.

Training: train.py in its on-the-fly mode (``echo.data.onthefly``) with the network of the
shipped model, continuing from its weights (``--init_ckpt``, default ``pretrained/
echo_cpu_small.ckpt``); bf16-mixed where the CPU or GPU multiplies bf16 in hardware, float32
elsewhere (said in the first line). The budget, resuming after a kill and the export work as in
``echo.recipes.cpu_small``.
"""
import argparse
import json
import sys
from pathlib import Path

from echo.checkpoints import CheckpointError, read_checkpoint
from echo.recipes import cpu_small
from echo.recipes.real_data import NOISE_PAIRS, stage_noise
from echo.training_clock import parse_max_time
from echo.util.audio import AudioError, list_audio
from echo.util.precision import bf16_units

SPEECH_FOLDER = "speech"
SNR_RANGE = (-5.0, 20.0)
REVERB_PROB = 0.3
# the shipped model's network and optimiser, and the crops of its stages 1-4 (the settings measured for
# it, and those of the bf16 parity bench; its later stages gave --num_frames/--batch_size: see its model card)
NETWORK_FLAGS = ["--nf", "32", "--ch_mult", "1", "2", "2", "2", "2", "--num_res_blocks", "2", "--attn_resolutions",
                 "--ema_decay", "0.999"]
NUM_FRAMES, BATCH_SIZE = 64, 4


def crop_flags(num_frames=NUM_FRAMES, batch_size=BATCH_SIZE):
    return ["--num_frames", str(num_frames), "--batch_size", str(batch_size)]


MODEL_FLAGS = NETWORK_FLAGS + crop_flags()
LR = 5e-4
DEFAULT_INIT = Path(__file__).resolve().parents[2] / "pretrained" / "echo_cpu_small.ckpt"


def stage_all_speech(data_root: Path, folder: Path, exclude=frozenset()) -> int:
    """Links ``folder/<corpus>/<file>`` to every speech file of every corpus under ``speech/``, so
    that the corpus name stays part of each file's speaker group (``echo.data.onthefly.speaker_group``)."""
    count = 0
    root = data_root / SPEECH_FOLDER
    if not root.is_dir():
        raise AudioError(f"{root}: speech folder not found (give --data_root)")
    for corpus in sorted(p for p in root.iterdir() if p.is_dir()):
        for rel in list_audio(corpus):
            if (f"{SPEECH_FOLDER}/{corpus.name}", rel) in exclude:
                continue
            link = folder / corpus.name / rel
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((corpus / rel).resolve())
            count += 1
    return count


def stage_sources(data_root, sources: Path, seed: int, log=print):
    data_root = Path(data_root)
    held_apart = cpu_small.babble_speakers(data_root, seed)
    n_speech = stage_all_speech(data_root, sources / "speech", {(cpu_small.BABBLE_CORPUS, rel) for rel in held_apart})
    n_noise = stage_noise(data_root, sources / "noise", NOISE_PAIRS)
    n_generated = cpu_small.write_generated_noise(data_root, sources / "noise", held_apart, seed)
    log(f"sources: {n_speech} speech files, {n_noise} noise recordings, {n_generated} generated noises "
        f"(staged in {sources})")


def training_precision(device="cpu"):
    """('bf16-mixed' or '32-true', the reason): bf16 only where the hardware multiplies it."""
    import torch

    has_units, reason = bf16_units(torch.device(device))
    return ("bf16-mixed" if has_units else "32-true"), reason


def mix_seed_for(args, out_dir: Path) -> int:
    """The seed of this run's training mixtures (train.py --mix_seed). By default the steps the
    starting model has trained (0 from random weights): a continuation of the shipped model draws
    mixtures that the stages before it never drew, where the run's --seed alone would replay them
    (its draws are a function of (seed, step, index), and every stage counts its steps from 0).
    Recorded in ``out_dir`` at the first start, so that a resumed run draws what it drew before."""
    record = out_dir / "mix_seed.json"
    if record.is_file():
        saved = int(json.loads(record.read_text())["mix_seed"])
        if args.mix_seed is not None and args.mix_seed != saved:
            raise CheckpointError(f"{out_dir} was started with --mix_seed {saved}: give that, or a new --out_dir")
        return saved
    if args.mix_seed is not None:
        seed = args.mix_seed
    elif args.init_ckpt is not None:
        from echo.pretrained import shipped_training  # imports torch: only here
        seed = shipped_training(read_checkpoint(args.init_ckpt))["steps"]
    else:
        seed = args.seed
    out_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"mix_seed": seed, "init_ckpt": args.init_ckpt}) + "\n")
    return seed


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m echo.recipes.cpu_mix", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data_root", default="../shared/data",
                        help="folder holding speech/, noise/, vbdmd_train_sample/ and dns3_test_sample/")
    parser.add_argument("--out_dir", default="runs/cpu_mix", help="folder for the staged sources and the run")
    cpu_small.add_run_args(parser, init_default=str(DEFAULT_INIT))
    parser.add_argument("--reverb_prob", type=float, default=REVERB_PROB,
                        help="probability that the speech, and independently the noise, is heard in a room")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (train.py --lr)")
    parser.add_argument("--lr_decay_steps", type=int, default=0,
                        help="train.py --lr_decay_steps: steps of a linear fall of the learning rate to 0 "
                             "(0: constant; counted from the run's first step)")
    parser.add_argument("--num_frames", type=int, default=NUM_FRAMES,
                        help="frames per training crop (train.py --num_frames; 64 frames = 0.51 s); a step costs "
                             "about num_frames x batch_size, so trade one against the other at a fixed budget")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE, help="crops per optimizer step (train.py --batch_size)")
    parser.add_argument("--sde", default="echo", choices=("echo", "predictive"),
                        help="echo: the shipped model's training; predictive: the same network and data trained "
                             "as a plain predictive model (the twin that asks whether the diffusion pays; starts "
                             "from random weights: give --init_ckpt none)")
    parser.add_argument("--mix_seed", type=int, default=None,
                        help="seed of the training mixtures (train.py --mix_seed); default: the steps the "
                             "--init_ckpt model has trained, so that each continuation draws new mixtures "
                             "(--seed without a starting model)")
    parser.add_argument("--precision", default="auto",
                        help="train.py --precision; auto: bf16-mixed where the hardware multiplies bf16, else 32-true")
    parser.add_argument("--sources_only", action="store_true", help="stage the sources and stop")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.init_ckpt == "none":
        args.init_ckpt = None
    if args.sde != "echo" and args.init_ckpt is not None:
        # train.py takes the network settings, the SDE included, from --init_weights: the twin
        # would silently go on training ECHO
        print(f"error: --sde {args.sde} trains a new network: give --init_ckpt none (not {args.init_ckpt})",
              file=sys.stderr)
        return 2
    try:
        parse_max_time(args.max_time)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    precision, reason = (args.precision, "as asked") if args.precision != "auto" else training_precision()
    print(f"precision: {precision} ({reason})", flush=True)
    sources = Path(args.out_dir) / "sources"
    try:
        stage_sources(args.data_root, sources, args.seed)
    except AudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.sources_only:
        return 0
    data_flags = ["--speech_dir", str(sources / "speech"), "--noise_dir", str(sources / "noise"),
                  "--snr_range", *map(str, SNR_RANGE), "--gain_range", *map(str, cpu_small.GAIN_RANGE),
                  "--reverb_prob", str(args.reverb_prob)]
    try:
        mix_seed = mix_seed_for(args, Path(args.out_dir))
        print(f"mixtures: --mix_seed {mix_seed}", flush=True)
        data_flags += ["--mix_seed", str(mix_seed)]
        schedule = ["--lr", str(args.lr), "--lr_decay_steps", str(args.lr_decay_steps), "--sde", args.sde]
        model_flags = NETWORK_FLAGS + crop_flags(args.num_frames, args.batch_size) + schedule
        return cpu_small.train(args, data_flags, model_flags, ["--precision", precision])
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
