"""Every training variant of the ablation study trains and enhances end to end.

Each variant (the SGMSE+ baseline ``--sde ouve``, the predictive baseline ``--sde predictive``,
the four re-mixup modes, plain NCSN++ ``--no-deform`` and the absolute-error loss) trains two
steps of the tiny model and enhances one file with the resulting checkpoint and the checkpoint's
own sampler, so that a variant that saves the wrong hyper-parameters, or that enhancement.py
would sample with the wrong sampler, fails here rather than in a long experiment.
"""
import json
import shutil

import pytest
import torch

import enhancement
import train
from conftest import TINY_ARGS

FAST_TRAIN = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
              "--num_eval_files", "0", "--logger", "csv", "--max_steps", "2", "--seed", "0", *TINY_ARGS]

# variant id -> (train.py flags, hyper-parameters the checkpoint must carry, sampler the
# checkpoint must default to, N given to enhancement.py)
VARIANTS = {
    # OUVE: 2 steps of reverse diffusion + annealed Langevin = 4 NFE instead of the default 60
    "ouve": (["--sde", "ouve"], dict(sde="ouve", deform=True),
             dict(predictor="reverse_diffusion", corrector="ald", snr=0.5), 2),
    # ECHO's discrete chain refuses 2 <= N < beta_max; N = 1 is a single clean-speech prediction
    "remix_echo": (["--remix", "echo"], dict(sde="echo", remix="echo", deform=True),
                   dict(predictor="echo_posterior", corrector="none"), 1),
    "remix_dans": (["--remix", "dans"], dict(sde="echo", remix="dans", deform=True),
                   dict(predictor="echo_posterior", corrector="none"), 1),
    "remix_own": (["--remix", "own"], dict(sde="echo", remix="own", deform=True),
                  dict(predictor="echo_posterior", corrector="none"), 1),
    "remix_none": (["--remix", "none"], dict(sde="echo", remix="none", deform=True),
                   dict(predictor="echo_posterior", corrector="none"), 1),
    "no_deform": (["--no-deform"], dict(sde="echo", remix="echo", deform=False),
                  dict(predictor="echo_posterior", corrector="none"), 1),
    # the same-budget predictive baseline: one network evaluation, no diffusion
    "predictive": (["--sde", "predictive"], dict(sde="predictive", N=1), dict(predictor="ddim", corrector="none"), 1),
    "loss_mae": (["--loss_type", "mae"], dict(sde="echo", loss_type="mae"),
                 dict(predictor="echo_posterior", corrector="none"), 1),
}
NFE_PER_STEP = {"none": 1, "ald": 2}  # a corrector step costs one more network evaluation


def train_two_steps(base_dir, log_dir, flags):
    train.main(["--base_dir", str(base_dir), "--log_dir", str(log_dir), *FAST_TRAIN, *flags])
    return sorted(log_dir.glob("echo/version_*/checkpoints/last.ckpt"))[-1]


def one_noisy_file(base_dir, folder):
    """A folder holding just the first noisy test file, so enhancement stays a second long."""
    folder.mkdir()
    first = sorted((base_dir / "test" / "noisy").glob("*.wav"))[0]
    shutil.copy(first, folder / first.name)
    return folder


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_and_enhances_with_its_own_sampler(variant, synth_dataset, tmp_path):
    flags, expected_hparams, expected_sampler, n_steps = VARIANTS[variant]
    ckpt_path = train_two_steps(synth_dataset, tmp_path / "logs", flags)

    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 2
    hparams = ckpt["hyper_parameters"]
    for key, value in expected_hparams.items():
        assert hparams[key] == value, f"{variant}: hyper-parameter {key}"

    noisy = one_noisy_file(synth_dataset, tmp_path / "noisy")
    enhanced = tmp_path / "enhanced"
    # only N is given: predictor, corrector and snr must come from the checkpoint's SDE
    code = enhancement.main(["--test_dir", str(noisy), "--enhanced_dir", str(enhanced), "--ckpt", str(ckpt_path),
                             "--device", "cpu", "--N", str(n_steps)])
    assert code == 0
    info = json.loads((enhanced / "run_info.json").read_text())
    assert info["files"] == {"done": 1, "skipped": 0, "failed": 0}
    sampler = info["sampler"]
    assert sampler["N"] == n_steps
    for key, value in expected_sampler.items():
        assert sampler[key] == value, f"{variant}: sampler {key}"
    assert info["nfe_per_sampling_pass"] == n_steps * NFE_PER_STEP[expected_sampler["corrector"]]
