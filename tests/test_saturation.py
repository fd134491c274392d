"""The saturation model of onnxruntime's u8 x s8 kernels on x86-64 without VNNI: it agrees with a
brute-force emulation of VPMADDUBSW's arithmetic, it finds no saturating dot product in the default (uint8
weight) export of the README's nets, it counts them per node in the old int8 form, and `verify --onnx`
names the cause. Nothing here depends on the CPU the tests run on: the CPU is simulated."""

import numpy as np
import pytest
import torch

from potq.deploy.saturation import U8S8, MacOperands, avx2_kernel, predict, saturating_dot_products
from tests.test_deploy import graph_of
from tests.test_graph import EXAMPLE

onnx = pytest.importorskip("onnx")


def vpmaddubsw_conv(x: np.ndarray, w: np.ndarray, zp: int, stride: int, pad: int) -> tuple[np.ndarray, ...]:
    """Brute force, loop by loop: the int32 results of an AVX2 u8 x s8 convolution (pairs of products along
    (kernel row, kernel column, input channel) summed into a saturating int16), the exact ones, and where
    some pair saturates."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.full((n, c, h + 2 * pad, wd + 2 * pad), zp, np.int64)
    xp[:, :, pad : pad + h, pad : pad + wd] = x
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    sat, exact = np.zeros((n, o, oh, ow), np.int64), np.zeros((n, o, oh, ow), np.int64)
    clipped = np.zeros((n, o, oh, ow), bool)
    wk = w.transpose(0, 2, 3, 1).reshape(o, -1).astype(np.int64)  # (kh, kw, c), c fastest
    wk = np.pad(wk, ((0, 0), (0, wk.shape[1] % 2)))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            a = patch.transpose(0, 2, 3, 1).reshape(n, -1)
            a = np.pad(a, ((0, 0), (0, a.shape[1] % 2)))
            prods = a[:, None, :] * wk[None]  # (n, o, K)
            pairs = prods[:, :, 0::2] + prods[:, :, 1::2]
            sat[:, :, i, j] = np.clip(pairs, -32768, 32767).sum(-1)
            exact[:, :, i, j] = pairs.sum(-1)
            clipped[:, :, i, j] = ((pairs > 32767) | (pairs < -32768)).any(-1)
    return sat, exact, clipped


@pytest.mark.parametrize("c,k,stride,pad", [(3, 3, 1, 1), (4, 3, 2, 1), (6, 1, 1, 0), (5, 2, 2, 0)])
def test_the_model_agrees_with_a_brute_force_vpmaddubsw(c, k, stride, pad):
    rng = np.random.default_rng(c * 10 + k)
    x = rng.integers(100, 256, (3, c, 7, 7)).astype(np.uint8)  # large codes: many pairs saturate
    w = rng.integers(-128, 128, (8, c, k, k)).astype(np.int8)
    zp = 131
    m = MacOperands("conv", "x", zp, w, (k, k), (stride, stride), (pad, pad), 1)
    sat, exact, clipped = vpmaddubsw_conv(x, w, zp, stride, pad)
    predicted = saturating_dot_products(m, torch.from_numpy(x), U8S8)
    assert predicted == int(clipped.sum()) > 0
    wrong = sat != exact
    assert wrong.any() and not (wrong & ~clipped).any()  # every wrong accumulator is among the predicted


def test_uint8_weights_take_the_int32_pair_kernel_and_depthwise_never_saturates():
    w = np.full((4, 4, 3, 3), 127, np.int8)
    x = torch.full((1, 4, 5, 5), 255, dtype=torch.uint8)
    m = MacOperands("conv", "x", 0, w, (3, 3), (1, 1), (1, 1), 1)
    assert saturating_dot_products(m, x) == 4 * 25  # 255 * 127 * 2 > 32767 in every dot product
    u = MacOperands("conv", "x", 0, (w.astype(np.int16) + 128).astype(np.uint8), (3, 3), (1, 1), (1, 1), 1)
    assert avx2_kernel(u.weight.dtype).hi == 2**31 - 1 and saturating_dot_products(u, x) == 0
    dw = MacOperands("dw", "x", 0, np.full((4, 1, 3, 3), 127, np.int8), (3, 3), (1, 1), (1, 1), 4)
    assert dw.depthwise and saturating_dot_products(dw, x) == 0
    mult = MacOperands("dw2", "x", 0, np.full((8, 1, 3, 3), 127, np.int8), (3, 3), (1, 1), (1, 1), 4)
    assert not mult.depthwise and saturating_dot_products(mult, x) == 8 * 25  # channel multiplier 2: a GEMM


def _predicted(graph, images, weights):
    from potq.deploy.onnx_qdq import to_onnx
    from potq.golden import IntegerModel

    record: dict = {}
    IntegerModel(graph).run(torch.from_numpy(images), record)
    return predict(to_onnx(graph, weights=weights), record)


@pytest.mark.parametrize("scheme", ["pot-channel", "pot-tensor"])
@pytest.mark.parametrize("name", ["seed", "resnet20", "mobilenet-cifar", EXAMPLE])
def test_the_default_export_has_no_saturating_dot_product(name, scheme):
    graph, images = graph_of(name, scheme, "half-even", n=4)
    p = _predicted(graph, images, "uint8")
    assert p and all(v["saturating_dot_products"] == 0 and v["risky_weight_pairs"] == 0 for v in p.values())


def test_the_old_export_saturates_per_node_on_a_crafted_case():
    graph, images = graph_of("seed", "pot-channel", "half-even", n=4)
    first = graph.mac_nodes()[0]
    first.tensors["weight"] = torch.full_like(first.tensors["weight"], 100)  # 2 * 100 * codes > 32767
    images[:] = 255
    p = _predicted(graph, images, "int8")
    per_node = {k: v["saturating_dot_products"] for k, v in p.items() if v["saturating_dot_products"]}
    assert per_node.get(first.name, 0) > 0
    assert p[first.name]["risky_weight_pairs"] > 0
    assert _predicted(graph, images, "uint8")[first.name]["saturating_dot_products"] == 0


def test_verify_names_saturation_as_the_cause(monkeypatch):
    """A simulated AVX2-only CPU: onnxruntime's output of the saturating node made to differ."""
    from potq.deploy import consumers as check

    graph, images = graph_of("seed", "pot-channel", "half-even", n=4)
    first = graph.mac_nodes()[0]
    first.tensors["weight"] = torch.full_like(first.tensors["weight"], 100)
    images[:] = 255
    real_session = check._session

    class WrongCpu:
        def __init__(self, sess):
            self.sess = sess

        def get_outputs(self):
            return self.sess.get_outputs()

        def run(self, names, feeds):
            outs = self.sess.run(names, feeds)
            i = [o.name for o in self.sess.get_outputs()].index(first.output)
            outs[i] = outs[i].copy()
            outs[i].flat[0] ^= 1
            return outs

    def session(graph, threads=0, weights="uint8"):
        sess, model = real_session(graph, threads, weights)
        return WrongCpu(sess), model

    monkeypatch.setattr(check, "_session", session)
    r = check.check_onnx(graph, images, np.zeros(len(images), dtype=np.int64), weights="int8")
    kind = next(k for k in r["mismatch_kinds"] if k["value"] == first.output)
    assert any(c.startswith(f"saturation of int16 pair sums in node {first.name}") for c in kind["causes"])
    assert r["unexplained"] == 0 and r["avx2_saturating_dot_products"][first.name] > 0
    r = check.check_onnx(graph, images, np.zeros(len(images), dtype=np.int64))  # uint8: no saturation
    assert r["unexplained"] > 0 and not r["avx2_saturating_dot_products"]
