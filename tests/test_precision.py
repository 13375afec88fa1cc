"""Reduced-precision inference (echo.util.precision, enhancement.py --precision) and the
deformable convolution in bf16/fp16."""
import json

import pytest
import soundfile as sf
import torch

import enhancement
from conftest import TINY_BACKBONE
from echo.backbones.ncsnpp_utils import deform_conv
from echo.model import ScoreModel
from echo.util.precision import (PrecisionError, canonical_precision, cpu_flags, resolve_precision,
                                 set_inference_precision)


def relative_difference(out, reference):
    return ((out - reference).abs().square().sum() / reference.abs().square().sum()).sqrt().item()


# --------------------------------------------------------------------------------------------
# Choosing the precision
# --------------------------------------------------------------------------------------------

def test_lightning_spellings_are_accepted_and_unknown_ones_refused_in_one_line():
    assert [canonical_precision(n) for n in ("bf16-mixed", "bf16-true", "32-true", "16-mixed", "auto", "BF16")] == \
           ["bf16", "bf16", "32", "16", "auto", "bf16"]
    with pytest.raises(PrecisionError) as err:
        canonical_precision("64-true")
    assert "64-true" in str(err.value) and "\n" not in str(err.value)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16\n\nprocessor\t: 1\n")
    assert {"avx2", "amx_bf16"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "absent") is None


@pytest.mark.parametrize("flags, chosen", [({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16", "amx_tile"}, "bf16"),
                                          ({"avx2", "avx512f", "avx512bw"}, "32")])
def test_auto_takes_bf16_only_where_the_cpu_has_bf16_units(flags, chosen):
    precision, line = resolve_precision("auto", "cpu", flags=flags)
    assert precision == chosen
    assert line.startswith(f"precision: {'bf16' if chosen == 'bf16' else 'fp32'} (auto: ")
    if chosen == "32":
        assert "no bf16 units" in line  # says why it stays fp32


def test_explicit_bf16_without_units_runs_but_says_it_is_slow():
    precision, line = resolve_precision("bf16-mixed", "cpu", flags={"avx2"})
    assert precision == "bf16" and "slow here" in line
    assert resolve_precision("32", "cpu", flags={"avx2"}) == ("32", "precision: fp32")


def test_low_precision_on_mps_is_refused():
    with pytest.raises(PrecisionError, match="CPU or a CUDA GPU"):
        resolve_precision("bf16", torch.device("mps"))


# --------------------------------------------------------------------------------------------
# The deformable convolution in bf16
# --------------------------------------------------------------------------------------------

def deform_case(dtype, seed=0):
    """A 4-channel input on a 256 x 64 map (ECHO's frequency axis), offsets of a few pixels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 256, 64, generator=generator)
    offset = 3 * torch.randn(1, 18, 256, 64, generator=generator)
    mask = torch.rand(1, 9, 256, 64, generator=generator)
    weight = 0.3 * torch.randn(8, 4, 3, 3, generator=generator)
    low = [t.to(dtype) for t in (x, offset, weight, mask)]
    # the reference: the same (rounded) values in float64, so only the arithmetic differs
    reference = deform_conv.deform_conv2d_torch(*(t.double() for t in low[:3]), padding=1, mask=low[3].double())
    return low, reference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_deform_conv_samples_at_float32_positions(dtype, monkeypatch):
    (x, offset, weight, mask), reference = deform_case(dtype)
    out = deform_conv.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert out.dtype == dtype
    # measured: 0.0029 (bf16) and 0.00036 (fp16), under autocast 0.0023 and 0.00029: the
    # rounding of the products and of the output alone
    tolerance = 0.01 if dtype == torch.bfloat16 else 0.002
    assert relative_difference(out.double(), reference) < tolerance
    with torch.autocast("cpu", dtype=dtype):
        autocast_out = deform_conv.deform_conv2d(x.float(), offset, weight.float(), padding=1, mask=mask)
    assert relative_difference(autocast_out.double(), reference) < tolerance
    # positions in the offsets' dtype, as before the fix, were off by up to a pixel in bf16
    # (measured 0.81) and an eighth of one in fp16 (0.060)
    monkeypatch.setattr(deform_conv, "LOW_PRECISION", ())
    wrong = deform_conv.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert relative_difference(wrong.double(), reference) > 10 * tolerance


def test_low_precision_calls_take_the_pure_pytorch_path(monkeypatch):
    calls = []
    monkeypatch.setattr(deform_conv, "_torchvision_deform_conv2d", lambda *a, **k: calls.append(a[0].dtype))
    monkeypatch.setattr(deform_conv, "_backend", deform_conv.TORCHVISION)
    (x, offset, weight, mask), _ = deform_case(torch.bfloat16)
    deform_conv.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert calls == []
    deform_conv.deform_conv2d(x.float(), offset.float(), weight.float(), padding=1, mask=mask.float())
    assert calls == [torch.float32]  # float32 keeps torchvision's kernel


# --------------------------------------------------------------------------------------------
# The network in bf16
# --------------------------------------------------------------------------------------------

def audible_tiny_model(seed=0, **overrides):
    """The tiny network with its zero-initialised output layers scaled up: untrained, it would
    answer ~1e-10, too small for a relative difference to mean anything."""
    torch.manual_seed(seed)
    model = ScoreModel(**dict(TINY_BACKBONE, **overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.any() and param.abs().max() < 1e-3:
                param.mul_(2e4)
    return model


def network_input(seed=1, frames=64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 256, frames, dtype=torch.complex64, generator=generator)
    y = torch.randn(2, 1, 256, frames, dtype=torch.complex64, generator=generator)
    return x, y, torch.tensor([0.9, 0.1])


def test_float32_leaves_the_model_as_it_was():
    model = audible_tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert set_inference_precision(model, "32-true") is model
    assert "forward" not in vars(model.dnn) and not hasattr(model.dnn, "inference_dtype")
    assert all(torch.equal(before[k], v) and v.dtype == before[k].dtype for k, v in model.state_dict().items())


@pytest.mark.parametrize("deform", [True, False])
@pytest.mark.parametrize("precision, dtype, tolerance", [("bf16", torch.bfloat16, 0.03), ("16", torch.float16, 0.005)])
def test_network_in_low_precision_stays_close_to_float32(precision, dtype, tolerance, deform):
    reference_model = audible_tiny_model(deform=deform)
    model = set_inference_precision(audible_tiny_model(deform=deform), precision)
    weights = {name: p.dtype for name, p in model.dnn.named_parameters()}
    assert weights.pop("time_embed.W") == torch.float32  # the Fourier frequencies stay fp32
    assert set(weights.values()) == {dtype}
    x, y, t = network_input()
    with torch.inference_mode():
        reference, out = reference_model(x, y, t), model(x, y, t)
    assert out.dtype == torch.complex64 and out.shape == reference.shape
    # measured relative differences: bf16 0.014 (deform) / 0.010 (plain convs), fp16 0.0017 /
    # 0.0013; a short-trained checkpoint gave bf16 0.0069-0.0088 on real speech
    assert relative_difference(out, reference) < tolerance


def test_converting_twice_changes_nothing_more():
    model = set_inference_precision(audible_tiny_model(), "bf16")
    forward = model.dnn.forward
    assert set_inference_precision(model, "bf16-true").dnn.forward is forward
    with pytest.raises(PrecisionError, match="already runs in torch.bfloat16"):
        set_inference_precision(model, "16")


# --------------------------------------------------------------------------------------------
# enhancement.py --precision
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noisy")
    generator = torch.Generator().manual_seed(0)
    sf.write(folder / "a.wav", (0.1 * torch.randn(6000, generator=generator)).numpy(), 16000)
    return folder


@pytest.mark.parametrize("flag, first_line, recorded", [
    ([], "precision: fp32", "32"),
    (["--precision", "bf16-mixed"], "precision: bf16", "bf16"),
    (["--precision", "16"], "precision: fp16", "16"),
])
def test_cli_says_which_precision_first_and_records_it(flag, first_line, recorded, noisy_folder, tiny_ckpt,
                                                       tmp_path, capsys):
    out = tmp_path / "enhanced"
    code = enhancement.main(["--test_dir", str(noisy_folder), "--enhanced_dir", str(out), "--ckpt", str(tiny_ckpt),
                             "--N", "1", *flag])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"model: {tiny_ckpt}") and lines[1].startswith(first_line)
    info = json.loads((out / "run_info.json").read_text())
    assert info["precision"] == recorded and info["args"]["precision"] == (flag[1] if flag else "32")
    audio, sr = sf.read(out / "a.wav")
    assert sr == 16000 and len(audio) == 6000


def test_cli_auto_names_its_reason(noisy_folder, tiny_ckpt, tmp_path, capsys):
    code = enhancement.main(["--test_dir", str(noisy_folder), "--enhanced_dir", str(tmp_path / "e"),
                             "--ckpt", str(tiny_ckpt), "--N", "1", "--precision", "auto"])
    assert code == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith(("precision: bf16 (auto: ", "precision: fp32 (auto: ")) and "bf16" in line


def test_cli_refuses_an_unknown_precision(noisy_folder, tiny_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        enhancement.main(["--test_dir", str(noisy_folder), "--ckpt", str(tiny_ckpt), "--precision", "64"])
    assert stop.value.code == 2 and "--precision" in capsys.readouterr().err
