"""On-the-fly mixing (``--speech_dir``/``--noise_dir``): a new mixture per example, drawn from
(seed, epoch, index); a resumed run draws what the uninterrupted run drew; the reverberant
target is the direct path plus 50 ms of reflections; bad folders fail before training."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import train
from conftest import REPO, TINY_ARGS
from echo.data.corpus import AudioCorpus
from echo.data.mix import active_speech_power, measure_snr_db
from echo.data.onthefly import (MixtureConfig, draw_mixture, excerpt, held_apart, mixture_rng, speaker_group,
                                speech_excerpt)
from echo.data.rooms import EARLY_MS, RirBank, align_to_direct_path, early_part
from echo.data.synth import colored_noise, speech_like
from echo.data_module import EpochSampler, SpecsDataModule
from echo.util.audio import AudioError
from test_resume import assert_same_training_state, load, newest_version, train_losses

SR = 16000


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Speech of 6 speakers (two 1.5-s files each, one of them at 48 kHz in a sub-folder) and
    5 noise files (one of them at 8 kHz, one shorter than a mixture)."""
    root = tmp_path_factory.mktemp("corpora")
    rng = np.random.default_rng(0)
    for speaker in range(6):
        for take in range(2):
            folder = root / "speech" / ("hi_rate" if speaker == 5 else "")
            folder.mkdir(parents=True, exist_ok=True)
            sr = 48000 if speaker == 5 else SR
            sf.write(folder / f"s{speaker}_{take}.wav", 0.3 * speech_like(rng, int(1.5 * sr), sr), sr)
    (root / "noise").mkdir()
    for index in range(5):
        sr = 8000 if index == 0 else SR
        seconds = 0.7 if index == 1 else 3.0
        sf.write(root / "noise" / f"n{index}.wav", 0.1 * colored_noise(rng, int(seconds * sr), sr, index % 3), sr)
    return root


def module(corpora, tmp_path, **overrides):
    options = dict(speech_dir=[str(corpora / "speech")], noise_dir=[str(corpora / "noise")], num_frames=16,
                   batch_size=2, num_workers=0, examples_per_epoch=8, n_valid_mixtures=3, segment_seconds=1.0,
                   valid_fraction=0.3, cache_dir=str(tmp_path / "cache"), seed=3)
    options.update(overrides)
    data = SpecsDataModule(**options)
    data.setup("fit")
    return data


def test_every_example_is_a_new_mixture_and_the_same_for_the_same_seed_epoch_and_index(corpora, tmp_path):
    train_set = module(corpora, tmp_path).datasets["train"]
    again = module(corpora, tmp_path).datasets["train"]
    first = train_set[(0, 1)]
    for a, b in zip(first, again[(0, 1)]):
        assert torch.equal(a, b)
    others = [train_set[(0, 2)], train_set[(1, 1)], module(corpora, tmp_path, seed=4).datasets["train"][(0, 1)]]
    for other in others:
        assert not torch.equal(first[1], other[1])
    assert first[0].shape == (1, 256, 16) and first[0].abs().max() > 0


def test_mix_seed_draws_new_training_mixtures_on_the_same_split_and_validation(corpora, tmp_path):
    """--mix_seed changes the training draws only: the held-apart speakers and the validation
    mixtures stay those of --seed; left out, it is --seed."""
    plain, same, other = (module(corpora, tmp_path, **extra) for extra in ({}, {"mix_seed": 3}, {"mix_seed": 9}))
    for a, b in zip(plain.datasets["train"][(0, 1)], same.datasets["train"][(0, 1)]):
        assert torch.equal(a, b)
    for index in range(4):
        assert not torch.equal(plain.datasets["train"][(0, index)][1], other.datasets["train"][(0, index)][1])
    assert plain.datasets["train"].speech.names == other.datasets["train"].speech.names
    assert plain.datasets["train"].noise.names == other.datasets["train"].noise.names
    for index in range(3):
        assert torch.equal(plain.datasets["valid"].load_pair(index)[1], other.datasets["valid"].load_pair(index)[1])


def test_ddp_ranks_draw_different_mixtures(corpora, tmp_path):
    train_set = module(corpora, tmp_path).datasets["train"]
    shares = [list(EpochSampler(train_set, num_replicas=2, rank=rank, seed=3, epoch_of=lambda: 2)) for rank in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) == len(shares[1]) == 4
    assert not torch.equal(train_set[shares[0][0]][1], train_set[shares[1][0]][1])


def test_validation_is_fixed_and_held_apart_from_training(corpora, tmp_path):
    data = module(corpora, tmp_path)
    again = module(corpora, tmp_path)
    valid, train_set = data.datasets["valid"], data.datasets["train"]
    assert len(valid) == 3
    for index in range(3):
        assert torch.equal(valid.load_pair(index)[1], again.datasets["valid"].load_pair(index)[1])
    train_speakers = {speaker_group(name) for name in train_set.speech.names}
    valid_speakers = {speaker_group(name) for name in data._corpora[1].names}
    assert valid_speakers and not train_speakers & valid_speakers
    assert not set(train_set.noise.names) & set(data._corpora[3].names)


def test_mixtures_follow_the_snr_and_gain_ranges_and_never_clip(corpora, tmp_path):
    speech = AudioCorpus(corpora / "speech", SR, tmp_path / "cache")
    noise = AudioCorpus(corpora / "noise", SR, tmp_path / "cache")
    config = MixtureConfig(segment=SR, snr_range=(4.0, 6.0), gain_range=(-30.0, -25.0))
    for index in range(6):
        clean, noisy, info = draw_mixture(mixture_rng(0, index), speech, noise, config)
        assert clean.dtype == noisy.dtype == np.float32 and clean.shape == noisy.shape == (SR,)
        assert 4.0 <= info["snr_db"] <= 6.0
        assert measure_snr_db(clean, noisy, SR) == pytest.approx(info["snr_db"], abs=0.01)
        assert -30.0 <= info["gain_db"] <= -25.0 + 1e-9
    loud = MixtureConfig(segment=SR, snr_range=(-5.0, -5.0), gain_range=(30.0, 30.0))
    clean, noisy, info = draw_mixture(mixture_rng(0, 0), speech, noise, loud)
    assert np.abs(noisy).max() <= 0.99 + 1e-6 and info["gain_db"] < 30.0
    assert measure_snr_db(clean, noisy, SR) == pytest.approx(-5.0, abs=0.01)


def test_corpus_is_memory_mapped_and_resampled_once(corpora, tmp_path):
    corpus = AudioCorpus(corpora / "speech", SR, tmp_path / "cache")
    assert len(corpus) == 12 and "hi_rate/s5_0.wav" in corpus.names
    assert isinstance(corpus[corpus.names.index("hi_rate/s5_0.wav")], np.memmap)
    assert corpus.lengths[corpus.names.index("hi_rate/s5_0.wav")] == int(1.5 * SR)
    cached = sorted((tmp_path / "cache").glob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    AudioCorpus(corpora / "speech", SR, tmp_path / "cache")
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").glob("*.npy"))] == stamps


def test_held_apart_falls_back_to_files_when_there_is_one_speaker(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    for take in range(4):
        sf.write(folder / f"reader_{take}.wav", 0.1 * np.ones(SR // 2), SR)
    train_part, valid_part = held_apart(AudioCorpus(folder, SR, tmp_path / "cache"), 0.25, 0, "speech", True)
    assert len(train_part) + len(valid_part) == 4 and len(valid_part) >= 1
    assert not set(train_part.names) & set(valid_part.names)


# ------------------------------------------------------------------------------ reverberation


def test_target_is_the_direct_path_and_the_first_50_ms_of_reflections():
    rir = np.zeros(SR // 2, dtype=np.float32)
    rir[100] = 0.2                     # before the direct path: kept only within the guard
    rir[160] = 1.0                     # direct path
    rir[160 + int(0.030 * SR)] = 0.5   # early reflection: part of the target
    rir[160 + int(0.049 * SR)] = 0.4
    rir[160 + int(0.051 * SR)] = 0.3   # late: removed from the target
    rir[160 + int(0.200 * SR)] = 0.2
    aligned = align_to_direct_path(rir, SR)
    guard = int(round(2.5e-3 * SR))
    assert np.argmax(aligned) == guard and aligned[guard] == 1.0 and aligned.shape[0] == rir.shape[0] - 160 + guard
    early = early_part(aligned, SR)
    keep = guard + int(round(EARLY_MS * SR / 1000))
    np.testing.assert_array_equal(early[:keep], aligned[:keep])
    assert not early[keep:].any() and aligned[keep:].any()
    assert early[guard + int(0.049 * SR)] == pytest.approx(0.4) and early[guard + int(0.051 * SR)] == 0.0


def one_speaker_one_noise(tmp_path):
    """(speech, noise) corpora of one 3-s file each."""
    for kind, audio in (("speech", 0.3 * speech_like(np.random.default_rng(1), 3 * SR, SR)),
                        ("noise", 0.1 * colored_noise(np.random.default_rng(2), 3 * SR, SR, 0.0))):
        (tmp_path / kind).mkdir()
        sf.write(tmp_path / kind / f"{kind[0]}_0.wav", audio, SR)
    return (AudioCorpus(tmp_path / "speech", SR, tmp_path / "cache"),
            AudioCorpus(tmp_path / "noise", SR, tmp_path / "cache"))


def test_reverberant_mixture_hears_the_whole_room_and_the_target_only_its_early_part(tmp_path):
    speech, noise = one_speaker_one_noise(tmp_path)
    rir = np.zeros(int(0.3 * SR), dtype=np.float32)
    rir[0], rir[int(0.1 * SR)] = 1.0, 0.6   # direct path, and one late echo 100 ms after it
    bank = RirBank([rir], SR)
    # noise 200 dB down: the mixture is the reverberant speech alone
    config = MixtureConfig(segment=SR, snr_range=(200.0, 200.0), gain_range=(0.0, 0.0), reverb_prob=1.0)
    clean, noisy, info = draw_mixture(mixture_rng(0, 0), speech, noise, config, bank)
    assert info["speech_room"] == 0
    delay = int(0.1 * SR)
    # the mixture = the target plus the target again, 100 ms later at 0.6 (the echo is late)
    np.testing.assert_allclose(noisy[delay:], clean[delay:] + 0.6 * clean[:-delay], atol=1e-5)
    assert np.abs(noisy - clean).max() > 0.01
    # the excerpt starts in the middle of the recording: its first 100 ms already hear the echo of
    # the speech before it, as a microphone in that room would (not a room switched on at the cut)
    assert np.abs(noisy[:delay] - clean[:delay]).max() > 0.01
    # an echo within 50 ms belongs to the target: then target and mixture coincide
    rir_early = np.zeros(int(0.3 * SR), dtype=np.float32)
    rir_early[0], rir_early[int(0.03 * SR)] = 1.0, 0.6
    clean, noisy, _ = draw_mixture(mixture_rng(0, 0), speech, noise, config, RirBank([rir_early], SR))
    np.testing.assert_allclose(noisy, clean, atol=1e-6)


def test_snr_is_set_against_the_target_not_the_reverberant_speech(tmp_path):
    speech, noise = one_speaker_one_noise(tmp_path)
    rir = np.zeros(int(0.3 * SR), dtype=np.float32)
    rir[0], rir[int(0.1 * SR)] = 1.0, 0.8  # a strong late echo: the reverberant speech is louder than the target
    bank = RirBank([rir], SR)

    def draw(snr_db):  # the same draws but for the SNR (a range of one value still draws once)
        config = MixtureConfig(segment=SR, snr_range=(snr_db, snr_db), gain_range=(0.0, 0.0), reverb_prob=1.0)
        return draw_mixture(mixture_rng(0, 5), speech, noise, config, bank)

    _, speech_alone, _ = draw(300.0)
    clean, noisy, info = draw(3.0)
    assert info["gain_db"] == 0.0 and "speech_room" in info  # no level change, no clipping guard
    noise_part = noisy.astype(np.float64) - speech_alone
    snr = 10 * np.log10(active_speech_power(clean, SR) / np.mean(noise_part ** 2))
    assert snr == pytest.approx(3.0, abs=0.01)
    # a check that the echo matters: against the reverberant speech the SNR would read higher
    assert 10 * np.log10(active_speech_power(speech_alone, SR) / np.mean(noise_part ** 2)) > 3.5


def test_speech_excerpt_is_the_louder_of_two_draws():
    audio = np.zeros(4 * SR, dtype=np.float32)
    audio[:2 * SR] = 0.3 * speech_like(np.random.default_rng(3), 2 * SR, SR)  # two seconds of speech, two of pause
    choices = 0
    for seed in range(20):
        chosen = speech_excerpt(np.random.default_rng(seed), audio, SR // 2)
        rng = np.random.default_rng(seed)
        energies = [np.mean(excerpt(rng, audio, SR // 2) ** 2) for _ in range(2)]
        assert np.mean(chosen ** 2) == max(energies)
        choices += energies[0] != energies[1]
    assert choices >= 10  # most seeds give a real choice (not two equally silent excerpts)


def test_simulated_rooms_ring_as_long_as_asked(tmp_path):
    bank = RirBank.simulated(3, SR, seed=0, cache_dir=tmp_path)
    assert len(bank) == 3 and all(np.argmax(np.abs(r)) == 40 for r in bank.responses)
    # cached: the second bank is read, not simulated, and is the same
    again = RirBank.simulated(3, SR, seed=0, cache_dir=tmp_path)
    for a, b in zip(bank.responses, again.responses):
        np.testing.assert_array_equal(a, b)
    for rir in bank.responses:
        energy = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]  # Schroeder integral
        decay_db = 10 * np.log10(energy / energy[0])
        t20 = np.argmax(decay_db < -25) - np.argmax(decay_db < -5)
        rt60 = 3 * t20 / SR
        assert 0.1 < rt60 < 1.6  # drawn from 0.2-1.0 s; image-source rooms ring a little longer


# ------------------------------------------------------------------------------ train.py


FAST = ["--accelerator", "cpu", "--batch_size", "2", "--num_frames", "16", "--num_workers", "0", "--logger", "csv",
        "--log_every_n_steps", "1", "--num_eval_files", "0", "--seed", "7", "--examples_per_epoch", "8",
        "--n_valid_mixtures", "2", "--segment_seconds", "1.0", "--valid_fraction", "0.3", *TINY_ARGS]


def run_mixing(corpora, log_dir, *extra):
    train.main(["--speech_dir", str(corpora / "speech"), "--noise_dir", str(corpora / "noise"), "--log_dir", str(log_dir),
                "--cache_dir", str(log_dir.parent / "cache"), *FAST, *extra])
    return newest_version(log_dir)


def test_resumed_mixing_run_draws_what_the_uninterrupted_run_drew(corpora, tmp_path):
    whole = run_mixing(corpora, tmp_path / "whole", "--max_steps", "8", "--reverb_prob", "0.5", "--n_rooms", "2")
    first = run_mixing(corpora, tmp_path / "split", "--max_steps", "4", "--reverb_prob", "0.5", "--n_rooms", "2")
    last = first / "checkpoints" / "last.ckpt"
    run_mixing(corpora, tmp_path / "split", "--max_steps", "8", "--reverb_prob", "0.5", "--n_rooms", "2",
               "--ckpt", str(last))
    expected, resumed = train_losses(tmp_path / "whole"), train_losses(tmp_path / "split")
    assert len(expected) == len(resumed) == 8
    np.testing.assert_allclose(resumed, expected, rtol=1e-5, atol=0.0)
    assert len(set(expected)) == 8
    assert_same_training_state(load(newest_version(tmp_path / "split") / "checkpoints" / "last.ckpt"),
                               load(whole / "checkpoints" / "last.ckpt"))


def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *FAST, "--max_steps", "1", *args],
                          capture_output=True, text=True, timeout=300)


def bad_folder_args(problem, corpora, tmp_path):
    speech, noise = str(corpora / "speech"), str(corpora / "noise")
    if problem == "missing":
        noise = str(tmp_path / "nowhere")
    elif problem == "empty":
        (tmp_path / "empty").mkdir()
        noise = str(tmp_path / "empty")
    elif problem == "unreadable":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF not really")
        noise = str(tmp_path / "bad")
    return {"no_data": [], "both": ["--base_dir", str(tmp_path), "--speech_dir", speech, "--noise_dir", noise]}.get(
        problem, ["--speech_dir", speech, "--noise_dir", noise])


@pytest.mark.parametrize("problem, expected", [
    ("missing", "nowhere: noise folder does not exist"), ("empty", "empty: no .wav or .flac files"),
    ("unreadable", "none of its 1 noise files can be read"), ("no_data", "give --base_dir"), ("both", "not both")])
def test_bad_folders_fail_before_training_with_one_line(problem, expected, corpora, tmp_path):
    args = bad_folder_args(problem, corpora, tmp_path)
    with pytest.raises(AudioError) as err:
        train.main([*FAST, "--max_steps", "1", *args, "--log_dir", str(tmp_path / "logs"),
                    "--cache_dir", str(tmp_path / "cache")])
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "logs").exists()


def test_bad_folder_on_the_command_line_is_one_line_without_a_traceback(corpora, tmp_path):
    result = run_cli(*bad_folder_args("missing", corpora, tmp_path), "--log_dir", str(tmp_path / "logs"),
                     "--cache_dir", str(tmp_path / "cache"))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and "nowhere: noise folder does not exist" in lines[0]
    assert not (tmp_path / "logs").exists()


def test_unreadable_files_are_named_once_and_left_out(corpora, tmp_path, capsys):
    folder = tmp_path / "noise"
    folder.mkdir()
    for name in ("n1.wav", "n2.wav"):
        (folder / name).write_bytes((corpora / "noise" / name).read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    corpus = AudioCorpus(folder, SR, tmp_path / "cache", what="noise")
    assert corpus.names == ["n1.wav", "n2.wav"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(notes) == 1 and "1 noise file(s) left out" in notes[0] and "broken.wav" in notes[0]


def test_bad_mixing_flags_are_refused(corpora, tmp_path, capsys):
    for flags, message in ((["--snr_range", "10", "0"], "--snr_range"), (["--reverb_prob", "1.5"], "--reverb_prob"),
                           (["--valid_fraction", "1"], "--valid_fraction")):
        with pytest.raises(SystemExit) as stop:
            train.main([*FAST, "--max_steps", "1", "--speech_dir", str(corpora / "speech"), "--noise_dir",
                        str(corpora / "noise"), *flags, "--log_dir", str(tmp_path / "logs"),
                        "--cache_dir", str(tmp_path / "cache")])
        assert stop.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "logs").exists()


def test_heldout_pairs_come_from_the_held_apart_speakers_and_are_written_whole(corpora, tmp_path):
    sys.path.insert(0, str(REPO / "experiments"))
    import heldout_mixtures

    out = tmp_path / "heldout"
    argv = ["--speech_dir", str(corpora / "speech"), "--noise_dir", str(corpora / "noise"), "--out_dir", str(out),
            "--n", "3", "--seconds", "1", "--valid_fraction", "0.3", "--seed", "3", "--cache_dir", str(tmp_path / "c")]
    assert heldout_mixtures.main(argv) == 0
    names = sorted(p.name for p in (out / "noisy").iterdir())
    assert names == sorted(p.name for p in (out / "clean").iterdir()) == [f"heldout_{i:03d}.wav" for i in range(3)]
    data = module(corpora, tmp_path)
    held_speakers = {speaker_group(name) for name in data._corpora[1].names}
    pairs = json.loads((out / "manifest.json").read_text())["pairs"]
    assert {speaker_group(p["speech"]) for p in pairs} <= held_speakers
    clean, sr = sf.read(out / "clean" / names[0])
    assert sr == SR and clean.shape == (SR,) and np.abs(clean).max() > 0
    assert heldout_mixtures.main(argv) == 2  # an existing folder is never written into
