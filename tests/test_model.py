import pytest
import torch

from conftest import TINY_BACKBONE
from echo.checkpoints import CheckpointError, load_model, read_checkpoint
from echo.ema import ema_decay_at
from echo.model import ScoreModel


def fixed_batch(seed=0, batch=2, frames=16):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * 128, dtype=torch.float32) / 16000
    clean_wav = torch.stack([0.5 * torch.sin(2 * torch.pi * (200 + 100 * i) * t) for i in range(batch)])
    noisy_wav = clean_wav + 0.2 * torch.randn(clean_wav.shape, generator=g)
    model = ScoreModel(**TINY_BACKBONE)
    to_spec = model.spectrogram.to_spec
    return to_spec(clean_wav)[:, None, :, :frames], to_spec(noisy_wav)[:, None, :, :frames]


def test_hyperparameters_are_plain_values():
    model = ScoreModel(**TINY_BACKBONE)
    for key, value in model.hparams.items():
        assert isinstance(value, (int, float, str, bool, list, tuple, type(None))), key


def test_noise_bank_grows_in_training_only():
    torch.manual_seed(0)
    model = ScoreModel(**TINY_BACKBONE, noise_bank_size=3)
    batch = fixed_batch()
    model._step(batch, training=False)
    assert len(model.noise_bank) == 0
    model._step(batch, training=True)
    model._step(batch, training=True)
    assert len(model.noise_bank) == 3  # bounded: 2 + 2 examples pushed, 3 kept
    model._step(batch, training=False)
    assert len(model.noise_bank) == 3


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = ScoreModel(**TINY_BACKBONE, lr=2e-3, output_scaling="release")
    batch = fixed_batch()
    opt = model.configure_optimizers()
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same t, Gaussian noise and remix every step: a fixed objective
        loss = model._step(batch, training=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 3, (first, last)


@pytest.mark.parametrize("scaling", ["none", "after", "edm"])
def test_every_output_scaling_learns_one_batch(scaling):
    torch.manual_seed(0)
    model = ScoreModel(**TINY_BACKBONE, lr=2e-3, output_scaling=scaling)
    batch = fixed_batch()
    opt = model.configure_optimizers()
    losses = []
    for _ in range(80):
        torch.manual_seed(1)
        loss = model._step(batch, training=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5]) / 2, losses


def test_output_scaling_resolution_and_checkpoint_record():
    from echo.output_scaling import DEFAULT_OUTPUT_SCALING, resolve_output_scaling
    assert resolve_output_scaling() == DEFAULT_OUTPUT_SCALING
    assert resolve_output_scaling(prediction="score") == "release"
    # checkpoints written before --output_scaling existed carry scale_by_sigma only
    assert resolve_output_scaling(None, True) == "release"
    assert resolve_output_scaling(None, False) == "none"
    with pytest.raises(ValueError, match="contradicts"):
        resolve_output_scaling("edm", True)
    with pytest.raises(ValueError, match="edm"):
        resolve_output_scaling("edm", None, prediction="score")
    model = ScoreModel(**TINY_BACKBONE)
    assert model.hparams["output_scaling"] == DEFAULT_OUTPUT_SCALING  # resolved, not None
    assert model.dnn.scale_by_sigma == (DEFAULT_OUTPUT_SCALING == "release")
    old = ScoreModel(**TINY_BACKBONE, scale_by_sigma=True)
    assert old.output_scaling == "release" and old.dnn.scale_by_sigma


def test_edm_estimate_leans_on_the_state_at_small_t():
    """With the network's output at zero (its init), the EDM estimate is c_skip x_t / alpha:
    near zero at t = 1, most of the state at small t."""
    from echo.output_scaling import edm_coefficients
    model = ScoreModel(**TINY_BACKBONE, output_scaling="edm").eval()
    for p in model.dnn.output_layer.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 1, 256, 16, dtype=torch.cfloat)
    for t in (1.0, 0.04):
        tt = torch.tensor([t])
        alpha, sigma = model.sde.alpha(tt), model.sde.sigma(tt)
        _, c_skip, _ = edm_coefficients(alpha, sigma, model.sigma_data)
        with torch.no_grad():
            assert torch.allclose(model(x, x, tt), c_skip * x / alpha, atol=1e-6)
    assert edm_coefficients(model.sde.alpha(torch.tensor(1.0)), model.sde.sigma(torch.tensor(1.0)), 0.1)[1] < 0.001


def test_ema_warmup():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.999, 10**6) == 0.999


def test_checkpoint_roundtrip(tmp_path, tiny_ckpt):
    model = load_model(tiny_ckpt)
    assert not model.training
    ref = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, ref[name])


def test_checkpoint_of_other_network_is_refused(tmp_path, tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["nf"] = 32
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "other.ckpt")


def test_truncated_checkpoint_is_refused(tmp_path, tiny_ckpt):
    data = tiny_ckpt.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "cut.ckpt")


class _Payload:
    """Unpickling this object would create a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_never_runs(tmp_path, tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    marker = tmp_path / "payload-ran"
    ckpt["hyper_parameters"]["evil"] = _Payload(str(marker))
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        load_model(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_stft_settings_must_match(tiny_ckpt):
    with pytest.raises(CheckpointError, match="n_fft=1022"):
        load_model(tiny_ckpt, expect={"n_fft": 1022})
