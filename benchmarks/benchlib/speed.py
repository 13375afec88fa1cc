"""Parts fwd (conv ceiling and the paper-size forward pass), train (one training step) and enh
(enhancement real-time factor, in fp32 and, where bf16 units exist, in bf16)."""
import json
import statistics
import subprocess
import sys

import torch

from echo.util import allocator

from .common import (BENCH_SCRIPT, FWD_FRAMES, CeilingConv, backbone_input, checkpoint_model,
                     count_forward_flops, paper_backbone, paper_model, pick_enhancement_file, timed)


# --------------------------------------------------------------------------------------------
# Part: conv ceiling and forward pass
# --------------------------------------------------------------------------------------------

def bench_forward(device, quick):
    """Rounds of ceiling, forward, ceiling: each forward is compared with the ceiling measured
    just before and after it, so that a change of machine load between rounds cancels out."""
    rounds = 2 if quick else 4
    net = paper_backbone(device)
    x, t = backbone_input(device, FWD_FRAMES)
    flops = count_forward_flops(net, x, t)
    ceiling = CeilingConv(device)
    with torch.inference_mode():
        net(x, t)  # warm-up: oneDNN primitives, allocator
        memory_format = "channels_last" if net.uses_channels_last(x.real) else "contiguous"
    ceiling_by_format = {k: round(v[0], 1) for k, v in ceiling.rates().items()}
    samples = [ceiling.best()]
    walls, cpus = [], []
    for _ in range(rounds):
        with torch.inference_mode():
            wall, cpu, _ = timed(lambda: net(x, t), device)
        walls.append(wall)
        cpus.append(cpu)
        samples.append(ceiling.best())
    around = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(samples, samples[1:])]
    fractions = [flops / w / 1e9 / c[0] for w, c in zip(walls, around)]
    cpu_fractions = [flops / w / 1e9 / c[1] for w, c in zip(cpus, around)]
    return {
        "ceiling_conv_gflops": round(statistics.median(s[0] for s in samples), 1),
        "fwd_gflop": round(flops / 1e9, 1),
        "fwd_s": round(statistics.median(walls), 3),
        "fwd_fraction_of_conv_ceiling": round(statistics.median(fractions), 3),
        "details": {"fwd": {
            "frames": FWD_FRAMES,
            "activation_memory_format": memory_format,
            "fwd_gflops": round(flops / statistics.median(walls) / 1e9, 1),
            "fwd_s_rounds": [round(w, 3) for w in walls],
            "fwd_cpu_s_rounds": [round(c, 3) for c in cpus],
            "ceiling_gflops_samples": [round(s[0], 1) for s in samples],
            "ceiling_gflops_by_format_at_start": ceiling_by_format,
            "fraction_rounds": [round(f, 3) for f in fractions],
            # the same ratio from process CPU time: insensitive to time slicing by other jobs
            "fraction_cpu_time_rounds": [round(f, 3) for f in cpu_fractions],
        }},
    }


# --------------------------------------------------------------------------------------------
# Part: training step
# --------------------------------------------------------------------------------------------

def ema_averaged_model(model):
    """The weight average of echo.ema.EMA, updated the way its Lightning callback does."""
    from torch.optim.swa_utils import AveragedModel
    from echo.ema import EMA

    callback = EMA(decay=model.hparams.get("ema_decay", 0.999))
    return AveragedModel(model, multi_avg_fn=callback._kwargs["multi_avg_fn"], use_buffers=False)


def training_batch(device, frames):
    generator = torch.Generator().manual_seed(1)
    clean = 0.3 * torch.randn(1, 1, 256, frames, dtype=torch.complex64, generator=generator)
    noise = 0.3 * torch.randn(1, 1, 256, frames, dtype=torch.complex64, generator=generator)
    return clean.to(device), (clean + noise).to(device)


def train_step_fn(model, optimizer, averaged, batch, autocast_dtype=None):
    """One training step with the EMA update, as train.py takes it (optionally under autocast)."""
    def step():
        with torch.autocast(batch[0].device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model._step(batch, training=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        averaged.update_parameters(model)
        return loss

    return step


def bench_train(device, quick):
    model = paper_model(device).train()
    optimizer = model.configure_optimizers()
    averaged = ema_averaged_model(model)
    batch = training_batch(device, int(model.hparams.get("num_frames", FWD_FRAMES)))

    step = train_step_fn(model, optimizer, averaged, batch)
    timed(step, device)  # warm-up: Adam's state, oneDNN primitives
    walls = [timed(step, device)[0] for _ in range(1 if quick else 2)]
    return {"train_step_s": round(statistics.median(walls), 3),
            "details": {"train": {"step_s_runs": [round(w, 3) for w in walls], "batch": 1,
                                  "frames": batch[0].shape[-1], "optimizer": type(optimizer).__name__,
                                  "allocator": allocator.describe()}}}


def bench_train_in_child(device, args, threads):
    """bench_train in a fresh process, which re-execs itself under train.py's allocator
    settings (see bench.py's choose_allocator); its result comes back as the last line of its output."""
    cmd = [sys.executable, str(BENCH_SCRIPT), "--train-child", "--device", device.type,
           "--threads", str(threads), "--allocator", args.allocator]
    if args.jemalloc_lib:
        cmd += ["--jemalloc-lib", args.jemalloc_lib]
    if args.quick:
        cmd.append("--quick")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training step failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Part: enhancement speed
# --------------------------------------------------------------------------------------------

def enhancement_run(model, audio, sr, device, sampler_kwargs):
    """(real-time factor, details) of enhancing ``audio`` once."""
    from echo.enhance import enhance_audio

    stats = {}
    wall, _, _ = timed(lambda: enhance_audio(model, audio, sr, sampler_kwargs, stats=stats), device)
    return wall / (len(audio) / sr), {"wall_s": round(wall, 2), "nfe": stats.get("nfe")}


def bench_enhancement(device, quick, steps=None, ckpt=None):
    """enh_rtf: the paper-size model (random weights) in fp32; where the device has bf16 units
    also in bf16 (enh_rtf_bf16) and the ratio; with ``ckpt`` the same for that model."""
    from echo.sampling import sampler_defaults
    from echo.util.precision import bf16_units, set_inference_precision

    audio, sr, name = pick_enhancement_file()
    sampler_kwargs = {"N": steps} if steps else {}
    has_units, reason = bf16_units(device)
    results, notes, runs = {}, {}, {}
    models = {"": lambda: paper_model(device).eval()}
    if ckpt:
        models["ckpt_"] = lambda: checkpoint_model(ckpt, device)
    built = {}
    for prefix, build in models.items():
        model = built[prefix] = build()
        rtf, runs[f"{prefix}fp32"] = enhancement_run(model, audio, sr, device, sampler_kwargs)
        results[f"{prefix}enh_rtf"] = round(rtf, 3)
        if has_units:
            rtf_bf16, runs[f"{prefix}bf16"] = enhancement_run(set_inference_precision(build(), "bf16"), audio, sr,
                                                              device, sampler_kwargs)
            results[f"{prefix}enh_rtf_bf16"] = round(rtf_bf16, 3)
            results[f"{prefix}bf16_enh_speedup"] = round(rtf / rtf_bf16, 2)
        else:
            for key in (f"{prefix}enh_rtf_bf16", f"{prefix}bf16_enh_speedup"):
                results[key] = None
                notes[key] = f"not measured: {reason}"
    if not ckpt:
        for key in ("ckpt_enh_rtf", "ckpt_enh_rtf_bf16", "ckpt_bf16_enh_speedup"):
            notes[key] = "no checkpoint given (--ckpt PATH measures a trained model)"
    model = built[""]
    frames = model.spectrogram.frames_for_samples(len(audio))
    seconds = len(audio) / sr
    return {**results, "notes": notes,
            "details": {"enh": {"file": name, "audio_s": round(seconds, 3), "wall_s": runs["fp32"]["wall_s"],
                                "frames": frames,
                                "padded_frames": -(-frames // model.frames_multiple) * model.frames_multiple,
                                "N": steps or sampler_defaults(model.sde)["N"], "nfe": runs["fp32"]["nfe"],
                                "runs": runs, "ckpt": str(ckpt) if ckpt else None}}}


# --------------------------------------------------------------------------------------------
# Part: bf16-mixed training against fp32 (train.py --precision bf16-mixed)
# --------------------------------------------------------------------------------------------

# the shipped CPU model's network and batch (echo/recipes/cpu_small.py MODEL_FLAGS)
SHIPPED_SIZE = dict(nf=32, ch_mult=[1, 2, 2, 2, 2], num_res_blocks=2, attn_resolutions=[])


def bench_train_bf16(device, quick):
    """Seconds per training step in fp32 and under bf16 autocast (what Lightning's bf16-mixed
    does), interleaved round by round so that a change of machine load hits both alike, for the
    shipped model's size (batch 4, 64 frames) and the paper's (batch 1, 256 frames).

    Without bf16 units a bf16 step is emulated through float32 and takes minutes (measured on a
    2-core AMD EPYC without AVX512: 205 s against 4.5 s in fp32 at the shipped size), so there
    only the shipped size is timed, at batch 1 and one round, and the paper size is left out."""
    from echo.model import ScoreModel
    from echo.util.precision import bf16_units

    has_units, reason = bf16_units(device)
    sizes = {"shipped": (SHIPPED_SIZE, 4, 64), "paper": ({}, 1, 256)}
    notes = {}
    if not has_units:
        sizes = {"shipped": (SHIPPED_SIZE, 1, 64)}
        notes = {key: f"not measured: {reason}" for key in
                 ("paper_train_step_s", "paper_train_step_s_bf16", "paper_bf16_train_speedup")}
    results, details = {}, {}
    rounds = 1 if quick or not has_units else 4
    for name, (backbone, batch_size, frames) in sizes.items():
        walls = {"fp32": [], "bf16": []}
        steps = {}
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            torch.manual_seed(0)
            model = ScoreModel(**backbone).to(device).train()
            optimizer = model.configure_optimizers()
            clean, noisy = training_batch(device, frames)
            batch = (clean.repeat(batch_size, 1, 1, 1), noisy.repeat(batch_size, 1, 1, 1))
            steps[precision] = train_step_fn(model, optimizer, ema_averaged_model(model), batch, dtype)
            timed(steps[precision], device)  # warm-up
        for _ in range(rounds):
            for precision in ("fp32", "bf16"):
                walls[precision].append(timed(steps[precision], device)[0])
        fp32_s, bf16_s = statistics.median(walls["fp32"]), statistics.median(walls["bf16"])
        results[f"{name}_train_step_s"] = round(fp32_s, 3)
        results[f"{name}_train_step_s_bf16"] = round(bf16_s, 3)
        results[f"{name}_bf16_train_speedup"] = round(fp32_s / bf16_s, 2)
        details[f"bf16train_{name}"] = {"batch": batch_size, "frames": frames, "rounds": rounds,
                                        "fp32_s": [round(w, 3) for w in walls["fp32"]],
                                        "bf16_s": [round(w, 3) for w in walls["bf16"]]}
    return dict(results, details=details, notes=notes)
