"""Room impulse responses for reverberant training mixtures, and the target they imply.

Simulated rooms come from pyroomacoustics (image-source method in shoebox rooms): sizes from a
small office to a lecture room, wall absorption set by Sabine's formula for an RT60 drawn from
0.2-1.0 s, source and microphone at least 0.5 m from every wall and 0.5-3 m apart. Simulating a
1-second room takes about 2 s on one core, so a bank of rooms is simulated once per (seed,
count, rate), cached, and drawn from during training. ``--rir_dir`` replaces the simulation by
measured or simulated responses of your own (one file a response).

The training target is the direct path plus the early reflections: the response up to
``EARLY_MS`` (50 ms) after its direct-path peak, the DNS-Challenge convention. Early reflections
are heard as part of the voice (they colour it but do not smear it), late reverberation as a
tail to remove; a dry target would ask the network to undo the room's colouration too, which it
can only guess, and it hollows the voice when it guesses wrong.
"""
import hashlib
import sys
from pathlib import Path

import numpy as np

from echo.util.audio import AudioError, staged_file

EARLY_MS = 50.0
# samples kept before the direct-path peak: the simulator's fractional-delay filter rings there
GUARD_MS = 2.5
RT60_RANGE = (0.2, 1.0)
ROOM_SIZE = ((3.0, 10.0), (3.0, 8.0), (2.4, 4.0))  # length, width, height in metres
DISTANCE_RANGE = (0.5, 3.0)
WALL_MARGIN = 0.5


def align_to_direct_path(rir, sr):
    """The response from just before its direct-path peak (the strongest tap), scaled to a unit
    peak: the delay of the direct path is the same for target and mixture and carries nothing."""
    rir = np.asarray(rir, dtype=np.float64)
    peak = int(np.argmax(np.abs(rir)))
    start = max(0, peak - int(round(GUARD_MS * sr / 1000)))
    rir = rir[start:]
    return (rir / np.abs(rir).max()).astype(np.float32)


def early_part(rir, sr, early_ms=EARLY_MS):
    """The direct path and early reflections of an aligned response: its first ``early_ms`` after
    the direct-path peak (a hard cut, as the DNS-Challenge recipes do)."""
    peak = int(np.argmax(np.abs(rir)))
    early = np.array(rir, dtype=np.float32)
    early[peak + int(round(early_ms * sr / 1000)):] = 0.0
    return early


def simulate_room(rng, sr):
    """(impulse response aligned to its direct path, description) of one random shoebox room."""
    import pyroomacoustics as pra  # imported here: only reverberant training needs it

    for _ in range(20):
        size = np.array([rng.uniform(*bounds) for bounds in ROOM_SIZE])
        rt60 = float(rng.uniform(*RT60_RANGE))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, size)
        except ValueError:  # a small room cannot ring that long: draw again
            continue
        mic = np.array([rng.uniform(WALL_MARGIN, side - WALL_MARGIN) for side in size])
        for _ in range(50):
            source = np.array([rng.uniform(WALL_MARGIN, side - WALL_MARGIN) for side in size])
            distance = float(np.linalg.norm(source - mic))
            if DISTANCE_RANGE[0] <= distance <= DISTANCE_RANGE[1]:
                break
        else:
            continue
        room = pra.ShoeBox(size, fs=sr, materials=pra.Material(absorption), max_order=max_order,
                           air_absorption=False)
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        info = {"size_m": [round(float(s), 2) for s in size], "rt60_s": round(rt60, 3),
                "distance_m": round(distance, 2)}
        return align_to_direct_path(room.rir[0][0], sr), info
    raise RuntimeError("no room could be drawn with the configured sizes and RT60 range")


class RirBank:
    """Room impulse responses aligned to their direct path, with their early parts."""

    def __init__(self, responses, sr, early_ms=EARLY_MS, source=""):
        if not responses:
            raise AudioError(f"{source or 'room bank'}: no impulse responses")
        self.sr, self.source = sr, source
        self.responses = list(responses)
        self.early = [early_part(rir, sr, early_ms) for rir in self.responses]

    def __len__(self):
        return len(self.responses)

    @classmethod
    def simulated(cls, count, sr, seed=0, cache_dir=None, early_ms=EARLY_MS, log=None):
        """``count`` simulated rooms, drawn from ``seed``; cached as one .npz file."""
        from echo.data.corpus import DEFAULT_CACHE

        log = log or (lambda line: print(line, file=sys.stderr))
        key = hashlib.sha256(f"rooms-v1\0{count}\0{sr}\0{seed}\0{RT60_RANGE}\0{ROOM_SIZE}\0{DISTANCE_RANGE}"
                             .encode()).hexdigest()[:24]
        path = Path(cache_dir or DEFAULT_CACHE) / f"rooms-{key}.npz"
        if path.exists():
            with np.load(path) as stored:
                responses = [stored[f"rir{i}"] for i in range(count)]
        else:
            log(f"simulating {count} rooms (once; cached in {path})")
            responses = [simulate_room(np.random.default_rng([seed, 4242, i]), sr)[0] for i in range(count)]
            with staged_file(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **{f"rir{i}": rir for i, rir in enumerate(responses)})
        return cls(responses, sr, early_ms, source=f"{count} simulated rooms")

    @classmethod
    def from_corpus(cls, corpus, early_ms=EARLY_MS):
        """The responses of an ``AudioCorpus`` (``--rir_dir``), each aligned to its direct path."""
        responses = []
        for i in range(len(corpus)):
            rir = np.asarray(corpus[i], dtype=np.float32)
            if not np.any(rir):
                raise AudioError(f"{corpus.folder / corpus.names[i]}: impulse response is all zeros")
            responses.append(align_to_direct_path(rir, corpus.sr))
        return cls(responses, corpus.sr, early_ms, source=str(corpus.folder))
