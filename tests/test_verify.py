"""verify's fast paths against the plain ones: the simulated model's codes handed to `check` before scaling,
and the GEMMs the simulated model takes from the golden model where verify proves them the same numbers."""

from types import SimpleNamespace

import pytest
import torch

from potq import golden as golden_mod
from potq.ir.graph import OpType
from potq.ir.tensor import normalize
from potq.jobs import verify
from potq.quant.simulate import simulated
from tests.test_golden import MEAN, STD, quantized

CFG = SimpleNamespace(mean=MEAN, std=STD)
TIMES = {"golden_seconds", "simulated_seconds", "compare_seconds", "shared_gemms", "shared_gemm_nodes"}


def both_ways(graph, images, batch=20):
    """compare_models with and without shared GEMMs, and the record without the timings."""
    labels = torch.zeros(len(images), dtype=torch.int64)
    shared = verify.compare_models(graph, CFG, images, labels, batch, share_gemms=True)
    own = verify.compare_models(graph, CFG, images, labels, batch, share_gemms=False)
    assert own["shared_gemms"] == 0
    a, b = ({k: v for k, v in r.items() if k not in TIMES} for r in (shared, own))
    return shared, own, a, b


@pytest.mark.parametrize("rounding", ["half-up", "half-even", "floor"])
@pytest.mark.parametrize("model", ["tiny", "resnet20", "mobilenet-cifar"])
@pytest.mark.parametrize("scheme", ["pot-channel", "pot-seed"])
def test_shared_gemms_give_the_same_record(model, rounding, scheme):
    graph, images = quantized(scheme, rounding, model=model)
    shared, own, a, b = both_ways(graph, images)
    assert a == b and a["mismatches"] == 0 and a["compared_values"] > 0
    assert shared["shared_gemms"] > 0  # the fast path ran (a proof that refuses everything fails here)


def test_check_gets_every_value_once_as_the_record_has_it():
    graph, images = quantized("pot-channel", "half-up", model="resnet20")
    sim, x = simulated(graph), normalize(images, MEAN, STD)
    record, checked = {}, {}

    def check(v, codes):
        assert v not in checked
        checked[v] = codes.clone()  # the simulated model may overwrite it after check returns

    sim(x, record)
    sim(x, check=check)
    assert checked.keys() == record.keys()
    for v in record:
        assert torch.equal(checked[v].double(), record[v].double()), v


def test_a_wrong_simulated_weight_is_not_shared_and_is_found(monkeypatch):
    graph, images = quantized("pot-channel", "half-up", model="tiny")
    first = graph.mac_nodes()[0].name

    def wrong_sim(g):
        sim = simulated(g)
        w = sim.weight[first.replace(".", "/")]
        with torch.no_grad():  # three steps of the weight scale on output channel 0
            w[0] += 3 * sim.w_scale[first].reshape(-1)[0]
        return sim

    monkeypatch.setattr(verify, "simulated", wrong_sim)
    shared, own, a, b = both_ways(graph, images)
    assert first not in shared["shared_gemm_nodes"] and shared["shared_gemm_nodes"]
    assert a == b and a["mismatches_by_value"].get(graph.mac_nodes()[0].output, 0) > 0


def test_a_wrong_input_value_stops_the_sharing_of_its_consumer(monkeypatch):
    """Golden input codes off by one on some pixels: the first convolution's simulated GEMM must be its own
    (taking the golden one would copy the golden model's error and hide that layer's mismatches)."""
    graph, images = quantized("pot-channel", "half-up", model="tiny")
    plain = golden_mod.GOLDEN_KERNELS[OpType.INPUT]

    def wrong_input(m, n, xs):
        y = plain(m, n, xs)
        y[::3, 0, :, ::2] = (y[::3, 0, :, ::2] + 1).clamp(0, 255)
        return y

    monkeypatch.setitem(golden_mod.GOLDEN_KERNELS, OpType.INPUT, wrong_input)
    shared, own, a, b = both_ways(graph, images)
    conv = graph.mac_nodes()[0]
    assert conv.name in shared["shared_gemm_nodes"]
    assert a == b and a["mismatches_by_value"][graph.nodes[0].output] > 0 and a["mismatches_by_value"][conv.output] > 0
