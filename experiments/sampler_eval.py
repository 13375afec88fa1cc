"""Score one checkpoint under several sampler settings on paired real recordings, in-process.

    python experiments/sampler_eval.py --ckpt last.ckpt --clean_dir C --noisy_dir N \
        --settings echo_posterior:1 ddim:3 echo_posterior:20 --n_files 24 --out scores.json

Each setting is ``predictor:N``. The files are enhanced with ``echo.enhance.enhance_audio`` (the
code path of enhancement.py) and scored with ``echo.util.metrics`` (that of calc_metrics.py):
PESQ, ESTOI, SI-SDR, the output level relative to the clean reference in dB, the share of
samples at full scale (a written 16-bit file would clip them), and the real-time factor of
the sampling (model loading excluded).
"""
import argparse
import json
import math
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from echo.checkpoints import load_model  # noqa: E402
from echo.enhance import enhance_audio  # noqa: E402
from echo.util.audio import list_audio, read_audio  # noqa: E402
from echo.util.metrics import estoi, pesq_wb, si_sdr  # noqa: E402
from echo.util.process_settings import torch_threads  # noqa: E402
from stats import fmt_ci, mean_ci95, paired_gain  # noqa: E402

CLIP_LEVEL = 32767 / 32768


class Setting(namedtuple("Setting", "predictor N t_start", defaults=(None,))):
    """A sampler setting: predictor:N, or predictor:N@t_start for a warm start (``echo.sampling``)."""

    @property
    def name(self):
        return f"{self.predictor}:{self.N}" + ("" if self.t_start is None else f"@{self.t_start:g}")

    def kwargs(self):
        return dict(predictor=self.predictor, N=self.N, **({} if self.t_start is None else {"t_start": self.t_start}))


def parse_setting(text):
    predictor, _, rest = text.partition(":")
    steps, warm, t_start = rest.partition("@")
    try:
        return Setting(predictor, int(steps), float(t_start) if warm else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"setting '{text}': expected predictor:N or predictor:N@t_start, "
                                         f"e.g. ddim:3 or ddpm:2@0.5") from None


def evenly_spaced(items, n):
    if not n or n >= len(items):
        return list(items)
    return [items[int(i * len(items) / n)] for i in range(n)]


def level_db(reference, estimate):
    """RMS of the estimate over that of the reference, in dB."""
    num = float(np.sqrt(np.mean(np.square(estimate, dtype=np.float64))))
    den = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    return 20 * math.log10(max(num, 1e-12) / max(den, 1e-12))


def score(clean, estimate, sr):
    return {"pesq": pesq_wb(clean, estimate, sr), "estoi": estoi(clean, estimate, sr),
            "si_sdr": si_sdr(clean, estimate), "level_db": level_db(clean, estimate),
            "clipped": float(np.mean(np.abs(estimate) >= CLIP_LEVEL))}


def load_pairs(clean_dir, noisy_dir, n_files):
    pairs = []
    for rel in evenly_spaced(list_audio(noisy_dir), n_files):
        noisy, sr = read_audio(Path(noisy_dir) / rel)
        clean, sr_clean = read_audio(Path(clean_dir) / rel)
        assert sr == sr_clean, rel
        pairs.append((rel, clean[0], noisy[0], sr))
    return pairs


def evaluate(ckpt, pairs, settings, seed=0, threads=0):
    """{"noisy": per-file scores, setting: {"files": [...], "rtf": float}}; sampling runs on
    ``threads`` torch threads (0: as the caller has it), set back on return."""
    with torch_threads(threads):
        return _evaluate(ckpt, pairs, settings, seed)


def _evaluate(ckpt, pairs, settings, seed):
    model = load_model(ckpt)
    results = {"noisy": {"files": [score(c, n, sr) for _, c, n, sr in pairs]}}
    for setting in map(lambda s: Setting(*s), settings):
        files, seconds, audio_seconds = [], 0.0, 0.0
        for rel, clean, noisy, sr in pairs:
            generator = torch.Generator().manual_seed(seed)
            started = time.perf_counter()
            out = enhance_audio(model, noisy, sr, setting.kwargs(), generator)
            seconds += time.perf_counter() - started
            audio_seconds += len(noisy) / sr
            files.append(score(clean, out, sr))
        results[setting.name] = {"files": files, "rtf": seconds / audio_seconds}
    return results


def summary(results, metrics=("pesq", "estoi", "si_sdr")):
    """Per setting: mean and paired gain over the noisy input for each metric, the median level
    and the largest clipped share."""
    noisy = results["noisy"]["files"]
    table = {}
    for name, record in results.items():
        files = record["files"]
        row = {"rtf": record.get("rtf")}
        for metric in metrics:
            values = [f[metric] for f in files]
            row[metric] = mean_ci95(values)[:2]
            row[f"d_{metric}"] = paired_gain(values, [f[metric] for f in noisy])[:2]
        row["level_db_median"] = float(np.median([f["level_db"] for f in files]))
        row["clipped_max"] = max(f["clipped"] for f in files)
        table[name] = row
    return table


def markdown_table(table):
    """Lines of a markdown table of ``summary``'s rows: scores, paired gains, level, clipping, RTF."""
    lines = ["| sampler | PESQ | Δ PESQ | Δ ESTOI | Δ SI-SDR (dB) | level (dB) | clipped | RTF |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | {fmt_ci(*row['pesq'])} | {fmt_ci(*row['d_pesq'], 3, True)} | "
                     f"{fmt_ci(*row['d_estoi'], 3, True)} | {fmt_ci(*row['d_si_sdr'], 2, True)} | "
                     f"{row['level_db_median']:+.1f} | {row['clipped_max']:.4f} | "
                     f"{'-' if row['rtf'] is None else format(row['rtf'], '.3f')} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint to evaluate")
    parser.add_argument("--clean_dir", required=True, help="clean references")
    parser.add_argument("--noisy_dir", required=True, help="noisy inputs, paired with the clean files by name")
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[Setting("echo_posterior", 1)],
                        help="sampler settings as predictor:N, or predictor:N@t_start for a warm start "
                             "from the one-step estimate re-noised to t_start (ddim/ddpm)")
    parser.add_argument("--n_files", type=int, default=0, help="use this many files, evenly spaced (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", required=True, help="JSON file for the per-file scores and the summary")
    parser.add_argument("--markdown", default=None, help="also write the summary table to this markdown file")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.clean_dir, args.noisy_dir, args.n_files)
    results = evaluate(args.ckpt, pairs, args.settings, args.seed, args.threads)
    Path(args.out).write_text(json.dumps({"ckpt": args.ckpt, "files": [p[0] for p in pairs],
                                          "results": results, "summary": summary(results)}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(markdown_table(summary(results))) + "\n")
    for name, row in summary(results).items():
        print(f"{name:20s} PESQ {row['pesq'][0]:.3f} ({row['d_pesq'][0]:+.3f})  SI-SDR {row['si_sdr'][0]:6.2f} "
              f"({row['d_si_sdr'][0]:+.2f})  level {row['level_db_median']:+.1f} dB  clip {row['clipped_max']:.4f}  "
              f"rtf {row['rtf'] or 0:.3f}")


if __name__ == "__main__":
    main()
