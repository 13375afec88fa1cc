"""The real-data training set of echo.recipes.real_data, built from ../shared/data (skipped
without it): the test and listening sets are never read, the decoupled noises are exact, and
valid/test hold speakers and noise recordings that training never saw."""
import csv

import numpy as np
import soundfile as sf

from conftest import SHARED_DATA, shared_data
from echo.recipes import real_data


def test_real_data_set_keeps_the_test_sets_out(tmp_path):
    shared_data("speech")
    rows = real_data.build(SHARED_DATA, tmp_path / "mix", n_train=24, n_valid=6, n_test=6, segment_seconds=1.0,
                           seed=0, workers=1, log=lambda text: None)
    assert len(rows) == 36
    sources = tmp_path / "mix_sources"
    staged = [p.resolve() for p in (sources / "speech").iterdir()] + [p.resolve() for p in (sources / "noise").iterdir()]
    for never in real_data.NEVER_READ:
        assert not any(str(SHARED_DATA / never) in str(p) for p in staged), never
    # the decoupled noise of a training pair is noisy - clean, sample for sample
    noise, sr = sf.read(sources / "noise" / "vbdmd_train_sample_p287_001.wav", dtype="float32")
    clean, _ = sf.read(SHARED_DATA / "vbdmd_train_sample" / "clean" / "p287_001.wav", dtype="float32")
    noisy, _ = sf.read(SHARED_DATA / "vbdmd_train_sample" / "noisy" / "p287_001.wav", dtype="float32")
    assert sr == 16000 and np.allclose(noise, noisy - clean, atol=1e-6)
    with open(tmp_path / "mix" / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    by_split = {split: [r for r in manifest if r["split"] == split] for split in ("train", "valid", "test")}
    train_speakers = {r["speaker"] for r in by_split["train"]}
    train_noises = {r["noise"] for r in by_split["train"]}
    for split in ("valid", "test"):
        assert not {r["speaker"] for r in by_split[split]} & train_speakers
        assert not {r["noise"] for r in by_split[split]} & train_noises
