"""Rebuild demo/real_clip/ from the source recordings (the clip itself is kept in the repository, so
the demo needs no download):

    python demo/make_real_clip.py --data_root ../shared/data

Speech: LibriSpeech train-clean-100 7635-105409-0000 (speaker 7635, Judy Guinan), the first 6 s.
Noise: "City" by gezortenplotz (freesound 44796, edited by Porrumentzio, as bundled with the Blanket
app), from its start, at 5 dB SNR (active speech power over noise power, as in echo.data.mix).
Neither this speaker nor this excerpt is in the VoiceBank-DEMAND test set; see ATTRIBUTION.md for
what the shipped model saw in training.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python demo/...` puts demo/ on the path

from echo.data.mix import noise_gain_for_snr, peak_gain  # noqa: E402
from echo.data.resample import read_mono  # noqa: E402
from echo.util.audio import write_audio_atomic  # noqa: E402

SPEECH = "speech/librispeech_train-clean-100/7635-105409-0000.flac"
NOISE = "noise/ambient_loops/blanket_city.wav"
SECONDS, SNR_DB, SR = 6.0, 5.0, 16000
CLIP = Path(__file__).resolve().parent / "real_clip" / "librispeech7635_city_5dB.wav"


def make_clip(data_root):
    length = int(SECONDS * SR)
    speech = read_mono(Path(data_root) / SPEECH, SR)[:length]
    noise = read_mono(Path(data_root) / NOISE, SR)[:length]
    noisy = speech + noise_gain_for_snr(speech, noise, SNR_DB, SR) * noise
    return (noisy * min(1.0, peak_gain(speech, noisy))).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default="../shared/data", help="folder holding speech/ and noise/")
    parser.add_argument("--out", default=str(CLIP), help="file to write (16-bit WAV)")
    args = parser.parse_args(argv)
    write_audio_atomic(args.out, make_clip(args.data_root), SR, subtype="PCM_16")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
