#!/usr/bin/env python
"""Enhance a folder of noisy recordings with a trained ECHO checkpoint.

    python enhancement.py --test_dir noisy/ --enhanced_dir enhanced/ --ckpt last.ckpt [--N 20]

Every .wav/.flac below --test_dir is enhanced into the same relative path below --enhanced_dir
(sub-folders kept, same extension, same rate, channel count, length and, where the format
allows, sample format). Files at any rate are resampled to the model's rate and back; long
files are enhanced in overlapping chunks (--chunk_seconds) so that memory stays bounded. The
model's band ends at half its rate (8 kHz): for files at a higher rate (44.1, 48 kHz) the band
above it is carried over from the input, attenuated as the model attenuated the top of its own
band (--high_band keep, the default), or left out (drop); the first line printed says so.

Resuming: a file whose output exists is skipped (--overwrite redoes it). Outputs are written
under a temporary name and renamed, so an interrupted run never leaves a truncated file under
the final name, and rerunning the same command finishes the job. Ctrl-C (SIGINT) and SIGTERM
remove the file being written; the temporary file a SIGKILL leaves behind (hidden,
.partial-<pid>-*) is deleted by the next run. Each file draws its noise from
a generator seeded by --seed and the file's relative name: skipping or adding files does not
change the other files' outputs, and the same seed gives bit-identical files on the CPU.

A file that cannot be read or enhanced is reported on one line naming it; the others are still
enhanced and the exit status is 1. Setup errors (missing or empty folder, an output folder that
cannot be written, unusable checkpoint, sampler settings the model cannot use) print one line
and exit with 2. Sampler flags left out take the
checkpoint's own defaults. The seed, the arguments, the sampler settings, the network's
precision, the number of network evaluations (NFE) and what became of the band above the
model's are written to run_info.json in --enhanced_dir.
"""
import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from echo.checkpoints import CheckpointError, load_model
from echo.data.resample import backend_name
from echo.enhance import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, enhance_audio
from echo.high_band import DEFAULT_HIGH_BAND, HIGH_BAND_MODES, REFERENCE_BAND
from echo.sampling import CorrectorRegistry, PredictorRegistry, SamplerError, sample, sampler_defaults
from echo.util.audio import (AudioError, audio_info, check_writable_folder, list_audio, read_audio,
                             remove_stale_partials, write_audio_atomic)
from echo.util.other import write_run_info
from echo.util.precision import ALIASES, PRECISIONS, PrecisionError, resolve_precision, set_inference_precision
from echo.util.seeding import derive_seed

RUN_INFO_JSON = "run_info.json"
SAMPLER_FLAGS = ("N", "predictor", "corrector", "corrector_steps", "snr", "t_eps", "t_start", "draws")


class SetupError(Exception):
    """The run as a whole cannot start or go on; the message is one line."""


class FileFailed(Exception):
    """One file could not be enhanced; the message is one line and names the file."""


def build_parser():
    parser = argparse.ArgumentParser(description="Enhance noisy speech with a trained ECHO checkpoint.")
    parser.add_argument("--test_dir", required=True,
                        help="folder of noisy .wav/.flac files (sub-folders included)")
    parser.add_argument("--enhanced_dir", default=None,
                        help="output folder; the input's sub-folder tree is mirrored there "
                             "(default: the input folder's name + '_enhanced', beside it)")
    parser.add_argument("--ckpt", default=None,
                        help="checkpoint written by train.py (its EMA weights are used) or a shipped model; "
                             "default: the shipped CPU model pretrained/echo_cpu_small.ckpt (see its README)")
    sampler = parser.add_argument_group("sampler (left out: the checkpoint's own defaults)")
    sampler.add_argument("--N", type=int, default=None,
                         help="number of reverse steps = network evaluations without a corrector (default: "
                              "the checkpoint's, 20 for ECHO); the echo_posterior chain needs N >= beta_max (10) "
                              "or N = 1 (a single prediction); ddim and ddpm take any N >= 1")
    sampler.add_argument("--predictor", default=None, choices=PredictorRegistry.get_all_names(),
                         help="reverse step taken at each time (default: the checkpoint's, echo_posterior for "
                              "ECHO). echo_posterior: the release's discrete DDPM chain; ddim: deterministic "
                              "steps over the continuous marginal, the few-step sampler (e.g. --predictor ddim "
                              "--N 3); ddpm: the same steps with the exact continuous-time posterior noise; "
                              "reverse_diffusion: SGMSE+'s Euler-Maruyama step (ouve checkpoints)")
    sampler.add_argument("--corrector", default=None, choices=CorrectorRegistry.get_all_names(),
                         help="Langevin refinement before each step (default: the checkpoint's, none for ECHO)")
    sampler.add_argument("--corrector_steps", type=int, default=None,
                         help="corrector steps per time (default: 1)")
    sampler.add_argument("--snr", type=float, default=None,
                         help="signal-to-noise ratio of the corrector's steps (default: the checkpoint's, 0.5)")
    sampler.add_argument("--t_eps", type=float, default=None,
                         help="last (smallest) time of the reverse grid (default: the checkpoint's, 0.04)")
    sampler.add_argument("--t_start", type=float, default=None,
                         help="warm start (ECHO, --predictor ddim or ddpm): the one-step estimate is re-noised to "
                              "this time and the N steps run from there, N + 1 network evaluations in all "
                              "(default: none, the steps start from the prior at t = 1)")
    sampler.add_argument("--draws", type=int, default=None,
                         help="run the sampler this many times from independent prior draws and write the mean "
                              "of the estimates (an estimate of the posterior mean; draws x the network "
                              "evaluations and the time) (default: the checkpoint's, 1)")
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                     help="where the network runs; auto (default): CUDA, else Apple MPS, else CPU")
    run.add_argument("--precision", default="32", choices=PRECISIONS + tuple(ALIASES), metavar="{auto,32,bf16,16}",
                     help="number format of the network's weights and activations: 32 (fp32, default), bf16 "
                          "or 16 (fp16); the sampler, the STFT and the output stay fp32. auto: bf16 where the "
                          "hardware multiplies bf16 natively (CPU: AVX512-BF16 or AMX; GPU: native bf16), else "
                          "fp32. The first line printed says which. Lightning's spellings (bf16-mixed, "
                          "32-true, ...) are accepted")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of the sampler's noise; with the file's relative name it seeds one "
                          "generator per file (same seed and settings: bit-identical samples on the CPU; "
                          "default: 0)")
    run.add_argument("--overwrite", action="store_true",
                     help="enhance files whose output exists again (default: skip them, so that an "
                          "interrupted run resumes)")
    run.add_argument("--chunk_seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                     help="enhance longer files in chunks of about this many seconds (rounded to whole "
                          "U-Net blocks of frames), so memory does not grow with file length; 8 s takes "
                          "~3.8 GB per chunk at the paper size; 0: whole files at once (default: %(default)s)")
    run.add_argument("--overlap_seconds", type=float, default=DEFAULT_OVERLAP_SECONDS,
                     help="cross-fade between neighbouring chunks, in seconds (at most half a chunk; "
                          "default: %(default)s)")
    run.add_argument("--batch_chunks", type=int, default=1,
                     help="chunks of one file enhanced together in one forward pass: faster on a GPU "
                          "with memory to spare (2-3 fit 16 GB at the default chunk length), no gain "
                          "on a CPU; the outputs depend on it, like on the seed (default: 1)")
    run.add_argument("--high_band", default=DEFAULT_HIGH_BAND, choices=HIGH_BAND_MODES,
                     help="files at a higher rate than the model's (e.g. 48 kHz for a 16 kHz model): keep: "
                          "their band above the model's (above 8 kHz) is carried into the output, attenuated "
                          "frame by frame as the model attenuated the top of its own band; drop: the output "
                          "has nothing above 8 kHz (muffled). Files with nothing above 8 kHz come out the "
                          "same either way; files at the model's rate or lower are not affected "
                          "(default: %(default)s)")
    run.add_argument("--atten_lim_db", type=float, default=None,
                     help="attenuation limit in dB: the noisy input is mixed back under the output so that "
                          "no part of it is lowered by more than this (as DeepFilterNet's --atten-lim); keeps "
                          "more of the voice where the model distorts it, at the cost of residual noise; "
                          "e.g. 20 (default: no limit)")
    return parser


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    mps_available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is available (this torch build: "
                         f"{torch.__version__}); use --device cpu or auto")
    if name == "mps" and not mps_available:
        raise SetupError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def default_enhanced_dir(test_dir) -> str:
    test_dir = Path(test_dir).resolve()
    return str(test_dir.parent / f"{test_dir.name}_enhanced")


def model_line(args) -> str:
    """The first line of output: which model enhances, so that no one mistakes the shipped CPU
    model for their own checkpoint or for the paper's."""
    from echo.pretrained import DEFAULT_MODEL
    if args.ckpt is not None:
        return f"model: {args.ckpt}"
    if not DEFAULT_MODEL.is_file():
        raise SetupError(f"{DEFAULT_MODEL}: no --ckpt given and the shipped model is missing "
                         "(restore it with git, or pass --ckpt)")
    args.ckpt = str(DEFAULT_MODEL)
    return (f"model: {DEFAULT_MODEL.name}, the shipped CPU model (3.2 M parameters, trained on 2 CPU cores; "
            "not the paper's model; see pretrained/README.md); --ckpt picks another")


def _khz(hz) -> str:
    return f"{hz / 1000:g} kHz"


def band_line(todo, model_sr: int, mode: str):
    """The line that says, before any work, that the model's band is narrower than some inputs'
    and what is done about it; None when no input's rate is above the model's."""
    rates = []
    for _rel, src, _dst in todo:
        try:
            rates.append(audio_info(src)[0])
        except AudioError:
            continue  # reported on its own line when its turn comes
    above = sorted({sr for sr in rates if sr > model_sr})
    if not above:
        return None
    count = sum(sr > model_sr for sr in rates)
    nyquist = _khz(model_sr / 2)
    head = (f"band: the model works at {_khz(model_sr)}, so its band ends at {nyquist}; {count} of "
            f"{len(todo)} file(s) are at {' / '.join(_khz(sr) for sr in above)}: ")
    if mode == "keep":
        low, high = (f * model_sr / 2000 for f in REFERENCE_BAND)
        return (head + f"their band above {nyquist} is kept, attenuated frame by frame as the model attenuated "
                f"{low:g}-{high:g} kHz (--high_band keep; drop leaves it out)")
    return head + f"their output has nothing above {nyquist} (--high_band drop; keep carries that band over)"


def band_summary(mode: str, stats: dict, model_sr: int):
    """After the run: in how many files the band above the model's was kept, or held nothing."""
    kept, none = stats.get("high_band_kept", 0), stats.get("high_band_none", 0)
    if mode != "keep" or not (kept or none):
        return None
    return (f"band above {_khz(model_sr / 2)}: kept in {kept} file(s); {none} file(s) held nothing there "
            "(output as with --high_band drop)")


def check_args(args):
    if args.enhanced_dir is None:
        args.enhanced_dir = default_enhanced_dir(args.test_dir)
    if args.chunk_seconds < 0 or args.overlap_seconds < 0:
        raise SetupError("--chunk_seconds and --overlap_seconds must not be negative")
    if args.batch_chunks < 1:
        raise SetupError(f"--batch_chunks must be at least 1, got {args.batch_chunks}")
    if args.atten_lim_db is not None and not (math.isfinite(args.atten_lim_db) and args.atten_lim_db >= 0):
        raise SetupError(f"--atten_lim_db must be a finite number of dB >= 0, got {args.atten_lim_db}")


def plan_jobs(test_dir, enhanced_dir, overwrite):
    """``(todo, skipped)``: lists of ``(relative name, input path, output path)``.

    Refuses an output folder that is the input folder, and any output that would land on an
    input file; files inside an output folder nested in the input folder are not inputs.
    """
    test_dir, enhanced_dir = Path(test_dir), Path(enhanced_dir)
    if not test_dir.is_dir():
        raise SetupError(f"--test_dir {test_dir}: folder does not exist")
    out_root = enhanced_dir.resolve()
    if out_root == test_dir.resolve():
        raise SetupError(f"--enhanced_dir {enhanced_dir} is the input folder: the outputs would "
                         "overwrite the noisy files; choose another folder")
    inputs = [(rel, test_dir / rel) for rel in list_audio(test_dir)
              if not (test_dir / rel).resolve().is_relative_to(out_root)]
    if not inputs:
        raise SetupError(f"--test_dir {test_dir}: no .wav or .flac files found (sub-folders included)")
    input_files = {src.resolve() for _, src in inputs}
    todo, skipped = [], []
    for rel, src in inputs:
        dst = enhanced_dir / rel
        if dst.resolve() in input_files:
            raise SetupError(f"{dst}: the output would overwrite an input file; choose an --enhanced_dir "
                             "outside --test_dir's tree")
        (todo if overwrite or not dst.exists() else skipped).append((rel, src, dst))
    return todo, skipped


def file_seed(seed: int, rel_name: str) -> int:
    """A 63-bit seed from the run's seed and the file's relative name (stable across runs,
    machines and Python versions, unlike ``hash()``)."""
    return derive_seed(seed, rel_name)


def sampler_kwargs_from(args) -> dict:
    """Only the flags that were given: the sampler fills in the checkpoint's defaults."""
    return {name: getattr(args, name) for name in SAMPLER_FLAGS if getattr(args, name) is not None}


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------

def output_subtype(src, dst) -> str:
    """The input's sample format where the output format can hold it, else float (WAV) or
    24-bit (FLAC, which has no float format)."""
    fmt = "FLAC" if Path(dst).suffix.lower() == ".flac" else "WAV"
    try:
        subtype = sf.info(str(src)).subtype
    except Exception:
        subtype = None
    if subtype and sf.check_format(fmt, subtype):
        return subtype
    return "FLOAT" if fmt == "WAV" else "PCM_24"


def enhance_file(model, src, dst, rel, args, sampler_kwargs, device, stats) -> float:
    """Enhance ``src`` into ``dst``; returns the seconds of audio. Raises AudioError for an
    unreadable input, FileFailed for a failed enhancement or write, SamplerError as is."""
    audio, sr = read_audio(src)
    generator = torch.Generator(device=device).manual_seed(file_seed(args.seed, rel))
    try:
        enhanced = enhance_audio(model, audio, sr, sampler_kwargs, generator, chunk_seconds=args.chunk_seconds,
                                 overlap_seconds=args.overlap_seconds, batch_chunks=args.batch_chunks,
                                 stats=stats, high_band=args.high_band, atten_lim_db=args.atten_lim_db)
    except SamplerError:
        raise
    except torch.OutOfMemoryError:
        raise FileFailed(f"{src}: out of memory; lower --chunk_seconds or --batch_chunks") from None
    except Exception as err:
        raise FileFailed(f"{src}: enhancement failed ({type(err).__name__}: {_first_line(err)})") from None
    if not np.all(np.isfinite(enhanced)):
        raise FileFailed(f"{src}: the enhanced signal contains NaN or Inf (sampler settings "
                         f"{sampler_kwargs or 'default'}); nothing written")
    subtype = output_subtype(src, dst)
    if subtype.startswith("PCM"):
        clipped = int(np.count_nonzero(np.abs(enhanced) > 1.0))
        if clipped:
            tqdm.write(f"note: {dst}: {clipped} samples beyond full scale clipped ({subtype})", file=sys.stderr)
        enhanced = np.clip(enhanced, -1.0, 1.0)
    try:
        write_audio_atomic(dst, enhanced, sr, subtype=subtype)
    except Exception as err:
        raise FileFailed(f"{dst}: could not be written ({type(err).__name__}: {_first_line(err)})") from None
    return audio.shape[-1] / sr


def _first_line(err) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def resolved_sampler_settings(model, sampler_kwargs) -> dict:
    return dict(sampler_defaults(model.sde), **sampler_kwargs)


class _ZeroNetwork:
    """Stands in for the network in a dry run of the sampler: same SDE, answers zeros at no cost,
    except where its input is already NaN/Inf, which it passes on as a real network would."""

    def __init__(self, model):
        self.sde, self.hparams = model.sde, model.hparams

    def __call__(self, x, y, t):
        return x * 0


def check_sampler(model, sampler_kwargs) -> int:
    """Run the sampler once on a single bin with a zero network, before any file is touched:
    settings it refuses, or whose schedule is not finite, stop the run with one line. Returns the
    number of network evaluations per sampling pass."""
    probe = torch.ones(1, 1, 1, 1, dtype=torch.complex64)
    try:
        estimate, nfe = sample(_ZeroNetwork(model), probe, generator=torch.Generator().manual_seed(0),
                               **sampler_kwargs)
    except SamplerError as err:
        raise SetupError(f"sampler settings {sampler_kwargs or '(defaults)'}: {err}") from None
    if not torch.isfinite(estimate).all():
        beta_max = getattr(model.sde, "beta_max", None)
        hint = (f"; the echo_posterior chain needs N = 1 or N >= beta_max = {beta_max:g}"
                if beta_max is not None else "")
        raise SetupError(f"sampler settings {sampler_kwargs or '(defaults)'} give NaN/Inf{hint}")
    return nfe


def warn_if_settings_differ(enhanced_dir, settings, n_skipped):
    """A resumed run should use the settings of the run it continues: say so when it does not."""
    path = Path(enhanced_dir) / RUN_INFO_JSON
    if not n_skipped or not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    changed = [key for key, value in settings.items() if key in before and before[key] != value]
    if changed:
        print(f"warning: {n_skipped} existing outputs were made with other {', '.join(changed)} than this "
              "run's; the folder will mix them (pass --overwrite to redo all)", file=sys.stderr)


def run(args) -> int:
    first_lines = [model_line(args)]
    check_args(args)
    todo, skipped = plan_jobs(args.test_dir, args.enhanced_dir, args.overwrite)
    device = resolve_device(args.device)
    try:
        precision, precision_line = resolve_precision(args.precision, device)
    except PrecisionError as err:
        raise SetupError(f"--precision {args.precision}: {err}") from None
    first_lines.append(precision_line)
    stale = remove_stale_partials(args.enhanced_dir)
    if stale:
        print(f"removed {len(stale)} unfinished temporary file(s) of an interrupted run", file=sys.stderr)
    if not todo:  # a finished run resumed: nothing to load the model for
        print("\n".join(first_lines))
        print(f"done 0, skipped {len(skipped)}, failed 0 | nothing to enhance in {args.test_dir} "
              f"(outputs exist: pass --overwrite to redo them)")
        return 0
    check_writable_folder(args.enhanced_dir)  # before any work: not once per file after it
    load_start = time.perf_counter()
    try:
        model = load_model(args.ckpt, device)
    except CheckpointError as err:
        raise SetupError(str(err)) from None
    set_inference_precision(model, precision)
    load_seconds = time.perf_counter() - load_start
    model_sr = int(model.hparams["sr"])
    # the band line needs the model's rate, hence the model loaded before anything is printed
    print("\n".join(line for line in [band_line(todo, model_sr, args.high_band), *first_lines] if line), flush=True)
    # flags given on the command line win over the sampler a shipped model names
    sampler_kwargs = {**model.shipped_sampler, **sampler_kwargs_from(args)}
    sampler = resolved_sampler_settings(model, sampler_kwargs)
    nfe = check_sampler(model, sampler_kwargs)
    settings = dict(seed=args.seed, sampler=sampler, precision=precision, ckpt=str(Path(args.ckpt).resolve()),
                    chunking=dict(chunk_seconds=args.chunk_seconds, overlap_seconds=args.overlap_seconds,
                                  batch_chunks=args.batch_chunks), high_band=args.high_band,
                    atten_lim_db=args.atten_lim_db)
    warn_if_settings_differ(args.enhanced_dir, settings, len(skipped))
    if skipped:
        print(f"skipping {len(skipped)} file(s) whose output exists (--overwrite redoes them)", file=sys.stderr)

    stats, failed, audio_seconds, done = {}, [], 0.0, 0
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="file", desc="enhancing", dynamic_ncols=True) as bar:
        for rel, src, dst in todo:
            try:
                audio_seconds += enhance_file(model, src, dst, rel, args, sampler_kwargs, device, stats)
                done += 1
            except SamplerError as err:
                raise SetupError(f"sampler settings {sampler_kwargs}: {err}") from None
            except (AudioError, FileFailed) as err:
                failed.append(rel)
                tqdm.write(f"failed: {err}", file=sys.stderr)
            bar.update(1)
    wall = time.perf_counter() - start

    if done:
        write_run_info(args.enhanced_dir, **settings, args=vars(args), device=str(device),
                       nfe_per_sampling_pass=stats.get("nfe", nfe), sampling_passes=stats.get("sampling_passes"),
                       chunks=stats.get("chunks"), resampler=backend_name(), model_sr=model_sr,
                       high_band_files=dict(kept=stats.get("high_band_kept", 0),
                                            nothing_above=stats.get("high_band_none", 0)),
                       files=dict(done=done, skipped=len(skipped), failed=len(failed)),
                       audio_seconds=round(audio_seconds, 3), wall_seconds=round(wall, 3))
    summary = band_summary(args.high_band, stats, model_sr)
    if summary:
        print(summary)
    rtf = f"{wall / audio_seconds:.3f}" if audio_seconds else "n/a"
    print(f"done {done}, skipped {len(skipped)}, failed {len(failed)} | {audio_seconds:.1f} s of audio in "
          f"{wall:.1f} s wall (RTF {rtf}) | model load {load_seconds:.1f} s on {device}")
    return 1 if failed else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (SetupError, AudioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun the same command to resume", file=sys.stderr)
        return 130


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: the file being written is removed


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    sys.exit(main())
