"""Finding, pairing, reading and writing audio files, with one-line errors that name the file.

Every script that touches audio goes through these functions, so that a bad file is reported
the same way everywhere (``AudioError``) instead of as a traceback from inside a library.
"""
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".wav", ".flac")
# Temporary files of ``write_audio_atomic``: hidden (so no folder listing here takes them for
# audio) and named after the writing process, so that a later run can tell the leftovers of a
# killed run from the files another live run is still writing.
PARTIAL_PREFIX = ".partial-"
_PARTIAL_NAME = re.compile(re.escape(PARTIAL_PREFIX) + r"(\d+)-")
# sample formats that can hold NaN or Inf
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


class AudioError(Exception):
    """A problem with one audio file or folder; ``str(err)`` is a complete one-line message."""


def list_audio(folder) -> list:
    """Relative paths (posix style) of the audio files below ``folder``, sorted, sub-folders included."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: folder does not exist")
    found = []
    visited = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        # a symlink to a folder above (a loop) would otherwise list the same files again and
        # again, once per level, until the path gets too long
        real = os.path.realpath(root)
        if real in visited:
            dirs.clear()
            continue
        visited.add(real)
        dirs.sort()
        for name in files:
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(found)


def _stem_map(folder, rel_paths):
    """Relative path without extension -> relative path; two files that differ only in their
    extension are ambiguous and refused."""
    by_stem = {}
    for rel in rel_paths:
        stem = os.path.splitext(rel)[0]
        if stem in by_stem:
            raise AudioError(f"{Path(folder) / rel}: same name as {Path(folder) / by_stem[stem]} "
                             "apart from the extension; keep one of them")
        by_stem[stem] = rel
    return by_stem


def pair_audio(dir_a, dir_b, what=("clean", "noisy"), allow_missing_b=False):
    """Pair the audio files of two folders by relative name (extension ignored).

    Returns a sorted list of ``(key, path_a, path_b)``. Files without a partner are an error
    that names the first few, unless ``allow_missing_b`` (then unmatched files of ``dir_b`` are
    ignored and unmatched files of ``dir_a`` still fail).
    """
    a = _stem_map(dir_a, list_audio(dir_a))
    b = _stem_map(dir_b, list_audio(dir_b))
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    problems = []
    if only_a:
        problems.append(f"{len(only_a)} {what[0]} file(s) without a {what[1]} partner in {dir_b}: "
                        + ", ".join(a[k] for k in only_a[:5]) + (" ..." if len(only_a) > 5 else ""))
    if only_b and not allow_missing_b:
        problems.append(f"{len(only_b)} {what[1]} file(s) without a {what[0]} partner in {dir_a}: "
                        + ", ".join(b[k] for k in only_b[:5]) + (" ..." if len(only_b) > 5 else ""))
    if problems:
        raise AudioError("; ".join(problems))
    keys = sorted(set(a) & set(b))
    return [(k, str(Path(dir_a) / a[k]), str(Path(dir_b) / b[k])) for k in keys]


def audio_info(path):
    """(sample rate, channels, frames) of a file, or AudioError."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for unreadable files
        raise AudioError(f"{path}: not a readable audio file ({_short(err)})") from None
    return info.samplerate, info.channels, info.frames


def check_samples_finite(path):
    """AudioError when a float file holds NaN or Inf samples; integer formats cannot, so only
    their header is read."""
    try:
        info = sf.info(str(path))
    except Exception as err:
        raise AudioError(f"{path}: not a readable audio file ({_short(err)})") from None
    if info.subtype in FLOAT_SUBTYPES:
        read_audio(path)


def read_audio(path, expected_sr=None, mono=False):
    """Read ``path`` as float32 ``[channels, samples]`` and its rate.

    Errors (one line, naming the file): unreadable, empty, non-finite samples, a rate other
    than ``expected_sr`` (when given), more than one channel when ``mono``.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(f"{path}: not a readable audio file ({_short(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: file holds no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN or Inf samples")
    if expected_sr is not None and sr != expected_sr:
        raise AudioError(f"{path}: sample rate {sr} Hz, expected {expected_sr} Hz; resample the data "
                         f"first (e.g. `sox in.wav -r {expected_sr} out.wav`) or pass --resample")
    if mono and data.shape[1] != 1:
        raise AudioError(f"{path}: {data.shape[1]} channels, expected mono; downmix the data first "
                         "or pass --downmix")
    return np.ascontiguousarray(data.T), sr


@contextmanager
def staged_file(path):
    """Yield a temporary name in ``path``'s folder to write to; when the block succeeds the file
    gets the usual mode and is renamed to ``path``, otherwise it is removed. ``path`` is thus
    either absent (or its old self) or complete, and a killed run's leftover carries
    PARTIAL_PREFIX and its PID for ``remove_stale_partials``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_audio_atomic(path, data, sr, subtype=None):
    """Write ``data`` ``[channels, samples]`` (or ``[samples]``) so that ``path`` is either absent or
    complete (see ``staged_file``)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.T
    with staged_file(path) as tmp:
        fmt = "FLAC" if Path(path).suffix.lower() == ".flac" else "WAV"
        sf.write(tmp, data, sr, format=fmt, subtype=subtype)


def remove_stale_partials(folder, suffixes=AUDIO_EXTENSIONS) -> list:
    """Delete the temporary files (``.partial-<pid>-*`` ending in one of ``suffixes``) that
    ``write_audio_atomic`` or a checkpoint writer left below ``folder`` when its process was
    killed (SIGKILL, power loss); returns their paths. Files of a process that is still running
    are kept, and so is everything not named like these temporary files."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(PARTIAL_PREFIX) and name.lower().endswith(tuple(suffixes)) \
                    and not _writer_is_alive(name):
                path = Path(root) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _writer_is_alive(partial_name) -> bool:
    match = _PARTIAL_NAME.match(partial_name)
    if not match:
        return False  # not of the pid-stamped naming: an older version's leftover
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def check_writable_folder(folder):
    """Create ``folder`` if needed and prove that files can be created in it; AudioError (one
    line, naming the folder) otherwise. Run before any work, so that a read-only output folder
    fails the run at once instead of every file after its work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise AudioError(f"{folder}: output folder is not writable ({err.strerror or type(err).__name__})") from None


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _short(err):
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
