"""Timings of the PyTorch path of upfirdn2d on the shapes of the paper-size NCSN++ forward pass.

Compares three ways of doing the FIR resampling of up_or_down_sampling.py:
  folded     the reference approach: channels folded into the batch, a one-channel convolution of
             the zero-inserted signal at full resolution, then every down-th sample kept;
  depthwise  what echo uses: strided depthwise conv2d (down) / conv_transpose2d (up);
  separable  two 1-D depthwise passes (the [1,3,3,1] kernel is an outer product).

Usage: python benchmarks/bench_ops.py [--repeats 5] [--runs 5] [--threads N]
Timings are the best of ``repeats`` rounds of ``runs`` calls, methods interleaved per round so
that a busy machine penalises them alike. Forward only, float32, CPU.
"""
import argparse
import time

import torch
import torch.nn.functional as F

from echo.backbones.ncsnpp_utils.op.upfirdn2d import upfirdn2d_native

FIR = (1.0, 3.0, 3.0, 1.0)

# (label, shape, direction, calls per forward) for a [1, 4, 256, 256] input of the paper config:
# nf 128, ch_mult (1,1,2,2,2,2,2), BigGAN blocks resampling h and the skip x, input_skip pyramid of
# 4 channels, output_skip pyramid upsampled at each level.
NETWORK_CALLS = [
    ("res block down", (1, 128, 256, 256), "down", 2),
    ("res block down", (1, 128, 128, 128), "down", 2),
    ("res block down", (1, 256, 64, 64), "down", 2),
    ("res block down", (1, 256, 32, 32), "down", 2),
    ("res block down", (1, 256, 16, 16), "down", 2),
    ("res block down", (1, 256, 8, 8), "down", 2),
    ("input pyramid", (1, 4, 256, 256), "down", 1),
    ("input pyramid", (1, 4, 128, 128), "down", 1),
    ("input pyramid", (1, 4, 64, 64), "down", 1),
    ("input pyramid", (1, 4, 32, 32), "down", 1),
    ("input pyramid", (1, 4, 16, 16), "down", 1),
    ("input pyramid", (1, 4, 8, 8), "down", 1),
    ("res block up", (1, 256, 4, 4), "up", 2),
    ("res block up", (1, 256, 8, 8), "up", 2),
    ("res block up", (1, 256, 16, 16), "up", 2),
    ("res block up", (1, 256, 32, 32), "up", 2),
    ("res block up", (1, 256, 64, 64), "up", 2),
    ("res block up", (1, 128, 128, 128), "up", 2),
    ("output pyramid", (1, 4, 8, 8), "up", 1),
    ("output pyramid", (1, 4, 16, 16), "up", 1),
    ("output pyramid", (1, 4, 32, 32), "up", 1),
    ("output pyramid", (1, 4, 64, 64), "up", 1),
    ("output pyramid", (1, 4, 128, 128), "up", 1),
]

# Resampling parameters of upsample_2d / downsample_2d for the 4-tap kernel.
SETTINGS = {"up": dict(up=2, down=1, pad=(2, 1), scale=4.0), "down": dict(up=1, down=2, pad=(1, 1), scale=1.0)}


def fir_kernel_2d(scale):
    taps = torch.tensor(FIR)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum() * scale


def folded_batch(x, kernel, up, down, pad):
    n, c, h, w = x.shape
    p0, p1 = pad
    planes = x.reshape(n * c, 1, h, 1, w, 1)
    zero_inserted = F.pad(planes, [0, up - 1, 0, 0, 0, up - 1]).reshape(n * c, 1, h * up, w * up)
    padded = F.pad(zero_inserted, [p0, p1, p0, p1])
    filtered = F.conv2d(padded, kernel.flip(0, 1)[None, None])
    return filtered[:, :, ::down, ::down].reshape(n, c, filtered[:, :, ::down, ::down].shape[2], -1)


def depthwise(x, kernel, up, down, pad):
    return upfirdn2d_native(x, kernel, up, down, pad)


def separable(x, kernel, up, down, pad):
    taps = kernel[0] / kernel[0].sum() * kernel.sum().sqrt()  # 1-D factor: outer(taps, taps) == kernel
    channels = x.shape[1]
    rows = taps.flip(0)[None, None, None].repeat(channels, 1, 1, 1)  # [C, 1, 1, K]
    cols = rows.transpose(2, 3).contiguous()  # [C, 1, K, 1]
    if up == 1:
        # Pads (p, p): the convolutions pad themselves.
        y = F.conv2d(x, rows, stride=(1, down), padding=(0, pad[0]), groups=channels)
        return F.conv2d(y, cols, stride=(down, 1), padding=(pad[0], 0), groups=channels)
    # up: conv_transpose with the unflipped taps, cropping kh - 1 - p0 = 1 on both ends.
    crop = len(taps) - 1 - pad[0]
    y = F.conv_transpose2d(x, rows.flip(3), stride=(1, up), padding=(0, crop), groups=channels)
    return F.conv_transpose2d(y, cols.flip(2), stride=(up, 1), padding=(crop, 0), groups=channels)


METHODS = {"folded": folded_batch, "depthwise": depthwise, "separable": separable}


def best_time_ms(fn, repeats, runs):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        best = min(best, (time.perf_counter() - start) / runs)
    return best * 1e3


def time_case(shape, direction, repeats, runs):
    setting = SETTINGS[direction]
    kernel = fir_kernel_2d(setting["scale"])
    x = torch.randn(shape)
    args = (kernel, setting["up"], setting["down"], setting["pad"])
    expected = depthwise(x, *args)
    timings = {name: float("inf") for name in METHODS}
    for name, method in METHODS.items():
        torch.testing.assert_close(method(x, *args), expected, atol=1e-5, rtol=1e-5)
    for _ in range(repeats):  # interleaved rounds
        for name, method in METHODS.items():
            timings[name] = min(timings[name], best_time_ms(lambda: method(x, *args), 1, runs))
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}x{args.runs} runs, ms")
    header = f"{'call':<16}{'shape':<20}{'op':<6}{'n':>3}" + "".join(f"{name:>12}" for name in METHODS)
    print(header)
    totals = dict.fromkeys(METHODS, 0.0)
    for label, shape, direction, count in NETWORK_CALLS:
        timings = time_case(shape, direction, args.repeats, args.runs)
        row = f"{label:<16}{str(list(shape)):<20}{direction:<6}{count:>3}"
        print(row + "".join(f"{timings[name]:>12.2f}" for name in METHODS), flush=True)
        for name in METHODS:
            totals[name] += count * timings[name]
    print(f"{'per forward pass':<45}" + "".join(f"{totals[name]:>12.1f}" for name in METHODS))
    print(f"speed-up of depthwise over folded: {totals['folded'] / totals['depthwise']:.1f}x")


if __name__ == "__main__":
    main()
