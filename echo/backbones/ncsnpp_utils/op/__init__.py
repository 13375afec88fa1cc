"""FIR resampling (upfirdn2d) and fused bias + activation, as CUDA kernels or in plain PyTorch.

Nothing is compiled at import: the kernels are built on first use with a CUDA tensor, under the
control of ECHO_OPS=auto|cuda|native (see build.py).
"""
from .build import BackendChoice, OpsUnavailableError, ops_backend
from .fused_act import fused_bias_act
from .upfirdn2d import upfirdn2d

__all__ = ["upfirdn2d", "fused_bias_act", "ops_backend", "OpsUnavailableError", "BackendChoice"]
