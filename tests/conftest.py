import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
os.environ.setdefault("ECHO_OPS", "native")

import torch  # noqa: E402

# The suite runs under pytest-xdist, one process per core: the tiny tensors of the tests gain
# nothing from intra-op threads, and two processes each spawning two threads on two cores
# slowed small convolutions down several times over.
torch.set_num_threads(int(os.environ.get("ECHO_TEST_THREADS", "1")))

# every test must leave threads, dtype, grad mode, environment, ... as they are now (see process_state);
# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK when it is first imported, so it is imported first
import lightning.pytorch  # noqa: E402,F401
from process_state import expect_current, process_state_unchanged  # noqa: E402,F401
expect_current()
pytest_plugins = ("pytester",)  # test_process_state runs a leaking test in an inner session

# the tiny network used across the suite: trains and samples in seconds on a CPU
TINY_BACKBONE = dict(nf=16, ch_mult=[1, 2, 2, 2], num_res_blocks=1, attn_resolutions=[])
TINY_ARGS = ["--nf", "16", "--ch_mult", "1", "2", "2", "2", "--num_res_blocks", "1", "--attn_resolutions"]


def shared_data(*parts):
    """Path below ../shared/data, or skip the test when that real data is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """A small generated data set with train/valid/test splits (2 s files)."""
    from echo.data.synth import make_dataset
    root = tmp_path_factory.mktemp("synth")
    return make_dataset(root / "data", n_train=8, n_valid=3, n_test=3, seconds=1.5, seed=0)


def save_tiny_checkpoint(path, seed=0, **overrides):
    """A checkpoint of an untrained tiny model, in the layout train.py writes."""
    import torch
    from echo.model import ScoreModel
    torch.manual_seed(seed)
    model = ScoreModel(**dict(TINY_BACKBONE, **overrides))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")
