"""Waveform <-> compressed complex spectrogram, as in SGMSE+ and ECHO (METHOD.md section 1).

One object holds the STFT settings so that training, validation and enhancement can never
disagree about them; its settings are saved in every checkpoint.
"""
import math
from dataclasses import asdict, dataclass

import torch

TRANSFORM_TYPES = ("exponent", "log", "none")


@dataclass(frozen=True)
class SpecConfig:
    n_fft: int = 510
    hop_length: int = 128
    transform_type: str = "exponent"
    spec_factor: float = 0.15
    spec_abs_exponent: float = 0.5

    def __post_init__(self):
        if self.transform_type not in TRANSFORM_TYPES:
            raise ValueError(f"transform_type must be one of {TRANSFORM_TYPES}, got '{self.transform_type}'")
        if self.n_fft < 2 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ValueError(f"invalid STFT settings n_fft={self.n_fft} hop_length={self.hop_length}")

    def as_dict(self):
        return asdict(self)


class Spectrogram:
    """STFT (periodic Hann, centre, reflect padding) followed by the amplitude compression."""

    def __init__(self, config: SpecConfig = SpecConfig()):
        self.config = config
        self._windows = {}  # (device, dtype) -> window; built once, reused every call

    @property
    def num_bins(self):
        return self.config.n_fft // 2 + 1

    def _window(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._windows:
            self._windows[key] = torch.hann_window(self.config.n_fft, periodic=True, device=device, dtype=dtype)
        return self._windows[key]

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """[..., samples] real -> [..., bins, frames] complex."""
        shape = wav.shape
        flat = wav.reshape(-1, shape[-1])
        spec = torch.stft(flat, self.config.n_fft, self.config.hop_length,
                          window=self._window(wav.device, wav.dtype), center=True,
                          pad_mode="reflect", normalized=False, return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """[..., bins, frames] complex -> [..., length] real."""
        shape = spec.shape
        flat = spec.reshape(-1, *shape[-2:])
        real_dtype = flat.real.dtype
        wav = torch.istft(flat, self.config.n_fft, self.config.hop_length,
                          window=self._window(spec.device, real_dtype), center=True,
                          normalized=False, length=length)
        return wav.reshape(*shape[:-2], wav.shape[-1])

    def compress(self, spec: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.transform_type == "exponent":
            if c.spec_abs_exponent != 1:
                spec = spec.abs() ** c.spec_abs_exponent * torch.exp(1j * spec.angle())
            return spec * c.spec_factor
        if c.transform_type == "log":
            return torch.log1p(spec.abs()) * torch.exp(1j * spec.angle()) * c.spec_factor
        return spec

    def decompress(self, spec: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.transform_type == "exponent":
            spec = spec / c.spec_factor
            if c.spec_abs_exponent != 1:
                spec = spec.abs() ** (1 / c.spec_abs_exponent) * torch.exp(1j * spec.angle())
            return spec
        if c.transform_type == "log":
            spec = spec / c.spec_factor
            return torch.expm1(spec.abs()) * torch.exp(1j * spec.angle())
        return spec

    def to_spec(self, wav: torch.Tensor) -> torch.Tensor:
        return self.compress(self.stft(wav))

    def to_wav(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return self.istft(self.decompress(spec), length)

    def samples_for_frames(self, num_frames: int) -> int:
        """Samples whose centred STFT has exactly ``num_frames`` frames."""
        return (num_frames - 1) * self.config.hop_length

    def frames_for_samples(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length


def pad_frames(spec: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the time axis (last) of a spectrogram up to a multiple of ``multiple`` frames.

    The U-Net halves the time axis once per level, so the frame count must be divisible by
    2**(levels-1); zero padding at the end is removed again when the iSTFT is cut to length.
    """
    frames = spec.shape[-1]
    target = int(math.ceil(frames / multiple) * multiple)
    if target == frames:
        return spec
    return torch.nn.functional.pad(spec, (0, target - frames))
