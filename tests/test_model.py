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
    model = ScoreModel(**TINY_BACKBONE, lr=2e-3)
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
