"""Parts bf16 (the forward pass in bf16 against fp32) and bf16q (the quality of bf16 enhancement
against fp32 with a trained checkpoint on real files).

Both use echo.util.precision, the code path of ``enhancement.py --precision bf16``: bf16
weights and activations in the network, the sampler, the STFT and the output in fp32.
"""
import statistics

import numpy as np
import torch

from .common import (FWD_FRAMES, VBDMD_TEST, CeilingConv, backbone_input, checkpoint_model, paper_model,
                     read_mono, timed)

# the quality the issue asks bf16 to keep, on average over the files (bf16 minus fp32)
QUALITY_BOUNDS = {"pesq": 0.02, "si_sdr_db": 0.2}
QUALITY_FILES = 8
# --quick: the few-step sampler instead of the checkpoint's own (20 network evaluations for ECHO)
QUICK_SAMPLER = {"predictor": "ddim", "N": 5}


# --------------------------------------------------------------------------------------------
# Part: bf16 forward pass
# --------------------------------------------------------------------------------------------

def relative_difference(out, reference):
    return ((out - reference).abs().square().sum() / reference.abs().square().sum()).sqrt().item()


def forward_fp32_vs_bf16(build, frames, device, rounds):
    """Rounds of (fp32 forward, bf16 forward) on the same input, after a warm-up of each:
    {fp32_s, bf16_s (medians), rounds, max_abs_diff, relative_diff, output_max_abs}."""
    from echo.util.precision import set_inference_precision

    fp32, bf16 = build().dnn, set_inference_precision(build(), "bf16").dnn
    x, t = backbone_input(device, frames)
    walls = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        reference, out = fp32(x, t), bf16(x, t)  # warm-up: oneDNN primitives, allocator
        for _ in range(rounds):
            for name, net in (("fp32", fp32), ("bf16", bf16)):
                walls[name].append(timed(lambda: net(x, t), device)[0])
    return {"fp32_s": statistics.median(walls["fp32"]), "bf16_s": statistics.median(walls["bf16"]),
            "rounds": {k: [round(w, 3) for w in v] for k, v in walls.items()},
            "max_abs_diff": (out - reference).abs().max().item(),
            "relative_diff": relative_difference(out, reference), "output_max_abs": reference.abs().max().item()}


def bench_bf16(device, quick, forward_probe=False, ckpt=None):
    """Where the device has bf16 units: the paper-size forward at T=256 in fp32 and bf16, rounds
    interleaved, and the same for ``ckpt``'s model. Elsewhere null with the reason, and a cheap
    probe under bf16_probe (the ceiling conv in bf16; ``forward_probe`` adds a 64-frame forward,
    minutes on such CPUs: measured 41 s bf16 vs 4.8 s fp32 on a 2-core AVX2 machine, 1 thread)."""
    from echo.util.precision import bf16_units

    has_units, reason = bf16_units(device)
    rounds = 2 if quick else 3
    if has_units:
        paper = forward_fp32_vs_bf16(lambda: paper_model(device).eval(), FWD_FRAMES, device, rounds)
        results = {"fwd_s_bf16": round(paper["bf16_s"], 3), "bf16_max_abs_diff": paper["max_abs_diff"],
                   "bf16_fwd_speedup": round(paper["fp32_s"] / paper["bf16_s"], 2),
                   "notes": {"bf16_max_abs_diff": "random weights, output near zero: not a quality measure "
                                                  "(bf16q is)"},
                   "details": {"bf16": {"why": reason, "frames": FWD_FRAMES, "paper": paper}}}
        if ckpt:
            trained = forward_fp32_vs_bf16(lambda: checkpoint_model(ckpt, device), FWD_FRAMES, device, rounds)
            results.update(ckpt_fwd_s=round(trained["fp32_s"], 4), ckpt_fwd_s_bf16=round(trained["bf16_s"], 4),
                           ckpt_bf16_fwd_speedup=round(trained["fp32_s"] / trained["bf16_s"], 2))
            results["details"]["bf16"].update(ckpt=str(ckpt), trained=trained)
        else:
            results["notes"].update({key: "no checkpoint given (--ckpt PATH measures a trained model)"
                                     for key in ("ckpt_fwd_s", "ckpt_fwd_s_bf16", "ckpt_bf16_fwd_speedup")})
        return results

    fp32 = CeilingConv(device, formats=("channels_last",)).gflops(repeats=2)
    bf16 = CeilingConv(device, torch.bfloat16, formats=("channels_last",)).gflops(repeats=1)
    probe = {"conv_gflops_fp32": round(fp32, 1), "conv_gflops_bf16": round(bf16, 1)}
    if forward_probe:
        measured = forward_fp32_vs_bf16(lambda: paper_model(device).eval(), 64, device, rounds=1)
        probe.update(frames=64, fwd_s_fp32=round(measured["fp32_s"], 3), fwd_s_bf16=round(measured["bf16_s"], 3),
                     max_abs_diff=measured["max_abs_diff"], relative_diff=measured["relative_diff"])
    note = (f"not measured: {reason}; the 3x3 conv runs at {probe['conv_gflops_bf16']} GFLOP/s in bf16 vs "
            f"{probe['conv_gflops_fp32']} in fp32 here (bf16_probe; --bf16-forward-probe adds a 64-frame forward)")
    keys = ("fwd_s_bf16", "bf16_max_abs_diff", "bf16_fwd_speedup", "ckpt_fwd_s", "ckpt_fwd_s_bf16",
            "ckpt_bf16_fwd_speedup")
    return {**{key: None for key in keys}, "notes": {key: note for key in keys},
            "details": {"bf16_probe": probe}}


# --------------------------------------------------------------------------------------------
# Part: bf16 quality with a trained checkpoint
# --------------------------------------------------------------------------------------------

QUALITY_KEYS = ("bf16_pesq_diff", "bf16_sisdr_diff_db", "bf16_pesq_max_abs_diff", "bf16_sisdr_max_abs_diff_db")


def quality_files(count):
    """Names of the first ``count`` VB-DMD test files that have a clean reference."""
    clean, noisy = VBDMD_TEST / "clean", VBDMD_TEST / "noisy"
    if not (clean.is_dir() and noisy.is_dir()):
        return []
    return sorted(p.name for p in noisy.glob("*.wav") if (clean / p.name).exists())[:count]


def bench_bf16_quality(device, quick, ckpt=None, count=QUALITY_FILES):
    """Enhance ``count`` VB-DMD test files with ``ckpt`` in fp32 and in bf16 (same seeds, so the
    sampler draws the same noise) and compare wide-band PESQ and SI-SDR. Valid on any CPU: the
    bf16 rounding is the same with or without bf16 units, only slower without them."""
    from echo.enhance import enhance_audio
    from echo.util.metrics import pesq_wb, si_sdr
    from echo.util.precision import set_inference_precision
    from echo.util.seeding import derive_seed

    names = quality_files(count)
    reason = ("needs a trained checkpoint: --ckpt PATH" if not ckpt else
              None if names else f"needs the VB-DMD test files in {VBDMD_TEST}")
    if reason:
        return {**{key: None for key in QUALITY_KEYS}, "notes": {key: reason for key in QUALITY_KEYS}}
    sampler_kwargs = dict(QUICK_SAMPLER) if quick else {}
    models = {"fp32": checkpoint_model(ckpt, device),
              "bf16": set_inference_precision(checkpoint_model(ckpt, device), "bf16")}
    rows, seconds = [], {"fp32": 0.0, "bf16": 0.0}
    for name in names:
        noisy, sr = read_mono(VBDMD_TEST / "noisy" / name)
        clean, _ = read_mono(VBDMD_TEST / "clean" / name)
        row = {"file": name}
        for precision, model in models.items():
            generator = torch.Generator(device=device).manual_seed(derive_seed(0, name))
            wall, _, enhanced = timed(lambda: enhance_audio(model, noisy, sr, sampler_kwargs, generator), device)
            seconds[precision] += wall
            row[precision] = {"pesq": round(pesq_wb(clean, enhanced, sr), 4),
                              "si_sdr_db": round(si_sdr(clean, enhanced), 3)}
        rows.append(row)
    diffs = {metric: np.array([r["bf16"][metric] - r["fp32"][metric] for r in rows])
             for metric in ("pesq", "si_sdr_db")}
    means = {p: {m: round(float(np.mean([r[p][m] for r in rows])), 4) for m in ("pesq", "si_sdr_db")}
             for p in models}
    return {"bf16_pesq_diff": round(float(diffs["pesq"].mean()), 4),
            "bf16_sisdr_diff_db": round(float(diffs["si_sdr_db"].mean()), 3),
            "bf16_pesq_max_abs_diff": round(float(np.abs(diffs["pesq"]).max()), 4),
            "bf16_sisdr_max_abs_diff_db": round(float(np.abs(diffs["si_sdr_db"]).max()), 3),
            "details": {"bf16q": {"ckpt": str(ckpt), "files": len(rows), "sampler": sampler_kwargs or "checkpoint's",
                                  "means": means, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                                  "bounds": QUALITY_BOUNDS, "rows": rows}}}
