"""The numeric precision the network runs in at inference: float32, bfloat16 or float16.

``resolve_precision("auto", device)`` picks bf16 where the hardware has bf16 arithmetic units
(CPU: AVX512-BF16 or AMX-BF16; CUDA: a GPU with native bf16) and float32 elsewhere, with a
one-line reason. ``set_inference_precision(model, "bf16")`` then casts the backbone's weights
to bf16 and runs its forward pass under autocast, so that its activations are bf16 too.

Only the backbone (``model.dnn``) changes: the sampler's arithmetic, the STFT, the output
scaling around the network and the returned estimate stay float32, and the network's output
is cast back to float32 before it leaves it. A float32 model is left exactly as it is.
"""
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "32", "bf16", "16")
# Lightning's spellings, so that the value given to train.py --precision works here too
ALIASES = {"32-true": "32", "fp32": "32", "bf16-mixed": "bf16", "bf16-true": "bf16",
           "16-mixed": "16", "16-true": "16", "fp16": "16"}
DTYPES = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}
NAMES = {"32": "fp32", "bf16": "bf16", "16": "fp16"}
# /proc/cpuinfo flags of x86 bf16 arithmetic: the AVX512 dot product and AMX's tile multiply
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionError(ValueError):
    """A precision that is unknown or cannot run on the chosen device; the message is one line."""


def canonical_precision(name: str) -> str:
    """'auto', '32', 'bf16' or '16' for any accepted spelling."""
    value = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if value not in PRECISIONS:
        accepted = ", ".join(PRECISIONS + tuple(ALIASES))
        raise PrecisionError(f"unknown precision {name!r} (accepted: {accepted})")
    return value


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's feature flags from /proc/cpuinfo, or None where there is no such file."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_bf16_units(flags=None):
    """(whether this CPU multiplies bf16 in hardware, a short reason). ``flags``: a set of
    /proc/cpuinfo flags; None reads them, or asks torch where the file does not exist.

    oneDNN runs bf16 on any AVX512 CPU, but without these units it converts to float32 and
    back around every multiply: measured on a 2-core AVX2 machine, a 128->128 3x3 convolution
    ran at 7.7 GFLOP/s in bf16 against 83.5 in float32."""
    if flags is None:
        flags = cpu_flags()
    if flags is None:
        found = [name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"),
                                          ("amx_bf16", "_is_amx_tile_supported"))
                 if getattr(torch.cpu, probe, lambda: False)()]
    else:
        found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU has bf16 units ({', '.join(found)})"
    return False, "the CPU has no bf16 units (no avx512_bf16 or amx_bf16), where bf16 runs slower than fp32"


def bf16_units(device, flags=None):
    """(whether ``device`` has bf16 arithmetic units, a short reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:  # torch >= 2.3 counts emulation as support unless told otherwise
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            native = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return native, f"{name} {'supports' if native else 'has no native'} bf16"
    if device.type == "cpu":
        return cpu_bf16_units(flags)
    return False, f"bf16 is used on CPUs and CUDA GPUs only, not on {device.type}"


def resolve_precision(name, device, flags=None):
    """(canonical precision '32', 'bf16' or '16', the line that says which and why)."""
    device = torch.device(device)
    precision = canonical_precision(name)
    if precision == "auto":
        has_units, reason = bf16_units(device, flags)
        chosen = "bf16" if has_units else "32"
        return chosen, f"precision: {NAMES[chosen]} (auto: {reason})"
    if precision != "32" and device.type not in ("cpu", "cuda"):
        raise PrecisionError(f"precision {NAMES[precision]} runs on a CPU or a CUDA GPU, not on {device.type}; "
                             "use --precision 32")
    line = f"precision: {NAMES[precision]}"
    if precision == "bf16":
        has_units, reason = bf16_units(device, flags)
        if not has_units:
            line += f" (slow here: {reason})"
    return precision, line


def set_inference_precision(model, precision):
    """Run ``model.dnn`` in ``precision`` ('32', 'bf16', '16' or an alias) from now on; returns
    the model. For inference: the weights are cast in place, so train a float32 copy instead."""
    precision = canonical_precision(precision)
    if precision == "auto":
        raise PrecisionError("resolve 'auto' first (resolve_precision)")
    if precision == "32":
        return model
    network = model.dnn
    dtype = DTYPES[precision]
    converted = getattr(network, "inference_dtype", None)
    if converted == dtype:
        return model
    if converted is not None:
        raise PrecisionError(f"the network already runs in {converted}; load the model again for {dtype}")
    _cast_weights(network, dtype)
    network.forward = _autocast_forward(network.forward, dtype)
    output_layer = getattr(network, "output_layer", None)
    if output_layer is not None:
        # back to float32 before the output becomes complex: view_as_complex takes float32
        # and float64 only (CPU autocast casts for it, CUDA autocast does not)
        output_layer.register_forward_hook(lambda module, args, out: out.float())
    network.inference_dtype = dtype
    return model


def _keeps_float32(module) -> bool:
    """The random Fourier frequencies of the time embedding (scale 16) times 2 pi log t reach
    phases of hundreds of radians, which bf16's 8 significant bits would put a radian or more off."""
    from echo.backbones.ncsnpp_utils.layerspp import GaussianFourierProjection

    return isinstance(module, GaussianFourierProjection)


def _cast_weights(network, dtype):
    for module in network.modules():
        if _keeps_float32(module):
            continue
        for tensors in (module._parameters, module._buffers):
            for name, tensor in tensors.items():
                if tensor is not None and tensor.is_floating_point():
                    tensor.data = tensor.data.to(dtype)


def _autocast_forward(forward, dtype):
    """``forward`` under autocast: the float32 inputs (the complex spectrograms' channels, the
    float32 time features) meet bf16 weights as bf16, and the few float32-only ops (the bilinear
    gather of the deformable convolutions) get float32."""
    @functools.wraps(forward)
    def forward_in_low_precision(x, t, *args, **kwargs):
        with torch.autocast(x.device.type, dtype=dtype):
            return forward(x, t, *args, **kwargs)

    return forward_in_low_precision
