"""Synthetic speech-like clean/noisy pairs, made from nothing but a seed.

The "speech" is a source-filter model: a band-limited harmonic series (the glottal source,
with a smooth random f0 contour between 80 and 300 Hz, vibrato and a spectral tilt) whose
harmonic amplitudes are shaped by 4 formant resonances gliding between vowel targets, gated
by a syllable-like envelope with pauses, plus fricative and plosive bursts of band-pass
noise. It is not intelligible, but it has the structure an enhancement model relies on
(harmonics, formants, onsets, pauses), so training and evaluation code can be exercised
end-to-end without any download.

Noise kinds: white, pink, brown, babble (a crowd of other synthetic voices), mains hum with
harmonics (50 or 60 Hz), and intermittent clicks; a file gets one kind, sometimes two.

Every file has its own random stream derived from (seed, split, index), so a file does not
change when the number of files in another split changes.

    python -m echo.data.synth --out_dir data/synth --n_train 16 --n_valid 4 --n_test 4
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from echo.data import SPLITS, OutputExistsError, pair_paths, prepare_output_dir, write_manifest
from echo.data.mix import noise_gain_for_snr
from echo.util.audio import AudioError, write_audio_atomic

# F1, F2, F3 of adult vowels (Peterson & Barney averages), scaled per speaker below.
VOWEL_FORMANTS_HZ = np.array([
    [730, 1090, 2440],  # a
    [270, 2290, 3010],  # i
    [300, 870, 2240],   # u
    [530, 1840, 2480],  # e
    [570, 840, 2410],   # o
    [660, 1720, 2410],  # ae
    [490, 1350, 1690],  # er
    [440, 1020, 2240],  # schwa-like
], dtype=np.float64)
F4_HZ = 3500.0
FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 200.0])
# Fricative noise bands in Hz (roughly s, sh, f, h), clipped to below Nyquist at low rates.
FRICATIVE_BANDS_HZ = ((4000, 7500), (2000, 5000), (1200, 7000), (500, 3500))
F0_RANGE_HZ = (80.0, 300.0)
NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "clicks")
SPLIT_IDS = {split: i for i, split in enumerate(SPLITS)}
SPEECH_FLOOR_DB = -70.0  # white floor under the clean speech, relative to its peak
FRAME_RATE_HZ = 200  # formant and f0 tracks are computed at 5 ms steps, then interpolated


# ---------------------------------------------------------------- speech


def speaker_traits(rng):
    """Random voice: mean f0, vocal-tract scale (higher voices get shorter tracts), vibrato,
    spectral tilt."""
    base_f0 = float(np.exp(rng.uniform(np.log(95.0), np.log(230.0))))
    tract_scale = float(np.clip(1.0 + 0.25 * (np.log(base_f0 / 95.0) / np.log(230.0 / 95.0))
                                + rng.normal(0.0, 0.04), 0.9, 1.3))
    return {
        "base_f0": base_f0,
        "tract_scale": tract_scale,
        "vibrato_hz": float(rng.uniform(4.0, 7.0)),
        "vibrato_depth": float(rng.uniform(0.005, 0.03)),
        "tilt_exponent": float(rng.uniform(0.8, 1.4)),  # harmonic amplitude ~ k^-tilt
    }


def syllable_plan(rng, seconds: float):
    """List of segments ``(kind, start_s, end_s, amplitude, vowel_a, vowel_b)``.

    kind is "voiced", "fricative" or "burst". A leading and a trailing pause and random
    pauses between syllables make sure the envelope has silent stretches, as speech does.
    """
    segments = []
    t = rng.uniform(0.08, 0.25)
    end = seconds - rng.uniform(0.08, 0.2)
    n_vowels = len(VOWEL_FORMANTS_HZ)
    while t < end - 0.1:
        onset = rng.uniform()
        if onset < 0.3:
            length = rng.uniform(0.05, 0.13)
            segments.append(("fricative", t, t + length, rng.uniform(0.08, 0.3), 0, 0))
            t += length * rng.uniform(0.7, 1.0)  # slight overlap into the vowel
        elif onset < 0.45:
            segments.append(("burst", t, t + rng.uniform(0.008, 0.02), rng.uniform(0.2, 0.5), 0, 0))
            t += rng.uniform(0.02, 0.04)
        length = min(rng.uniform(0.12, 0.32), end - t)
        if length < 0.06:
            break
        segments.append(("voiced", t, t + length, rng.uniform(0.45, 1.0),
                         int(rng.integers(n_vowels)), int(rng.integers(n_vowels))))
        t += length
        if rng.uniform() < 0.2 and t < end - 0.06:
            length = min(rng.uniform(0.05, 0.12), end - t)
            segments.append(("fricative", t, t + length, rng.uniform(0.08, 0.25), 0, 0))
            t += length
        t += rng.uniform(0.15, 0.4) if rng.uniform() < 0.35 else rng.uniform(0.0, 0.05)
    if not any(kind == "voiced" for kind, *_ in segments):  # very short files: one vowel
        segments.append(("voiced", 0.25 * seconds, 0.75 * seconds, 1.0,
                         int(rng.integers(n_vowels)), int(rng.integers(n_vowels))))
    return segments


def smooth(track, width):
    """Moving average with a Hann kernel of ``width`` points, edges held."""
    if width < 3:
        return track
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(track, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def f0_track(rng, traits, n_frames):
    """f0 in Hz per frame: knots every 150-300 ms around the speaker's mean with a falling
    declination, interpolated and smoothed (vibrato is added per sample later)."""
    knot_frames = [0]
    while knot_frames[-1] < n_frames - 1:
        knot_frames.append(knot_frames[-1] + int(rng.uniform(0.15, 0.3) * FRAME_RATE_HZ))
    knot_frames = np.array(knot_frames, dtype=np.float64)
    declination = np.linspace(0.08, -0.08, len(knot_frames))
    log_f0 = np.log(traits["base_f0"]) + declination + rng.normal(0.0, 0.12, len(knot_frames))
    track = np.exp(np.interp(np.arange(n_frames), knot_frames, log_f0))
    return smooth(track, int(0.08 * FRAME_RATE_HZ))


def formant_tracks(segments, traits, n_frames):
    """[4, n_frames] formant frequencies in Hz gliding from each voiced segment's first vowel
    target to its second, and smoothly between segments."""
    times, targets = [], []
    for kind, start, end, _amp, vowel_a, vowel_b in segments:
        if kind != "voiced":
            continue
        times += [start + 0.2 * (end - start), end - 0.2 * (end - start)]
        targets += [VOWEL_FORMANTS_HZ[vowel_a], VOWEL_FORMANTS_HZ[vowel_b]]
    if not times:
        times, targets = [0.0], [VOWEL_FORMANTS_HZ[-1]]
    targets = np.array(targets) * traits["tract_scale"]
    frame_times = np.arange(n_frames) / FRAME_RATE_HZ
    tracks = np.empty((4, n_frames))
    for i in range(3):
        tracks[i] = smooth(np.interp(frame_times, times, targets[:, i]), int(0.04 * FRAME_RATE_HZ))
    tracks[3] = F4_HZ * traits["tract_scale"]
    return tracks


def spectral_envelope(freqs, f0, formants, traits, sr):
    """[n_frames, n_freqs] magnitude of the vocal tract and source tilt at ``freqs`` (Hz) for
    each frame: a harmonic-amplitude tilt (f/f0)^-tilt times a cascade of two-pole formant
    resonances (unit gain at DC), faded out towards Nyquist."""
    f = freqs[None, :]
    env = (np.maximum(f, f0[:, None]) / f0[:, None]) ** -traits["tilt_exponent"]
    for centre, bandwidth in zip(formants, FORMANT_BANDWIDTHS_HZ):
        c2 = centre[:, None] ** 2
        env = env * c2 / np.sqrt((c2 - f ** 2) ** 2 + (f * bandwidth) ** 2)
    return env * np.clip((0.45 * sr - f) / (0.05 * sr), 0.0, 1.0)


def pulse_train(f0, sr):
    """Band-limited glottal pulse train: the sum of cos(k*phase) over all harmonics k below
    0.45*sr, in closed form (Dirichlet kernel), so it costs O(samples) for any pitch and has
    no aliasing. Flat spectrum; the tilt is applied with the formants."""
    cycles = np.mod(np.cumsum(f0 / sr), 1.0)  # phase in cycles, kept small for precision
    n_harmonics = np.floor(0.45 * sr / f0)
    # sin((K + 1/2) * phase), with the argument reduced to one cycle (fast float32 path)
    top = np.mod((n_harmonics + 0.5) * cycles, 1.0).astype(np.float32)
    half_sin = np.sin(np.float32(np.pi) * cycles.astype(np.float32))
    near_pulse = np.abs(half_sin) < 1e-4
    train = np.sin(np.float32(2 * np.pi) * top) / (2.0 * np.where(near_pulse, 1.0, half_sin)) - 0.5
    return np.where(near_pulse, n_harmonics, train)


def shape_with_envelope(source, f0_frames, formants, traits, sr):
    """Filter ``source`` with the time-varying spectral envelope in the STFT domain (Hann
    frames of ~32 ms, 75 % overlap, weighted overlap-add). The formant impulse responses are
    shorter than a frame, so this is a good stand-in for a time-varying resonator bank."""
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = n_fft // 4
    n = len(source)
    n_frames = -(-(n + n_fft) // hop)
    padded = np.zeros((n_frames + 3) * hop)
    padded[n_fft:n_fft + n] = source  # a full frame of zeros before, so edges get all 4 overlaps
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann: its squares sum to 1.5 at hop n_fft/4
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    spec = np.fft.rfft(frames * window, axis=1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    frame_idx = (np.arange(n_frames) * hop + n_fft // 2 - n_fft) / sr * FRAME_RATE_HZ
    track_idx = np.arange(f0_frames.shape[0])
    f0_at = np.interp(frame_idx, track_idx, f0_frames)
    formants_at = [np.interp(frame_idx, track_idx, track) for track in formants]
    spec *= spectral_envelope(freqs, f0_at, formants_at, traits, sr)
    shaped = np.fft.irfft(spec, n_fft, axis=1) * window
    out = np.zeros_like(padded)
    for part in range(n_fft // hop):  # overlap-add: frames part, part+4, ... do not overlap
        chunk = shaped[part::n_fft // hop].reshape(-1)
        begin = part * hop
        out[begin:begin + len(chunk)] += chunk
    return out[n_fft:n_fft + n] / 1.5


def voiced_source(rng, f0_frames, formants, traits, n_samples, sr):
    """Voiced speech before the syllable envelope: pulse train following the f0 contour plus
    vibrato, shaped by tilt and formants. Returns (signal, f0 per sample)."""
    t = np.arange(n_samples) / sr
    f0 = np.interp(t * FRAME_RATE_HZ, np.arange(len(f0_frames)), f0_frames)
    f0 *= 1.0 + traits["vibrato_depth"] * np.sin(2 * np.pi * traits["vibrato_hz"] * t
                                                 + rng.uniform(0, 2 * np.pi))
    f0 = np.clip(f0, *F0_RANGE_HZ)
    source = np.roll(pulse_train(f0, sr), int(rng.integers(n_samples)))
    return shape_with_envelope(source, f0_frames, formants, traits, sr), f0


def segment_window(n, attack, release):
    """Envelope of one segment: raised-cosine attack and release around a flat middle."""
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    if attack > 0:
        env[:attack] = np.sin(0.5 * np.pi * np.arange(attack) / attack) ** 2
    if release > 0:
        env[n - release:] = np.cos(0.5 * np.pi * np.arange(release) / release) ** 2
    return env


def band_noise(rng, n, band_hz, sr):
    """White noise band-passed to ``band_hz`` (clipped to below Nyquist) by shaping its
    spectrum with smooth (raised-cosine) band edges; unit RMS."""
    low, high = min(band_hz[0], 0.4 * sr), min(band_hz[1], 0.47 * sr)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    edge = 0.15 * (high - low)
    rise = np.clip((freqs - (low - edge)) / (2 * edge), 0.0, 1.0)
    fall = np.clip(((high + edge) - freqs) / (2 * edge), 0.0, 1.0)
    mask = np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * mask, n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def speech_like(rng, n_samples, sr, traits=None):
    """One synthetic utterance of ``n_samples`` at ``sr``, peak about 1 (float64)."""
    traits = traits or speaker_traits(rng)
    seconds = n_samples / sr
    segments = syllable_plan(rng, seconds)
    n_frames = int(np.ceil(seconds * FRAME_RATE_HZ)) + 2
    f0_frames = np.clip(f0_track(rng, traits, n_frames), *F0_RANGE_HZ)
    formants = formant_tracks(segments, traits, n_frames)
    voiced, _f0 = voiced_source(rng, f0_frames, formants, traits, n_samples, sr)
    voiced /= np.sqrt(np.mean(voiced ** 2)) + 1e-12

    voiced_env = np.zeros(n_samples)
    unvoiced = np.zeros(n_samples)
    ms = sr // 1000
    for kind, start, end, amp, _a, _b in segments:
        i0, i1 = int(start * sr), min(int(end * sr), n_samples)
        n = i1 - i0
        if n <= 8:
            continue
        if kind == "voiced":
            env = segment_window(n, int(rng.uniform(15, 40) * ms), int(rng.uniform(30, 80) * ms))
            # a slow amplitude contour inside the syllable (stress, decay)
            env *= np.linspace(1.0, rng.uniform(0.5, 1.0), n)
            voiced_env[i0:i1] = np.maximum(voiced_env[i0:i1], amp * env)
        else:
            band = FRICATIVE_BANDS_HZ[int(rng.integers(len(FRICATIVE_BANDS_HZ)))]
            if kind == "burst":
                band = (500, 7000)
                env = np.exp(-np.arange(n) / (n / 4.0))
            else:
                env = segment_window(n, int(rng.uniform(10, 30) * ms), int(rng.uniform(10, 30) * ms))
            unvoiced[i0:i1] += amp * env * band_noise(rng, n, band, sr)
    speech = voiced * voiced_env + unvoiced
    speech /= np.max(np.abs(speech)) + 1e-12
    # A faint floor, as in any recording: exact digital silence in the pauses would be
    # unlike real clean speech and makes log-spectra and level detectors degenerate.
    speech += 10 ** (SPEECH_FLOOR_DB / 20.0) * rng.standard_normal(n_samples)
    return speech


# ---------------------------------------------------------------- noise


def colored_noise(rng, n, sr, exponent):
    """Noise with power spectrum ~ 1/f^exponent (1: pink, 2: brown), flat below 20 Hz, no DC."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum *= np.maximum(freqs, 20.0) ** (-exponent / 2.0)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def babble_noise(rng, n, sr):
    """A crowd: 4-7 other synthetic voices, each circularly shifted so their pauses do not
    line up."""
    crowd = np.zeros(n)
    for _ in range(int(rng.integers(4, 8))):
        voice = speech_like(rng, n, sr)
        crowd += np.roll(voice, int(rng.integers(n))) * rng.uniform(0.5, 1.0)
    return crowd


def hum_noise(rng, n, sr):
    """Mains hum: 50 or 60 Hz and its harmonics up to ~2 kHz (odd ones stronger, as from a
    transformer), with slow amplitude flutter and a faint hiss."""
    mains = 50.0 if rng.uniform() < 0.5 else 60.0
    t = np.arange(n) / sr
    hum = np.zeros(n)
    for k in range(1, int(min(2000.0, 0.45 * sr) / mains) + 1):
        level = k ** -1.2 * (1.0 if k % 2 else 0.4) * rng.uniform(0.5, 1.0)
        hum += level * np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi))
    hum *= 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
    hum /= np.sqrt(np.mean(hum ** 2))
    return hum + 0.01 * rng.standard_normal(n)


def click_noise(rng, n, sr):
    """Intermittent transients: Poisson-timed decaying noise bursts of 1-15 ms at levels
    spread over 20 dB, over a faint hiss."""
    out = 0.003 * rng.standard_normal(n)
    n_clicks = max(1, rng.poisson(rng.uniform(2.0, 10.0) * n / sr))
    for start in rng.integers(0, n, n_clicks):
        length = int(rng.uniform(0.001, 0.015) * sr)
        stop = min(n, start + length)
        decay = np.exp(-np.arange(stop - start) / max(1.0, length / 5.0))
        out[start:stop] += 10 ** rng.uniform(-1.0, 0.0) * decay * rng.standard_normal(stop - start)
    return out


def noise_of_kind(kind, rng, n, sr):
    """Noise of one of NOISE_KINDS, unit RMS."""
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind == "pink":
        noise = colored_noise(rng, n, sr, 1.0)
    elif kind == "brown":
        noise = colored_noise(rng, n, sr, 2.0)
    elif kind == "babble":
        noise = babble_noise(rng, n, sr)
    elif kind == "hum":
        noise = hum_noise(rng, n, sr)
    elif kind == "clicks":
        noise = click_noise(rng, n, sr)
    else:
        raise ValueError(f"unknown noise kind '{kind}' (known: {', '.join(NOISE_KINDS)})")
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def noise_mixture(rng, n, sr):
    """One noise kind, or (40 % of the time) two, the second 3-15 dB weaker.
    Returns (noise, description like "pink+clicks")."""
    kinds = [NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]]
    if rng.uniform() < 0.4:
        kinds.append(str(rng.choice([k for k in NOISE_KINDS if k != kinds[0]])))
    noise = noise_of_kind(kinds[0], rng, n, sr)
    for kind in kinds[1:]:
        noise = noise + 10 ** (-rng.uniform(3.0, 15.0) / 20.0) * noise_of_kind(kind, rng, n, sr)
    return noise, "+".join(kinds)


# ---------------------------------------------------------------- pairs and dataset


def make_pair(rng, n_samples, sr, snr_range):
    """(clean, noisy, info) with noisy = clean + noise exactly, noise scaled to an SNR drawn
    from ``snr_range``, both scaled by one factor to a peak drawn from 0.3-0.95 (so levels vary
    like recordings do, and nothing clips)."""
    clean = speech_like(rng, n_samples, sr)
    noise, kinds = noise_mixture(rng, n_samples, sr)
    snr_db = float(rng.uniform(*snr_range))
    noisy = clean + noise_gain_for_snr(clean, noise, snr_db, sr) * noise
    gain = rng.uniform(0.3, 0.95) / max(np.max(np.abs(clean)), np.max(np.abs(noisy)))
    return (clean * gain).astype(np.float32), (noisy * gain).astype(np.float32), \
        {"snr_db": round(snr_db, 3), "noise": kinds}


def file_rng(seed, split, index):
    """Independent random stream of one file."""
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def make_dataset(out_dir, n_train=16, n_valid=4, n_test=4, seconds=2.0, sr=16000,
                 snr_range=(-5, 15), seed=0, overwrite=False) -> Path:
    """Write a synthetic dataset ``out_dir/{train,valid,test}/{clean,noisy}/<split>_NNNN.wav``
    (16-bit PCM, mono) and ``out_dir/manifest.csv``; returns ``out_dir`` as a Path.

    A non-empty ``out_dir`` is refused (OutputExistsError) unless ``overwrite``.
    """
    counts = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    if min(counts.values()) < 0:
        raise ValueError("file counts must be >= 0")
    n_samples = int(round(seconds * sr))
    if n_samples < int(0.5 * sr):
        raise ValueError(f"seconds={seconds}: need at least 0.5 s per file")
    if sr < 8000:
        raise ValueError(f"sr={sr}: need at least 8000 Hz")
    if snr_range[0] > snr_range[1]:
        raise ValueError(f"snr range {snr_range}: minimum is above maximum")
    out_dir = prepare_output_dir(out_dir, overwrite)
    rows = []
    for split in SPLITS:
        for index in range(counts[split]):
            clean, noisy, info = make_pair(file_rng(seed, split, index), n_samples, sr, snr_range)
            name = f"{split}_{index:04d}.wav"
            clean_path, noisy_path = pair_paths(out_dir, split, name)
            write_audio_atomic(clean_path, clean, sr, subtype="PCM_16")
            write_audio_atomic(noisy_path, noisy, sr, subtype="PCM_16")
            rows.append({"split": split, "name": name, "snr_db": info["snr_db"],
                         "noise": info["noise"], "seed": seed})
    write_manifest(out_dir, rows, ["split", "name", "snr_db", "noise", "seed"])
    return out_dir


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m echo.data.synth",
        description="Write a synthetic speech-like clean/noisy dataset "
                    "(out_dir/{train,valid,test}/{clean,noisy}/*.wav, 16-bit PCM) from a seed.")
    parser.add_argument("--out_dir", default="data/synth",
                        help="dataset folder to create (default: %(default)s); must be empty or "
                             "absent unless --overwrite")
    parser.add_argument("--n_train", type=int, default=16, help="training pairs (default: %(default)s)")
    parser.add_argument("--n_valid", type=int, default=4, help="validation pairs (default: %(default)s)")
    parser.add_argument("--n_test", type=int, default=4, help="test pairs (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="length of every file in seconds (default: %(default)s)")
    parser.add_argument("--sr", type=int, default=16000, help="sample rate in Hz (default: %(default)s)")
    parser.add_argument("--snr_min", type=float, default=-5.0,
                        help="lowest SNR in dB, active speech vs noise (default: %(default)s)")
    parser.add_argument("--snr_max", type=float, default=15.0,
                        help="highest SNR in dB (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives byte-identical files (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the split folders and manifest of an existing dataset in out_dir")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        out_dir = make_dataset(args.out_dir, args.n_train, args.n_valid, args.n_test, args.seconds,
                               args.sr, (args.snr_min, args.snr_max), args.seed, args.overwrite)
    except (OutputExistsError, AudioError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = args.n_train + args.n_valid + args.n_test
    print(f"wrote {total} pairs to {out_dir} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
