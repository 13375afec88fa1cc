"""Loading checkpoints safely.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only,
so a file that carries a pickled object (which could run code when unpickled) is refused
instead of executed.
"""
import pickle
from pathlib import Path

import torch

# hyper-parameters that change the network or the signal path: a checkpoint cannot be resumed
# or used with values other than its own
ARCHITECTURE_KEYS = ("backbone", "sde", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "deform",
                     "scale_by_sigma", "output_scaling", "sigma_data", "fourier_scale", "sr", "n_fft", "hop_length", "transform_type",
                     "spec_factor", "spec_abs_exponent")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line and names the file."""


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(f"{path}: refused: the file holds pickled objects besides tensors and plain "
                              f"values, which could run code when loaded ({detail.strip() or 'not weights-only'})") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or corrupt "
                              f"({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not an ECHO checkpoint (no state_dict / hyper_parameters)")
    return ckpt


def architecture_differences(saved: dict, wanted: dict) -> list:
    diffs = []
    for key in ARCHITECTURE_KEYS:
        if key in saved and key in wanted and _norm(saved[key]) != _norm(wanted[key]):
            diffs.append(f"{key}={_norm(wanted[key])} (checkpoint: {_norm(saved[key])})")
    return diffs


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# what Lightning needs to continue a run besides the weights
TRAINING_STATE_KEYS = ("optimizer_states", "loops", "global_step", "epoch", "pytorch-lightning_version")


def check_resume_compatible(path, model_kwargs: dict) -> dict:
    """Fail with one line when the file is not a safe, complete training checkpoint or the flags
    describe another network than the checkpoint's; returns its hyper-parameters.

    Reading it here, with ``weights_only=True``, is what keeps a pickled payload from running:
    train.py calls this before Lightning opens the file."""
    ckpt = read_checkpoint(path)
    missing = [key for key in TRAINING_STATE_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: holds weights but no training state ({', '.join(missing)} missing), "
                              "so training cannot resume from it; use it for enhancement or start a new run")
    saved = ckpt["hyper_parameters"]
    diffs = architecture_differences(saved, model_kwargs)
    if diffs:
        raise CheckpointError(f"{path}: was trained with other settings; pass the checkpoint's values or "
                              f"start a new run: " + ", ".join(diffs))
    return saved


def load_model(path, device="cpu", expect=None):
    """The ScoreModel of a checkpoint with its (EMA) weights, in eval mode on ``device``.

    ``expect``: optional hyper-parameters (e.g. STFT settings given on a command line) that must
    match the checkpoint's.
    """
    from echo.model import ScoreModel  # the model imports Lightning; keep this module light

    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    if expect:
        diffs = architecture_differences(hparams, expect)
        if diffs:
            raise CheckpointError(f"{path}: settings differ from the checkpoint's: " + ", ".join(diffs))
    try:
        model = ScoreModel(**hparams)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: hyper-parameters do not describe an ECHO model ({err})") from None
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as err:  # tensor shapes that do not fit
        first = str(err).strip().splitlines()[1:2] or [type(err).__name__]
        raise CheckpointError(f"{path}: weights do not fit the network its hyper-parameters describe "
                              f"({first[0].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the network its hyper-parameters describe "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
                              f"{(missing or unexpected)[0]})")
    # a shipped model (echo.pretrained) names the sampler it is meant to be used with
    model.shipped_sampler = dict(ckpt.get("sampler", {}))
    return model.to(device).eval()
