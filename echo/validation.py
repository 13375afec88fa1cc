"""Speech metrics during training: enhance a few validation files with the current (EMA)
weights and score them, so that checkpoints can be chosen by PESQ rather than by loss."""
import numpy as np
import torch

from echo.util.metrics import score_for_validation

FIGURE_SECONDS = 4.0


@torch.no_grad()
def evaluate_files(model, dataset, num_files, sampler_kwargs=None, seed=0):
    """Mean PESQ, ESTOI and SI-SDR over the first ``num_files`` pairs of ``dataset`` and the
    (clean, noisy, enhanced) waveforms of the first file, for a figure."""
    from echo.enhance import enhance_mono  # imported late: enhancement pulls in the resampler

    sr = model.hparams.sr
    scores, example = [], None
    generator = torch.Generator(device=model.device).manual_seed(seed)
    for index in range(min(num_files, len(dataset))):
        clean, noisy, _ = dataset.load_pair(index)
        enhanced = enhance_mono(model, noisy.to(model.device), sampler_kwargs or {}, generator).cpu()
        scores.append(score_for_validation(clean.numpy(), enhanced.numpy(), noisy.numpy(), sr))
        if example is None:
            example = (clean, noisy, enhanced)
    means = {key: float(np.nanmean([s[key] for s in scores])) for key in ("pesq", "estoi", "si_sdr")}
    return means, example


def spectrogram_figure(clean, noisy, enhanced, sr):
    """A noisy / enhanced / clean log-magnitude figure of the first seconds of one file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = int(FIGURE_SECONDS * sr)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    for ax, (title, wav) in zip(axes, (("noisy", noisy), ("enhanced", enhanced), ("clean", clean))):
        spec = torch.stft(wav[:n].float(), 512, 128, window=torch.hann_window(512), return_complex=True)
        ax.imshow(20 * torch.log10(spec.abs() + 1e-5).numpy(), origin="lower", aspect="auto",
                  vmin=-80, vmax=20, cmap="magma", extent=(0, spec.shape[-1] * 128 / sr, 0, sr / 2000))
        ax.set_title(title)
        ax.set_xlabel("time [s]")
    axes[0].set_ylabel("frequency [kHz]")
    fig.tight_layout()
    return fig
