"""bf16 end to end: train.py --precision bf16-mixed on the CPU, and the quality of bf16
enhancement against fp32 on real recordings with the model that run trained."""
import csv
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import train
from conftest import TINY_ARGS, shared_data
from echo.checkpoints import load_model
from echo.data_module import SpecsDataModule
from echo.enhance import enhance_audio
from echo.model import ScoreModel
from echo.util.audio import read_audio
from echo.util.metrics import pesq_wb, si_sdr
from echo.util.precision import set_inference_precision
from echo.util.process_settings import environment_restored
from echo.util.seeding import derive_seed

STEPS = 40
SEED = 0
# lr 2e-3 gets past the start, where the zero-initialised output layers let the loss move only
# slowly; EMA 0.5 makes the checkpoint's averaged weights those the run ended with
TRAIN_ARGS = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0",
              "--logger", "csv", "--log_every_n_steps", "1", "--num_eval_files", "0", *TINY_ARGS,
              "--precision", "bf16-mixed", "--max_steps", str(STEPS), "--lr", "2e-3", "--ema_decay", "0.5",
              "--seed", str(SEED)]
TWO_FILES = ("p232_001.wav", "p232_002.wav")
QUICK_SAMPLER = {"predictor": "ddim", "N": 5}


@pytest.fixture(scope="module")
def bf16_run(synth_dataset, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("bf16_logs")
    train.main(["--base_dir", str(synth_dataset), "--log_dir", str(log_dir), *TRAIN_ARGS])
    version = sorted(log_dir.glob("echo/version_*"))[-1]
    return version / "checkpoints" / "last.ckpt", version / "metrics.csv"


def fixed_batch_loss(model, batch, draws=8):
    """The training loss of one batch averaged over fixed draws of t and noise: the same number
    for the same weights, unlike the logged losses, whose t and noise change every step."""
    with torch.no_grad():
        return float(np.mean([model._step(batch, training=False,
                                          generators=(torch.Generator().manual_seed(k),
                                                      torch.Generator().manual_seed(k))).item()
                              for k in range(draws)]))


def test_train_py_bf16_mixed_runs_on_cpu_and_the_loss_falls(bf16_run, synth_dataset):
    last, metrics = bf16_run
    with open(metrics) as f:
        losses = [float(r["train_loss_step"]) for r in csv.DictReader(f) if r.get("train_loss_step")]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == STEPS
    hparams = ckpt["hyper_parameters"]
    with environment_restored("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        pl.seed_everything(SEED, verbose=False)  # train.py's start: the same initial weights
    initial = ScoreModel(**hparams).eval()
    trained = ScoreModel(**hparams).eval()
    trained.load_state_dict(ckpt["current_model_state"])  # the training weights, not the EMA
    assert all(p.dtype == torch.float32 for p in trained.parameters())  # mixed: fp32 weights
    data = SpecsDataModule(base_dir=str(synth_dataset), batch_size=4, num_frames=16, num_workers=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    before, after = fixed_batch_loss(initial, batch), fixed_batch_loss(trained, batch)
    # after / before measured over seeds 0-4 on one thread: 0.852-0.924 (seed 0: 0.858; 0.865 on
    # two threads); weights that do not move give 1
    assert after < 0.97 * before, (before, after)


def test_bf16_enhancement_keeps_the_quality_of_fp32_on_two_real_files(bf16_run):
    """Per file: |PESQ(bf16) - PESQ(fp32)| and |SI-SDR(bf16) - SI-SDR(fp32)|, same seeds.

    The tolerance, 0.01 PESQ and 0.1 dB per file, is set from measurements: with a
    short-trained checkpoint (0.44 M parameters, 600 steps on real speech and noise; PESQ 2.44,
    SI-SDR 10.3 dB on these files) the largest differences over 12 VB-DMD test files were
    0.0073 PESQ and 0.044 dB with its own sampler (20 steps) and 0.0028 / 0.036 dB with this
    one (ddim, 5 steps); the model trained here, much weaker, gives 0.0008 / 0.004 dB.
    """
    clean_dir, noisy_dir = shared_data("vbdmd_test", "clean"), shared_data("vbdmd_test", "noisy")
    last, _ = bf16_run
    models = {"fp32": load_model(last), "bf16": set_inference_precision(load_model(last), "bf16")}
    for name in TWO_FILES:
        noisy, sr = read_audio(noisy_dir / name)
        clean, _ = read_audio(clean_dir / name)
        scores = {}
        for precision, model in models.items():
            generator = torch.Generator().manual_seed(derive_seed(SEED, name))
            enhanced = enhance_audio(model, noisy, sr, QUICK_SAMPLER, generator)
            assert np.all(np.isfinite(enhanced))
            scores[precision] = (pesq_wb(clean, enhanced, sr), si_sdr(clean, enhanced))
        pesq_diff = abs(scores["bf16"][0] - scores["fp32"][0])
        sisdr_diff = abs(scores["bf16"][1] - scores["fp32"][1])
        assert pesq_diff <= 0.01 and sisdr_diff <= 0.1, (name, scores)
