import numpy as np
import pytest
import soundfile as sf
import torch

from echo.data_module import SpecsDataModule, crop_or_pad, normalization_factor
from echo.spectral import Spectrogram, pad_frames
from echo.util.audio import AudioError


def write_pair(root, split, name, clean, noisy, sr=16000):
    for kind, data in (("clean", clean), ("noisy", noisy)):
        path = root / split / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sr)


def make_tree(root, n=3, seconds=1.0, sr=16000, splits=("train", "valid")):
    rng = np.random.default_rng(0)
    for split in splits:
        for i in range(n):
            clean = 0.3 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
            write_pair(root, split, f"sub/f{i}.wav", clean, clean + 0.1 * rng.standard_normal(clean.size).astype(np.float32), sr)
    return root


def test_stft_settings_and_inverse():
    spec = Spectrogram()
    wav = torch.randn(32640)
    s = spec.stft(wav)
    assert s.shape == (256, 256) and s.dtype == torch.complex64
    assert torch.allclose(spec.to_wav(spec.to_spec(wav), 32640), wav, atol=1e-5)
    # compression: beta |c|^alpha e^{j angle c}
    c = torch.tensor([4.0 + 0j, -9j])
    out = spec.compress(c)
    assert torch.allclose(out.abs(), 0.15 * c.abs() ** 0.5)
    assert torch.allclose(out.angle(), c.angle())


def test_pad_frames():
    x = torch.zeros(1, 1, 256, 100, dtype=torch.complex64)
    assert pad_frames(x, 64).shape[-1] == 128
    assert pad_frames(torch.zeros(1, 1, 256, 128), 64).shape[-1] == 128


def test_crop_and_pad():
    a = torch.arange(10.0)
    c, n = crop_or_pad(a, a, 4, random_crop=False)
    assert c.tolist() == [3, 4, 5, 6]
    c, n = crop_or_pad(a[:3], a[:3], 7, random_crop=False)
    assert c.tolist() == [0, 0, 0, 1, 2, 0, 0]
    c, n = crop_or_pad(a, a + 100, 4, random_crop=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(n - c, torch.full((4,), 100.0))  # same window for both


def test_normalization_guards_silence():
    z = torch.zeros(10)
    assert normalization_factor(z, z, "noisy") == 1.0
    assert normalization_factor(z, torch.tensor([0.0, -0.5]), "noisy") == 0.5


def test_batches_have_the_documented_shape(tmp_path):
    make_tree(tmp_path)
    dm = SpecsDataModule(base_dir=tmp_path, batch_size=2, num_workers=0, num_frames=64, normalize_span="crop")
    dm.setup("fit")
    clean, noisy = next(iter(dm.train_dataloader()))
    assert clean.shape == noisy.shape == (2, 1, 256, 64) and clean.dtype == torch.complex64
    # normalised by the noisy peak of the crop: |noisy| max in time domain is 1
    wav = dm.spectrogram.to_wav(noisy[0, 0], dm.spectrogram.samples_for_frames(64))
    assert wav.abs().max().item() == pytest.approx(1.0, abs=0.02)


def test_file_span_divides_crops_by_the_peak_of_the_whole_file(tmp_path):
    """The default: a crop is divided by its file's peak, as enhancement divides a recording,
    so a quiet crop of a file with a loud passage elsewhere stays quiet."""
    sr, n = 16000, 32000
    noisy = np.full(n, 0.1, dtype=np.float32) * np.sin(np.arange(n) * 0.05).astype(np.float32)
    noisy[-200:] = 0.8  # the file's peak, outside a centred 64-frame crop
    write_pair(tmp_path, "valid", "a.wav", 0.5 * noisy, noisy, sr)
    write_pair(tmp_path, "train", "a.wav", 0.5 * noisy, noisy, sr)
    levels = {}
    for span in ("file", "crop"):
        dm = SpecsDataModule(base_dir=tmp_path, batch_size=1, num_workers=0, num_frames=64, normalize_span=span)
        dm.setup("fit")
        clean_spec, spec = dm.datasets["valid"][0]
        length = dm.spectrogram.samples_for_frames(64)
        noisy_wav = dm.spectrogram.to_wav(spec[0], length)
        levels[span] = noisy_wav.abs().max().item()
        # the target is divided by the same factor as the mixture: clean = 0.5 x noisy stays so
        # (to the 16-bit step of the files, 3e-5, times the gain of the normalisation, 10 for a crop;
        # measured: 2e-5 with the file's peak, 1.5e-4 with the crop's)
        clean_wav = dm.spectrogram.to_wav(clean_spec[0], length)
        assert torch.allclose(clean_wav, 0.5 * noisy_wav, atol=1e-3), span
    assert levels["crop"] == pytest.approx(1.0, abs=0.02)
    assert levels["file"] == pytest.approx(0.1 / 0.8, abs=0.01)
    with pytest.raises(ValueError, match="normalize_span"):
        SpecsDataModule(base_dir=tmp_path, num_workers=0, normalize_span="chunk").make_dataset("train")


def test_validation_crop_is_deterministic(tmp_path):
    make_tree(tmp_path)
    dm = SpecsDataModule(base_dir=tmp_path, batch_size=1, num_workers=0, num_frames=32)
    dm.setup("fit")
    a = dm.datasets["valid"][0][0]
    b = dm.datasets["valid"][0][0]
    assert torch.equal(a, b)


def test_pairs_by_relative_name_not_position(tmp_path):
    make_tree(tmp_path, n=2)
    (tmp_path / "train" / "noisy" / "sub" / "f1.wav").rename(tmp_path / "train" / "noisy" / "sub" / "zz.wav")
    dm = SpecsDataModule(base_dir=tmp_path, num_workers=0)
    with pytest.raises(AudioError, match=r"f1\.wav.*zz\.wav|without a noisy partner"):
        dm.setup("fit")


def test_wrong_sample_rate_is_explained(tmp_path):
    make_tree(tmp_path, n=1)
    x = np.zeros(4800, dtype=np.float32)
    write_pair(tmp_path, "train", "bad48k.wav", x, x, sr=48000)
    dm = SpecsDataModule(base_dir=tmp_path, num_workers=0)
    with pytest.raises(AudioError, match=r"bad48k\.wav: sample rate 48000 Hz.*--resample"):
        dm.setup("fit")


def test_resample_on_load_behind_flag(tmp_path):
    make_tree(tmp_path, n=1)
    x = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    write_pair(tmp_path, "train", "r48k.wav", x, x, sr=48000)
    dm = SpecsDataModule(base_dir=tmp_path, num_workers=0, num_frames=32, resample=True)
    dm.setup("fit")
    clean, noisy, _ = dm.datasets["train"].load_pair([p[0] for p in dm.datasets["train"].pairs].index("r48k"))
    assert clean.shape[-1] == 16000


def test_stereo_is_explained(tmp_path):
    make_tree(tmp_path, n=1)
    x = np.zeros((1600, 2), dtype=np.float32)
    write_pair(tmp_path, "valid", "st.wav", x, x)
    with pytest.raises(AudioError, match=r"st\.wav: 2 channels.*--downmix"):
        SpecsDataModule(base_dir=tmp_path, num_workers=0).setup("fit")


def test_missing_split_is_explained(tmp_path):
    make_tree(tmp_path, splits=("train",))
    with pytest.raises(AudioError, match="valid.*does not exist"):
        SpecsDataModule(base_dir=tmp_path, num_workers=0).setup("fit")


def test_flac_and_subfolders(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "valid"):
        x = (0.2 * rng.standard_normal(8000)).astype(np.float32)
        for kind in ("clean", "noisy"):
            p = tmp_path / split / kind / "a" / "b" / "utt.flac"
            p.parent.mkdir(parents=True)
            sf.write(p, x, 16000)
    dm = SpecsDataModule(base_dir=tmp_path, num_workers=0, num_frames=16, batch_size=1)
    dm.setup("fit")
    assert dm.datasets["train"].pairs[0][0] == "a/b/utt"


def test_real_vbdmd_pairs_load():
    from conftest import shared_data
    root = shared_data("vbdmd_test")
    from echo.data_module import SpecsDataset
    from echo.util.audio import pair_audio
    pairs = pair_audio(root / "clean", root / "noisy")[:3]
    ds = SpecsDataset(pairs, Spectrogram(), num_frames=256)
    clean, noisy = ds[0]
    assert clean.shape == (1, 256, 256) and torch.isfinite(noisy.abs()).all()
