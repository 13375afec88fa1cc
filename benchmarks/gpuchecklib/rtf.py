"""The rtf part of benchmarks/gpu_check.py: the enhancement real-time factor of the paper-size model."""
import tempfile
import time
from pathlib import Path

from gpuchecklib import common
from gpuchecklib.common import DEFAULT_N, ENH_SECONDS, FEW_STEP_N, FEW_STEP_PREDICTOR, SHARED_DATA, synchronize


def enhancement_audio():
    """A VoiceBank-DEMAND noisy test file of about ENH_SECONDS, or generated speech in noise."""
    import soundfile as sf

    folder = SHARED_DATA / "vbdmd_test" / "noisy"
    candidates = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    best = min(candidates, key=lambda p: abs(sf.info(str(p)).duration - ENH_SECONDS), default=None)
    if best is not None:
        audio, sr = sf.read(str(best), dtype="float32", always_2d=True)
        return audio.mean(axis=1), sr, best.name
    from echo.data.synth import make_dataset

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder) / "synth", n_train=0, n_valid=0, n_test=1, seconds=ENH_SECONDS, seed=0)
        audio, sr = sf.read(str(next((root / "test" / "noisy").glob("*.wav"))), dtype="float32")
    return audio, sr, f"generated, {ENH_SECONDS} s"


def check_rtf(device):
    from echo.enhance import enhance_audio
    from echo.sampling import PredictorRegistry

    model = common.paper_model(device).eval()
    audio, sr, name = enhancement_audio()
    seconds = len(audio) / sr
    enhance_audio(model, audio, sr, sampler_kwargs={"N": 1})  # warm-up: kernels, cuDNN plans
    rows = {}
    samplers = {f"N={DEFAULT_N}": {"N": DEFAULT_N},
                f"{FEW_STEP_PREDICTOR} N={FEW_STEP_N}": {"predictor": FEW_STEP_PREDICTOR, "N": FEW_STEP_N}}
    for label, kwargs in samplers.items():
        predictor = kwargs.get("predictor")
        if predictor is not None and predictor not in PredictorRegistry:
            rows[label] = {"skipped": f"predictor '{predictor}' is not registered in echo.sampling "
                                      f"(known: {', '.join(PredictorRegistry.get_all_names())})"}
            continue
        stats = {}
        synchronize(device)
        started = time.perf_counter()
        enhance_audio(model, audio, sr, sampler_kwargs=kwargs, stats=stats)
        synchronize(device)
        wall = time.perf_counter() - started
        rows[label] = {"rtf": round(wall / seconds, 4), "wall_s": round(wall, 3), "nfe": stats.get("nfe"), **kwargs}
    return {"file": name, "audio_s": round(seconds, 3), "samplers": rows}
