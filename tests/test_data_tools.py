"""Tests of the dataset tools: echo.data.synth, echo.data.vbdmd and echo.data.mix.

The vbdmd and mix tests use the real recordings in shared/data (next to the repository) and
are skipped, with the reason, where that folder is absent. SNRs are re-measured here with an
independent implementation of the definition the tools document (active speech power over
noise power).
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from echo.data import SPLITS, read_manifest
from echo.data import synth
from echo.util.audio import list_audio, pair_audio

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"real test data not found at {SHARED_DATA}")


# ---------------------------------------------------------------- helpers


def file_digests(base_dir):
    """Relative path -> sha256 of every audio file below ``base_dir``."""
    base_dir = Path(base_dir)
    return {rel: hashlib.sha256((base_dir / rel).read_bytes()).hexdigest()
            for rel in list_audio(base_dir)}


def measured_snr_db(clean, noisy, sr):
    """Active-speech SNR: speech power over the 20 ms frames within 40 dB of the loudest one,
    noise (noisy - clean) power over the whole file."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    frame = int(0.02 * sr)
    n = len(clean) // frame
    powers = (clean[:n * frame].reshape(n, frame) ** 2).mean(axis=1)
    speech_power = powers[powers >= powers.max() * 1e-4].mean()
    return 10 * np.log10(speech_power / (noise ** 2).mean())


def read_pair(clean_path, noisy_path):
    clean, sr_clean = sf.read(clean_path, dtype="float64")
    noisy, sr_noisy = sf.read(noisy_path, dtype="float64")
    assert sr_clean == sr_noisy
    assert clean.shape == noisy.shape
    return clean, noisy, sr_clean


def all_pairs(base_dir):
    """(split, key, clean path, noisy path) of every pair in a dataset folder."""
    return [(split, key, clean, noisy) for split in SPLITS
            for key, clean, noisy in pair_audio(Path(base_dir) / split / "clean",
                                                Path(base_dir) / split / "noisy")]


def check_layout(base_dir, counts, sr):
    """Every split holds ``counts[split]`` clean/noisy pairs of mono 16-bit files at ``sr``."""
    for split in SPLITS:
        pairs = pair_audio(Path(base_dir) / split / "clean", Path(base_dir) / split / "noisy")
        assert len(pairs) == counts[split], split
        for _key, clean, noisy in pairs:
            for path in (clean, noisy):
                info = sf.info(path)
                assert (info.samplerate, info.channels, info.subtype) == (sr, 1, "PCM_16"), path


# ---------------------------------------------------------------- synth

SYNTH_COUNTS = {"train": 4, "valid": 2, "test": 2}


@pytest.fixture(scope="module")
def synth_sets(tmp_path_factory):
    """Two datasets from seed 3 and one from seed 4."""
    root = tmp_path_factory.mktemp("synth")
    made = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        made[name] = synth.make_dataset(root / name, n_train=4, n_valid=2, n_test=2, seed=seed)
    return made


def test_synth_same_seed_same_bytes_other_seed_differs(synth_sets):
    first, again, other = (file_digests(synth_sets[k]) for k in "abc")
    assert len(first) == 2 * sum(SYNTH_COUNTS.values())
    assert first == again
    assert set(first) == set(other)
    assert all(first[rel] != other[rel] for rel in first)


def test_synth_layout_and_pairing(synth_sets):
    check_layout(synth_sets["a"], SYNTH_COUNTS, 16000)
    for _split, _key, clean, noisy in all_pairs(synth_sets["a"]):
        assert sf.info(clean).frames == sf.info(noisy).frames == 32000


def test_synth_snr_matches_manifest_and_range(synth_sets):
    rows = {(row["split"], row["name"]): row for row in read_manifest(synth_sets["a"])}
    assert len(rows) == sum(SYNTH_COUNTS.values())
    for split, key, clean_path, noisy_path in all_pairs(synth_sets["a"]):
        clean, noisy, sr = read_pair(clean_path, noisy_path)
        snr = measured_snr_db(clean, noisy, sr)
        assert abs(snr - float(rows[(split, key + ".wav")]["snr_db"])) < 0.5, key
        assert -5.5 < snr < 15.5, key


def test_synth_does_not_clip(synth_sets):
    for _split, key, clean_path, noisy_path in all_pairs(synth_sets["a"]):
        clean, noisy, _sr = read_pair(clean_path, noisy_path)
        assert 0.05 < np.abs(noisy).max() < 0.99, key
        assert np.abs(clean).max() < 0.99, key


def test_synth_speech_is_voiced_with_pauses(synth_sets):
    for _split, key, clean_path, _noisy in all_pairs(synth_sets["a"]):
        clean, _sr = sf.read(clean_path, dtype="float64")
        sr = 16000
        # Harmonic: the loudest 40 ms frames (vowels) are periodic with a period of 80-300 Hz.
        frame = int(0.04 * sr)
        frames = clean[:len(clean) // frame * frame].reshape(-1, frame)
        loudest = frames[np.argsort((frames ** 2).sum(axis=1))[-3:]]
        lags = np.arange(sr // 300, sr // 80 + 1)
        for x in loudest:
            x = x - x.mean()
            corr = np.correlate(x, x, mode="full")[frame - 1:]
            assert corr[lags].max() / corr[0] > 0.5, key
        # Pauses: at least 100 ms in total of 20 ms frames 30 dB below the loudest frame.
        short = int(0.02 * sr)
        energy = (clean[:len(clean) // short * short].reshape(-1, short) ** 2).mean(axis=1)
        assert (energy < energy.max() * 1e-3).sum() * 0.02 >= 0.1, key
        # Not a pause everywhere either: at least 40 % of the file is active.
        assert (energy > energy.max() * 1e-3).mean() > 0.4, key


def test_synth_other_rate_and_length(tmp_path):
    out = synth.make_dataset(tmp_path / "d", n_train=1, n_valid=0, n_test=0, seconds=0.75,
                             sr=22050, seed=1)
    info = sf.info(out / "train" / "clean" / "train_0000.wav")
    assert (info.samplerate, info.frames) == (22050, round(0.75 * 22050))


def test_synth_cli_refuses_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["--out_dir", str(out), "--n_train", "3", "--n_valid", "1", "--n_test", "1",
            "--seconds", "1"]
    assert synth.main(args) == 0
    assert synth.main(args) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    # A smaller dataset written over a larger one leaves no stale pair behind.
    assert synth.main(args[:2] + ["--n_train", "1", "--n_valid", "1", "--n_test", "1",
                                  "--seconds", "1", "--overwrite"]) == 0
    assert len(list_audio(out / "train" / "clean")) == 1


# ---------------------------------------------------------------- vbdmd

VBDMD_48K = SHARED_DATA / "vbdmd_test_48k"
VBDMD_16K = SHARED_DATA / "vbdmd_test"
# 48 kHz test pairs reused as "training" files of other speakers, to exercise the split.
TRAIN_STAND_INS = {"p226_036.wav": "p232_036.wav", "p287_050.wav": "p232_050.wav",
                   "p250_116.wav": "p232_116.wav", "p251_170.wav": "p232_170.wav"}


def official_layout(root, with_test=True):
    """A folder laid out like the official archive, made of symlinks to the 48 kHz pairs."""
    from echo.data.vbdmd import TEST_FOLDERS, TRAIN_FOLDERS
    for kind, train_folder, test_folder in zip(("clean", "noisy"), TRAIN_FOLDERS, TEST_FOLDERS):
        (root / train_folder).mkdir(parents=True)
        for new_name, source in TRAIN_STAND_INS.items():
            (root / train_folder / new_name).symlink_to(VBDMD_48K / kind / source)
        if with_test:
            (root / test_folder).mkdir()
            for source in sorted((VBDMD_48K / kind).glob("*.wav")):
                (root / test_folder / source.name).symlink_to(source)
    return root


@pytest.fixture(scope="module")
def vbdmd_prepared(tmp_path_factory):
    from echo.data import vbdmd
    root = tmp_path_factory.mktemp("vbdmd")
    src = official_layout(root / "src")
    assert vbdmd.main(["--src", str(src), "--dst", str(root / "dst"), "--workers", "1",
                       "--quiet"]) == 0
    return src, root / "dst"


@needs_shared_data
def test_vbdmd_layout_rate_lengths_and_speaker_split(vbdmd_prepared):
    _src, dst = vbdmd_prepared
    n_test = len(list_audio(VBDMD_48K / "clean"))
    check_layout(dst, {"train": 2, "valid": 2, "test": n_test}, 16000)
    assert list_audio(dst / "valid" / "clean") == ["p226_036.wav", "p287_050.wav"]
    assert list_audio(dst / "train" / "clean") == ["p250_116.wav", "p251_170.wav"]
    for split, key, clean, noisy in all_pairs(dst):
        source = TRAIN_STAND_INS.get(key + ".wav", key + ".wav") if split != "test" else key + ".wav"
        frames_48k = sf.info(VBDMD_48K / "clean" / source).frames
        assert sf.info(clean).frames == sf.info(noisy).frames == round(frames_48k * 16000 / 48000)


@needs_shared_data
def test_vbdmd_matches_independent_16k_resample(vbdmd_prepared):
    _src, dst = vbdmd_prepared
    for kind in ("clean", "noisy"):
        for name in ("p232_036.wav", "p232_399.wav"):
            ours, _sr = sf.read(dst / "test" / kind / name, dtype="float64")
            theirs, _sr = sf.read(VBDMD_16K / kind / name, dtype="float64")
            assert len(ours) == len(theirs)
            assert np.corrcoef(ours, theirs)[0, 1] > 0.99, (kind, name)


@needs_shared_data
def test_vbdmd_parallel_gives_same_files(vbdmd_prepared, tmp_path):
    from echo.data import vbdmd
    src, dst = vbdmd_prepared
    assert vbdmd.main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--workers", "2",
                       "--quiet"]) == 0
    assert file_digests(tmp_path / "dst") == file_digests(dst)


@needs_shared_data
def test_vbdmd_refuses_existing_output(vbdmd_prepared, capsys):
    from echo.data import vbdmd
    src, dst = vbdmd_prepared
    before = file_digests(dst)
    assert vbdmd.main(["--src", str(src), "--dst", str(dst), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not empty" in err and len(err.splitlines()) == 1
    assert file_digests(dst) == before


@needs_shared_data
def test_vbdmd_missing_folders_and_absent_test_split(tmp_path, capsys):
    from echo.data import vbdmd
    (tmp_path / "empty").mkdir()
    assert vbdmd.main(["--src", str(tmp_path / "empty"), "--dst", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "clean_trainset_28spk_wav" in err and "noisy_trainset_28spk_wav" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()

    src = official_layout(tmp_path / "partial", with_test=False)
    assert vbdmd.main(["--src", str(src), "--dst", str(tmp_path / "dst"), "--quiet",
                       "--workers", "1"]) == 0
    assert "test split is skipped" in capsys.readouterr().err
    assert len(list_audio(tmp_path / "dst" / "train" / "clean")) == 2
    assert not (tmp_path / "dst" / "test").exists()


# ---------------------------------------------------------------- mix

LIBRISPEECH = SHARED_DATA / "speech" / "librispeech_train-clean-100"
NOISES = SHARED_DATA / "noise" / "speech_commands_bg"
MIX_COUNTS = {"train": 6, "valid": 2, "test": 2}
MIX_SNR = (-5.0, 5.0)


def small_speech_corpus(folder, n_files=8):
    """``n_files`` LibriSpeech utterances of different speakers, as symlinks."""
    folder.mkdir(parents=True)
    for source in sorted(LIBRISPEECH.glob("*.flac"))[:n_files]:
        (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture(scope="module")
def mixed_sets(tmp_path_factory):
    from echo.data import mix
    root = tmp_path_factory.mktemp("mix")
    speech = small_speech_corpus(root / "speech")
    made = {}
    # "b" repeats "a" with two processes: the output must not depend on the worker count
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        mix.make_dataset(speech, NOISES, root / name, segment_seconds=2.0, snr_range=MIX_SNR,
                         seed=seed, split_noise=True, workers=workers, log=lambda text: None,
                         **{f"n_{split}": count for split, count in MIX_COUNTS.items()})
        made[name] = root / name
    return made


@needs_shared_data
def test_mix_layout_and_lengths(mixed_sets):
    check_layout(mixed_sets["a"], MIX_COUNTS, 16000)
    for _split, _key, clean, noisy in all_pairs(mixed_sets["a"]):
        assert sf.info(clean).frames == sf.info(noisy).frames == 32000


@needs_shared_data
def test_mix_snr_in_range_and_no_clipping(mixed_sets):
    rows = {(row["split"], row["name"]): row for row in read_manifest(mixed_sets["a"])}
    for split, key, clean_path, noisy_path in all_pairs(mixed_sets["a"]):
        clean, noisy, sr = read_pair(clean_path, noisy_path)
        snr = measured_snr_db(clean, noisy, sr)
        assert MIX_SNR[0] - 0.5 < snr < MIX_SNR[1] + 0.5, key
        assert abs(snr - float(rows[(split, key + ".wav")]["snr_db"])) < 0.5, key
        assert np.abs(noisy).max() < 1.0 and np.abs(clean).max() < 1.0


@needs_shared_data
def test_mix_is_deterministic(mixed_sets):
    first, again, other = (file_digests(mixed_sets[k]) for k in "abc")
    assert first == again
    assert read_manifest(mixed_sets["a"]) == read_manifest(mixed_sets["b"])
    assert first != other


@needs_shared_data
def test_mix_splits_share_no_utterance_speaker_or_noise(mixed_sets):
    rows = read_manifest(mixed_sets["a"])
    for column in ("speech", "speaker", "noise"):
        used = {split: {row[column] for row in rows if row["split"] == split} for split in SPLITS}
        for i, first in enumerate(SPLITS):
            for second in SPLITS[i + 1:]:
                assert not used[first] & used[second], (column, first, second)


@needs_shared_data
def test_mix_full_length_and_resampling_on_load(tmp_path):
    from echo.data import mix
    speech = tmp_path / "speech"
    speech.mkdir()
    (speech / "p232_036.wav").symlink_to(VBDMD_48K / "clean" / "p232_036.wav")  # 48 kHz input
    rows = mix.make_dataset(speech, NOISES, tmp_path / "out", n_train=1, n_valid=0, n_test=0,
                            segment_seconds=0, log=lambda text: None)
    clean, noisy, sr = read_pair(*pair_paths_of(tmp_path / "out", rows[0]))
    frames_48k = sf.info(VBDMD_48K / "clean" / "p232_036.wav").frames
    assert sr == 16000 and len(clean) == round(frames_48k / 3)
    reference, _sr = sf.read(VBDMD_16K / "clean" / "p232_036.wav", dtype="float64")
    assert np.corrcoef(clean, reference)[0, 1] > 0.99  # resampled, not cropped or shifted
    assert 0.0 - 0.5 < measured_snr_db(clean, noisy, sr) < 20.0 + 0.5


def pair_paths_of(base_dir, row):
    return (Path(base_dir) / row["split"] / "clean" / row["name"],
            Path(base_dir) / row["split"] / "noisy" / row["name"])


def test_mix_speaker_grouping():
    from echo.data.mix import speaker_of
    assert speaker_of("103-1240-0000.flac") == "103"
    assert speaker_of("p226_001.wav") == "p226"
    assert speaker_of("103/1240/103-1240-0000.flac") == "103"
    assert speaker_of("spk7/utt1.wav") == "spk7"


@needs_shared_data
def test_mix_cli_refuses_existing_output_and_reports_errors(tmp_path, capsys):
    from echo.data import mix
    speech = small_speech_corpus(tmp_path / "speech", n_files=3)
    args = ["--speech_dir", str(speech), "--noise_dir", str(NOISES), "--out_dir",
            str(tmp_path / "out"), "--n_train", "1", "--n_valid", "1", "--n_test", "1",
            "--segment_seconds", "1", "--quiet", "--workers", "1"]
    assert mix.main(args) == 0
    assert mix.main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert mix.main(args[:2] + ["--noise_dir", str(tmp_path / "nothing"), "--out_dir",
                                str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing" in err and len(err.splitlines()) == 1


def test_mix_noise_excerpts_loop_short_files_and_resample(tmp_path):
    from echo.data.mix import NoiseFiles
    ramp = np.linspace(-0.5, 0.5, 800, endpoint=False).astype(np.float32)
    sf.write(tmp_path / "short_8k.wav", ramp, 8000, subtype="FLOAT")
    sf.write(tmp_path / "long_16k.wav", np.tile(ramp, 40), 16000, subtype="FLOAT")
    noises = NoiseFiles(tmp_path, ["long_16k.wav", "short_8k.wav"], 16000)
    rng = np.random.default_rng(0)
    excerpt, offset = noises.excerpt(rng, 0, 5000)  # read in place
    assert len(excerpt) == 5000 and np.allclose(excerpt, np.tile(ramp, 40)[offset:offset + 5000])
    looped, _offset = noises.excerpt(rng, 1, 5000)  # 1600 samples at 16 kHz, looped
    assert len(looped) == 5000
    assert np.allclose(looped[:1600], looped[1600:3200], atol=1e-6)


@needs_shared_data
def test_resample_backends_agree_with_reference(monkeypatch):
    from echo.data import resample as resample_module
    audio, sr = sf.read(VBDMD_48K / "clean" / "p232_036.wav", dtype="float32")
    reference, _sr = sf.read(VBDMD_16K / "clean" / "p232_036.wav", dtype="float64")
    results = [resample_module.resample(audio, sr, 16000)]
    monkeypatch.setattr(resample_module, "soxr", None)  # the scipy fallback
    assert resample_module.backend_name() == "scipy.signal.resample_poly"
    results.append(resample_module.resample(audio, sr, 16000))
    for result in results:
        assert len(result) == len(reference) == round(len(audio) / 3)
        assert np.corrcoef(result, reference)[0, 1] > 0.99
