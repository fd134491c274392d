"""The kernel-level facts behind the golden model's and verify's design, each measured in one process.

- max pooling on channels-last against NCHW tensors (why evaluation runs channels-last);
- numpy's equality test against torch.equal on float32 codes (what verify compares with);
- oneDNN's uint8 x int8 convolution (torch.ops.onednn, on CPUs with VNNI/AMX) against the float32 one,
  and how many of N random legal convolution shapes it gets wrong, with input zero point 0 and 128,
  against float64: why the golden model does not use it despite its speed.

    python benchmarks/kernels.py --shapes 300
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from torch.nn import functional as F

from potq.allocator import retain_freed_memory


def best_ms(fn, repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def int8_available() -> bool:
    try:
        return bool(torch.cpu._is_vnni_supported()) and hasattr(torch.ops.onednn, "qconv2d_pointwise")
    except (AttributeError, RuntimeError):
        return False


def onednn_conv(codes, w, scale, bias, stride, padding, groups, zp: int = 0) -> torch.Tensor:
    """sum((codes - zp) * w) * scale + bias per output channel, in float32, by oneDNN's int8 convolution."""
    args = (stride, padding, [1, 1], groups)
    packed = torch.ops.onednn.qconv_prepack(w.to(torch.int8), scale, 1.0, zp, *args, None)
    zeros = torch.zeros(len(scale), dtype=torch.int64)
    x = codes.to(torch.uint8).contiguous(memory_format=torch.channels_last)
    return torch.ops.onednn.qconv2d_pointwise(
        x, 1.0, zp, packed, scale, zeros, bias, *args, 1.0, 0, torch.float32, "none", [], ""
    )


def sweep(shapes: int, zp: int) -> int:
    """How many of `shapes` random convolutions oneDNN gets wrong with input zero point zp."""
    rng = random.Random(0)
    torch.manual_seed(0)
    wrong = 0
    for _ in range(shapes):
        c, groups = rng.choice([8, 16, 32, 48, 64]), rng.choice([1, 1, 2, 4, 8, "depthwise"])
        groups = c if groups == "depthwise" else groups
        out = c * rng.choice([1, 2]) if groups == c else groups * rng.choice([1, 2, 4, 8])
        k = (rng.choice([1, 3, 5, 7]), rng.choice([1, 3, 5, 7]))
        stride, pad = [rng.choice([1, 2]), rng.choice([1, 2])], [rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2)]
        h, w_ = rng.choice([7, 8, 15, 16, 32]), rng.choice([7, 8, 15, 16, 32])
        codes = torch.randint(0, 256, (rng.choice([1, 3, 8]), c, h, w_))
        w = torch.randint(-127, 128, (out, c // groups, *k))
        scale = torch.exp2(-torch.randint(0, 12, (out,)).double())
        bias = (torch.randint(-5000, 5000, (out,)).double() * scale).float()
        got = onednn_conv(codes, w, scale, bias, stride, pad, groups, zp)
        want = F.conv2d(codes.double() - zp, w.double(), None, stride, pad, 1, groups)  # zero padding: real 0
        wrong += not torch.equal(got.double(), want * scale.view(1, -1, 1, 1) + bias.double().view(1, -1, 1, 1))
    return wrong


def main() -> None:
    retain_freed_memory()  # as the potq command does (potq.allocator)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", type=int, default=300, help="random convolution shapes in the zero-point sweep")
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}, oneDNN int8 convolutions with VNNI/AMX here: {int8_available()}")
    if int8_available():
        codes = torch.randint(0, 256, (500, 32, 16, 16)).contiguous(memory_format=torch.channels_last)
        w = torch.randint(-127, 128, (64, 32, 3, 3))
        scale, bias = torch.full((64,), 2.0**-8, dtype=torch.float64), torch.zeros(64)
        t_int8 = best_ms(lambda: onednn_conv(codes, w, scale, bias, [1, 1], [1, 1], 1))
        xf, wf = codes.float(), w.float()
        t_f32 = best_ms(lambda: F.conv2d(xf, wf, bias, 1, 1))
        print(
            f"conv 32->64, 3x3, 16x16, batch 500: int8 {t_int8:.1f} ms, float32 {t_f32:.1f} ms: {t_f32 / t_int8:.1f}x"
        )
    x = torch.randint(0, 256, (500, 32, 32, 32)).float()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t_nchw, t_nhwc = best_ms(lambda: F.max_pool2d(x, 2, 2)), best_ms(lambda: F.max_pool2d(x_cl, 2, 2))
    print(f"max pool 2x2 of 500x32x32x32: NCHW {t_nchw:.1f} ms, channels-last {t_nhwc:.1f} ms: {t_nchw / t_nhwc:.1f}x")
    y = x_cl.clone()
    t_torch = best_ms(lambda: torch.equal(x_cl, y))
    t_numpy = best_ms(lambda: np.array_equal(x_cl.numpy(), y.numpy()))
    print(
        f"equality of two 64 MB float32 tensors: torch.equal {t_torch:.1f} ms, numpy {t_numpy:.1f} ms: "
        f"{t_torch / t_numpy:.1f}x"
    )
    if int8_available():
        for zp in (0, 128):
            print(f"oneDNN int8 convolution, input zero point {zp}: {sweep(a.shapes, zp)} of {a.shapes} shapes wrong")


if __name__ == "__main__":
    main()
