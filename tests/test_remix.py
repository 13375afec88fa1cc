import pytest
import torch

from echo.remix import NoiseBank, decouple_noise, foreign_noise, remix


def cplx(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def test_decouple_normalises_by_batch_peak():
    clean, noisy = cplx(4, 1, 8, 8), cplx(4, 1, 8, 8, seed=1)
    n = decouple_noise(clean, noisy)
    assert n.abs().max().item() == pytest.approx(1.0)
    assert torch.allclose(n * (noisy - clean).abs().max(), noisy - clean)


def test_decouple_of_silence_is_finite():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.complex64)
    assert torch.isfinite(decouple_noise(x, x).abs()).all()


def test_echo_beta_is_per_example():
    own = torch.ones(64, 1, 4, 4, dtype=torch.complex64)
    foreign = torch.zeros_like(own)
    mixed = remix("echo", own, foreign, torch.Generator().manual_seed(0))
    betas = mixed[:, 0, 0, 0].real
    # one beta per example, constant inside the example, different across examples
    assert torch.allclose(mixed.real, betas.reshape(-1, 1, 1, 1).expand_as(mixed.real))
    assert betas.std() > 0.1 and betas.min() >= 0 and betas.max() <= 1


def test_modes():
    own, foreign = cplx(3, 1, 4, 4), cplx(3, 1, 4, 4, seed=2)
    assert remix("none", own, foreign) is None
    assert remix("own", own, foreign) is own
    assert remix("dans", own, foreign) is foreign
    with pytest.raises(ValueError, match="unknown remix"):
        remix("bogus", own, foreign)


def test_bank_is_bounded_fifo():
    bank = NoiseBank(5)
    for step in range(10):
        bank.push(torch.full((2, 1, 4, 4), float(step), dtype=torch.complex64))
        assert len(bank) == min(2 * (step + 1), 5)
    values = sorted({v.real.item() for v in bank.draw(500, torch.Generator().manual_seed(0))[:, 0, 0, 0]})
    assert values == [7.0, 8.0, 9.0]  # the 5 newest examples: 7, 8, 8, 9, 9
    assert bank._noise.shape[0] == 5


def test_empty_bank_uses_batch_permutation():
    bank = NoiseBank(4)
    own = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).to(torch.complex64)
    foreign = foreign_noise(bank, own, torch.Generator().manual_seed(0))
    assert sorted(foreign.real.flatten().tolist()) == list(range(6))
    single = own[:1]
    assert torch.equal(foreign_noise(bank, single), single)


def test_bank_state_roundtrip():
    bank = NoiseBank(3)
    bank.push(cplx(2, 1, 4, 4))
    other = NoiseBank(1)
    other.load_state_dict(bank.state_dict())
    assert len(other) == 2 and other.capacity == 3
    assert torch.equal(other._noise[:2], bank._noise[:2])


def test_bank_resets_on_shape_change():
    bank = NoiseBank(3)
    bank.push(cplx(2, 1, 4, 4))
    bank.push(cplx(1, 1, 4, 8))
    assert len(bank) == 1
