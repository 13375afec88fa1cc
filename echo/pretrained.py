"""Shipped models: a training checkpoint cut down to what enhancement needs.

    python -m echo.pretrained --ckpt logs/echo/version_0/checkpoints/last.ckpt \
        --out pretrained/echo_cpu_small.ckpt --predictor ddim --N 1

The shipped file keeps the EMA weights and the hyper-parameters, adds the sampler the model is
meant to be used with (enhancement.py's default for it) and how long it trained, and drops the
optimizer state, the noise bank and the training weights (a quarter of the size). It loads with
``torch.load(weights_only=True)`` like any checkpoint here. ``train.py --init_weights FILE``
continues training from it with a fresh optimizer.
"""
import argparse
import hashlib
import sys
from pathlib import Path

import torch

from echo.checkpoints import CheckpointError, read_checkpoint
from echo.training_clock import training_seconds
from echo.util.audio import staged_file

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_MODEL = SHIPPED_DIR / "echo_cpu_small.ckpt"
FORMAT = "echo-shipped-1"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_training(ckpt: dict) -> dict:
    """Steps and seconds of training a checkpoint records: a shipped file's own record, else the
    training checkpoint's step counter and clock."""
    if "training" in ckpt:
        return dict(ckpt["training"])
    return {"steps": int(ckpt.get("global_step", 0)), "seconds": round(training_seconds(ckpt), 1)}


def export(ckpt_path, out_path, predictor: str, N: int, previous=None, draws: int = 1) -> dict:
    """Write the shipped file; ``previous``: the shipped file whose weights this run started from
    (``train.py --init_weights``), whose steps are added to this run's (the step counter restarted;
    the training clock did not, it already counts the earlier hours)."""
    ckpt = read_checkpoint(ckpt_path)
    training = shipped_training(ckpt)
    if previous is not None:
        training["steps"] += shipped_training(read_checkpoint(previous))["steps"]
    shipped = {
        "format": FORMAT,
        "state_dict": ckpt["state_dict"],
        "hyper_parameters": dict(ckpt["hyper_parameters"]),
        "sampler": {"predictor": predictor, "N": int(N), **({"draws": int(draws)} if draws != 1 else {})},
        "training": training,
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(out_path) as tmp:
        torch.save(shipped, tmp)
    return {"path": str(out_path), "sha256": sha256(out_path), "bytes": out_path.stat().st_size, **training}


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m echo.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="training checkpoint (last.ckpt) whose EMA weights to ship")
    parser.add_argument("--out", default=str(DEFAULT_MODEL), help="file to write")
    parser.add_argument("--predictor", default="ddim", help="the model's default sampler in enhancement.py")
    parser.add_argument("--N", type=int, default=1, help="the model's default number of reverse steps")
    parser.add_argument("--draws", type=int, default=1,
                        help="the model's default number of draws whose estimates are averaged (enhancement.py "
                             "--draws; default 1)")
    parser.add_argument("--previous", default=None,
                        help="the shipped file this run was started from (train.py --init_weights), so its "
                             "steps are counted too (its hours already are, by the training clock)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.draws < 1:
            raise CheckpointError(f"--draws must be at least 1, got {args.draws}")
        info = export(args.ckpt, args.out, args.predictor, args.N, args.previous, args.draws)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['steps']} steps, "
          f"{info['seconds'] / 3600:.2f} h of training, sha256 {info['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
