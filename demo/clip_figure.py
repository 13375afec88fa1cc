"""Spectrograms of one real recording and its enhanced versions, side by side.

    python -m demo.clip_figure --noisy demo/real_clip/x.wav --enhanced demo=out/a/x.wav shipped=out/b/x.wav \
        --out clip.png
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from demo.plots import DISPLAY_HOP, DYNAMIC_RANGE_DB, magnitude_db  # noqa: E402
from echo.util.audio import read_audio  # noqa: E402


def plot_clip(noisy, enhanced: dict, out_png, title=None):
    """One panel per signal, in dB relative to the noisy input's peak (the only level every
    panel shares: there is no clean reference)."""
    panels = [("noisy input", noisy), *enhanced.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), sharey=True, layout="constrained",
                             squeeze=False)
    top, image = None, None
    for ax, (label, path) in zip(axes[0], panels):
        audio, sr = read_audio(path)
        spectrum = magnitude_db(audio[0])
        top = spectrum.max() if top is None else top
        image = ax.imshow(spectrum - top, origin="lower", aspect="auto", cmap="magma", vmin=-DYNAMIC_RANGE_DB, vmax=0,
                          extent=(0.0, spectrum.shape[1] * DISPLAY_HOP / sr, 0.0, sr / 2000.0))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("time [s]")
    axes[0][0].set_ylabel("kHz")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="dB re. noisy peak")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def parse_labelled(text):
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"'{text}': expected LABEL=FILE")
    return label, path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo.clip_figure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--noisy", required=True, help="the noisy recording")
    parser.add_argument("--enhanced", nargs="+", type=parse_labelled, required=True,
                        help="enhanced versions as LABEL=FILE, one panel each")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    print(f"wrote {plot_clip(args.noisy, dict(args.enhanced), args.out, args.title)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
