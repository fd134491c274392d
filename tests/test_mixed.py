"""`potq mixed` (issue 28): the program's answer is the brute-force optimum and keeps the budget, the costs it adds
up are the quantized model's own, each measured sensitivity is the logits' noise of the model it stands for, the
HAWQ-V3 baseline keeps to 4- and 8-bit int, the user's mistakes are one line with nothing written, and the file it
writes quantizes and verifies through `potq quantize --precision`."""

import fnmatch
import itertools
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from potq import energy
from potq.accel.arch import COST_ARCH, COST_DATAFLOW, load_arch
from potq.accel.model import accel_report
from potq.cli import main
from potq.errors import UserError
from potq.ir.bounds import shared_groups
from potq.ir.capture import capture
from potq.ir.codes import WeightCode, packed_bytes
from potq.ir.tensor import normalize
from potq.quant.lower import calibrate, collect_stats, input_means, lower
from potq.quant.mixed import (
    FRONT_BUDGETS,
    INT8,
    base_settings,
    check_search,
    cost_table,
    hessian_traces,
    lower_at,
    search_precision,
    searched_nodes,
    solve,
    solve_budget,
    solve_result,
    with_node,
)
from potq.quant.precision import read_precision
from potq.quant.rules import MIXED_OBJECTIVES, QuantSettings
from potq.quant.simulate import SimNet, simulated
from potq.runs.paths import PER_MODEL_GLOBS, precision_json
from tests.test_golden import MEAN, STD
from tests.test_quant import random_bn_model

ARCH = load_arch(COST_ARCH)
SETTINGS = QuantSettings(bits_all=True)  # tiny has four MAC nodes: search them all
MENU, CODES = (2, 4, 8), (WeightCode.INT, WeightCode.POT)  # five choices: 5^4 assignments to enumerate


def tiny(n: int = 32):
    torch.manual_seed(0)
    fgraph = capture(random_bn_model("tiny", 0), (3, 32, 32), MEAN, STD)
    return fgraph, normalize(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), MEAN, STD)


@pytest.fixture(scope="module")
def searched():
    fgraph, x = tiny()
    r = search_precision(fgraph, x, SETTINGS, 1.0, ARCH, COST_DATAFLOW, menu=MENU, codes=CODES, act_menu=(8,))
    return fgraph, x, r


def brute_force(sensitivity: np.ndarray, cost: np.ndarray, limit: float) -> float | None:
    """The least summed sensitivity of any assignment within the limit, by enumeration."""
    rows = range(len(sensitivity))
    best = None
    for pick in itertools.product(range(sensitivity.shape[1]), repeat=len(sensitivity)):
        if sum(cost[i, j] for i, j in zip(rows, pick, strict=True)) <= limit:
            s = sum(sensitivity[i, j] for i, j in zip(rows, pick, strict=True))
            best = s if best is None else min(best, s)
    return best


def picked(sensitivity: np.ndarray, pick: list[int]) -> float:
    return sum(sensitivity[i, j] for i, j in enumerate(pick))


@pytest.mark.parametrize("seed", range(12))
def test_the_program_is_the_brute_force_optimum_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(2, 6)), int(rng.integers(2, 5))
    sensitivity, cost = rng.exponential(1.0, (k, m)), rng.uniform(1.0, 10.0, (k, m))
    for limit in np.quantile(cost.sum(0), [0.0, 0.3, 0.6, 1.0]) * rng.uniform(0.8, 1.2):
        best, pick = brute_force(sensitivity, cost, limit), solve(sensitivity, cost, limit)
        assert (pick is None) == (best is None)
        if pick is not None:
            assert picked(sensitivity, pick) == pytest.approx(best, rel=1e-6)
            assert picked(cost, pick) <= limit * (1 + 1e-7)


def test_the_program_is_the_brute_force_optimum_on_a_measured_model(searched):
    _, _, r = searched
    assert r.sensitivity.shape == (4, 5)
    for budget in FRONT_BUDGETS:
        limit = budget * r.int8_cost - r.fixed_cost
        best = brute_force(r.sensitivity, r.cost, limit)
        pick = solve_budget(r.sensitivity, r.cost, r.int8_cost, r.fixed_cost, budget)
        assert (pick is None) == (best is None)
        if pick is not None:
            assert picked(r.sensitivity, pick) == pytest.approx(best, rel=1e-6, abs=1e-6 * r.sensitivity.max())
    cheapest = r.fixed_cost + r.cost.min(1).sum()
    assert [p["budget"] for p in r.front] == [b for b in FRONT_BUDGETS if b * r.int8_cost >= cheapest]


def test_a_budget_of_one_keeps_eight_bits_and_every_other_choice_costs_accuracy(searched):
    _, _, r = searched
    int8 = r.choices.index(INT8)
    assert [r.choices[j] for j in r.pick] == [INT8] * 4 and r.total_sensitivity() == 0
    assert r.total_cost() == pytest.approx(r.int8_cost) and r.fixed == []
    others = np.delete(r.sensitivity, int8, axis=1)
    assert (r.sensitivity[:, int8] == 0).all() and (others > 0).all()
    assert (r.cost[:, int8] >= r.cost.max(1)).all()  # 8-bit int weights cost the most energy here
    s = [p["sensitivity"] for p in r.front]
    assert s == sorted(s, reverse=True)  # more budget, less harm


def quantized_with(fgraph, x, entries) -> object:
    """The graph `potq quantize --precision` makes of these entries (its path: calibrate, bias-correct, lower)."""
    settings = QuantSettings.parse(bits_all=True, precision=tuple(entries))
    return lower(fgraph, calibrate(fgraph, x, settings), settings, input_means(fgraph, x))


def model_total(graph, objective: str) -> float:
    """A quantized model's whole cost, as potq prices it elsewhere (quantize's record, potq accel)."""
    if objective in ("energy", "latency"):
        total = accel_report(graph, ARCH, COST_DATAFLOW)["total"]
        return total["energy"]["total"] if objective == "energy" else total["cycles"]["latency"]
    costs = energy.graph_costs(graph)
    if objective == "compute":
        return sum(c.compute_pj(energy.Arith.INT8_POT, energy.load_table(None)) for c in costs)
    if objective == "size":  # quantize's packed_weights_mb, in bytes
        return sum(
            packed_bytes(n.tensors["weight"].numel(), n.weight_bits) + 4 * n.tensors["bias"].numel()
            for n in graph.mac_nodes()
        )
    macs = {c.name: c.macs for c in costs}
    return sum(macs[n.name] * n.weight_bits * graph.q[n.inputs[0]].bits for n in graph.mac_nodes())


@pytest.fixture(scope="module")
def lowered(searched):
    """The searched nodes and the graph at each choice, every node at it, as the search lowers them."""
    fgraph, x, r = searched
    base = base_settings(SETTINGS)
    names, _ = searched_nodes(fgraph, base)
    stats, means = collect_stats(fgraph, x, sample=False), input_means(fgraph, x, nodes=set(names))
    return names, [lower_at(fgraph, x, base, names, c, stats, means) for c in r.choices]


@pytest.mark.parametrize("objective", MIXED_OBJECTIVES)
def test_the_cost_the_program_adds_up_is_the_quantized_models_and_keeps_the_budget(searched, lowered, objective):
    fgraph, x, r = searched
    names, alts = lowered
    ref = alts[r.choices.index(INT8)]
    cost, int8_cost, fixed_cost, _ = cost_table(ref, alts, names, objective, ARCH, COST_DATAFLOW)
    assert int8_cost == pytest.approx(model_total(quantized_with(fgraph, x, []), objective), rel=1e-12)
    budget = 0.7 if objective in ("size", "bops", "compute") else 0.95
    pick = solve_budget(r.sensitivity, cost, int8_cost, fixed_cost, budget)
    assert pick is not None and any(r.choices[j] != INT8 for j in pick)
    chosen = quantized_with(fgraph, x, [r.choices[j].entry(n) for n, j in zip(names, pick, strict=True)])
    total = model_total(chosen, objective)
    assert total == pytest.approx(fixed_cost + picked(cost, pick), rel=1e-9)
    assert total <= budget * int8_cost * (1 + 1e-7)


def test_a_node_taken_from_a_graph_at_its_choice_is_that_node_quantized_alone(searched, lowered):
    fgraph, x, r = searched
    names, alts = lowered
    ref = alts[r.choices.index(INT8)]
    for name in (names[1], names[-1]):  # a hidden layer, and the logits (whose scale follows its weights)
        for j, alt in enumerate(alts):
            spliced, alone = with_node(ref, alt, name), quantized_with(fgraph, x, [r.choices[j].entry(name)])
            assert spliced.q == alone.q
            for a, b in zip(spliced.nodes, alone.nodes, strict=True):
                assert (a.name, a.attrs) == (b.name, b.attrs)
                assert a.tensors.keys() == b.tensors.keys()
                assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), (name, a.name)


@torch.no_grad()
def test_each_sensitivity_is_the_logit_noise_of_the_model_with_that_node_alone_at_that_choice(searched):
    fgraph, x, r = searched
    y8 = simulated(quantized_with(fgraph, x, [])).forward(x).double()
    for i, name in enumerate(r.nodes):
        for j in (0, len(r.choices) - 1):  # int2 and pot4
            y = simulated(quantized_with(fgraph, x, [r.choices[j].entry(name)]))(x).double()
            nsr = float((y - y8).pow(2).mean() / y8.pow(2).mean())
            assert r.sensitivity[i, j] == pytest.approx(nsr, rel=1e-9), (name, r.choices[j].label)


def test_hawq_keeps_to_four_and_eight_bit_int_and_prices_bit_operations():
    fgraph, x = tiny()
    r = search_precision(fgraph, x, QuantSettings(), 0.8, ARCH, method="hawq", act_menu=(8,))
    assert [c.label for c in r.choices] == ["int4", "int8"] and r.objective == "bops"
    assert (r.sensitivity > 0).all() and (r.sensitivity[:, 0] > r.sensitivity[:, 1]).all()
    macs = [n.name for n in fgraph.mac_nodes()]
    assert r.fixed == [macs[0], macs[-1]] and r.nodes == macs[1:-1]
    assert r.cost[:, 0].tolist() == pytest.approx((r.cost[:, 1] / 2).tolist())  # 4-bit weights: half the bit-ops
    assert r.total_cost() <= 0.8 * r.int8_cost
    nodes = r.precision()["nodes"]
    assert {(e["w_bits"], e["w_code"]) for e in nodes.values()} <= {(4, "int"), (8, "int")}


def test_hawq_takes_a_layer_at_four_or_eight_bits_weights_and_input_alike():
    """HAWQ-V3's layer precision: W4A4 or W8A8 where the search sizes the node's input; no activation term."""
    fgraph, x = tiny()
    r = search_precision(fgraph, x, SETTINGS, 0.75, ARCH, method="hawq", objective="energy")
    assert r.groups.names and not r.group_sensitivity.any()
    widths = dict(zip(r.groups.names, (r.act_menu[t] for t in r.group_pick), strict=True))
    for name, j in zip(r.nodes, r.pick, strict=True):
        c = r.choices[j]
        if name in r.groups.reads:
            assert c.bits == c.a_bits == widths[r.groups.reads[name]], name
        else:
            assert c.a_bits == 8, name
    assert any(r.choices[j].bits == 4 for j in r.pick) and r.exact_cost <= 0.75 * r.int8_cost * (1 + 1e-9)


def test_hutchinson_estimates_the_hessian_trace():
    """Against the exact average trace of the last layer's Hessian (160 weights: autograd's hessian)."""
    fgraph, x = tiny(64)
    last = fgraph.mac_nodes()[-1]
    net = SimNet(fgraph).train(True)
    labels = net(x.float()).argmax(1).detach()
    w = net.params_of(last)[0]
    key = next(k for k, p in net.named_parameters() if p is w)

    def loss(weight):
        logits = torch.func.functional_call(net, {key: weight}, (x.float(),))
        return torch.nn.functional.cross_entropy(logits, labels)

    exact = float(torch.autograd.functional.hessian(loss, w.detach().clone()).reshape(w.numel(), -1).trace())
    estimate = hessian_traces(fgraph, x, labels, [last.name], probes=256)[0]
    assert estimate == pytest.approx(exact / w.numel(), rel=0.1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "0.01"], "--budget 0.01: below the cheapest assignment, 0."),
        (["--budget", "0.5", "--menu", "1,8"], "--menu 1,8: weights take 2 to 8 bits, not 1"),
        (["--budget", "0.5", "--menu", "2,9"], "--menu 2,9: weights take 2 to 8 bits, not 9"),
        (["--budget", "0.5", "--menu", "two"], "--menu two: give weight bits as a comma-separated list"),
        (["--budget", "0.5", "--menu", "8", "--codes", "pot"], "--menu 8: no width for the codes given"),
        (["--budget", "0.5", "--codes", "log"], "--codes log: unknown weight code 'log'"),
        (["--budget", "0.5", "--objective", "speed"], "argument --objective: invalid choice: 'speed'"),
        (["--budget", "0"], "--budget 0.0: give a positive fraction"),
        (["--budget", "0.5", "--method", "hawq", "--menu", "4,8"], "--method hawq searches 4- and 8-bit int"),
        (["--budget", "0.5", "--dataflow", "rs"], "--dataflow rs: architecture systolic-16-45nm runs ws, os, is"),
        (["--budget", "0.5", "--act-menu", "4"], "--act-menu 4: include 8"),
        (["--budget", "0.5", "--act-menu", "1,8"], "--act-menu 1,8: activations take 2 to 8 bits, not 1"),
        (["--budget", "0.5", "--act-menu", "four"], "--act-menu four: give activation bits as a comma-separated"),
        (["--budget", "0.5", "--method", "hawq", "--act-menu", "2,8"], "--method hawq reads 4- or 8-bit codes"),
    ],
)
def test_mistakes_are_one_line_exit_two_and_write_nothing(tiny_run, capsys, args, message):
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["mixed", "--run", str(tiny_run), "--calib", "16", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tiny_run.iterdir()) == before


def test_the_library_names_the_objective_it_does_not_know():
    with pytest.raises(UserError, match="--objective speed: choose from energy, latency, size, compute, bops"):
        check_search("potq", "speed", 0.5, None, None)


def test_mixed_writes_a_precision_file_that_quantizes_and_verifies(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # a private copy: the session's run stays as it was
    assert main(["mixed", "--run", str(run), "--budget", "0.95", "--calib", "32"]) == 0
    out = capsys.readouterr().out
    path = precision_json(run, "mixed-energy-0.95")
    assert f"-> {path}" in out and "solver" in out and "| features.4 |" in out
    record = json.loads(path.read_text())
    entries = read_precision(path)
    assert entries == tuple((n, e["w_bits"], e["w_code"], e["a_bits"]) for n, e in sorted(record["nodes"].items()))
    assert set(record["nodes"]) >= set(record["choice"]) | set(record["fixed"])  # and the groups' producers
    assert all(
        f"{w}" in record["choice"].get(n, "int8") and c in record["choice"].get(n, "int8") for n, w, c, _ in entries
    )
    assert record["fraction"] <= 0.95 and any(c != "int8" for c in record["choice"].values())
    assert any(fnmatch.fnmatch(path.name, g) for g in PER_MODEL_GLOBS)  # potq run --force clears it
    assert main(["quantize", "--run", str(run), "--calib", "32", "--precision", str(path)]) == 0
    label = QuantSettings.parse(precision=entries).label()
    assert main(["compare", "--run", str(run)]) == 0  # prices every quantized model (precision.json)
    priced = json.loads((run / "precision.json").read_text())[label]
    assert priced["energy_pj"] < 0.95 * record["int8_cost"] * 1.01  # other calibration images, same choice
    assert main(["verify", "--run", str(run), "--scheme", label]) == 0
    assert "0 mismatching values" in capsys.readouterr().out
    assert main(["mixed", "--run", str(run), "--budget", "0.8", "--method", "hawq", "--calib", "32"]) == 0
    hawq = read_precision(precision_json(run, "hawq-bops-0.8"))
    assert {(w, c) for _, w, c, _ in hawq} <= {(4, "int"), (8, "int")} and {a for *_, a in hawq} <= {4, 8}


def test_searches_that_differ_in_their_options_keep_their_own_files(tiny_run, tmp_path):
    from potq.jobs.mixed import label

    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert main(["mixed", "--run", str(run), "--budget", "0.95", "--calib", "16"]) == 0
    assert main(["mixed", "--run", str(run), "--budget", "0.95", "--calib", "16", "--menu", "4,8"]) == 0
    files = sorted(p.name for p in run.glob("precision_*.json"))
    assert len(files) == 2 and "precision_mixed-energy-0.95.json" in files
    assert label("potq", "energy", 0.95, {"menu": (4, 8)}) != label("potq", "energy", 0.95, {"menu": (2, 8)})


# ---- activations searched too --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def act_searched():
    """tiny, every node searched over int/pot 2, 4, 8-bit weights and 4- or 8-bit inputs, at 0.75 of INT8's energy."""
    fgraph, x = tiny()
    r = search_precision(fgraph, x, SETTINGS, 0.75, ARCH, COST_DATAFLOW, menu=MENU, codes=CODES, act_menu=(4, 8))
    return fgraph, x, r


def brute_force_linked(r, limit: float):
    """The least summed sensitivity (and its picks) over every assignment whose nodes read their groups' widths
    and whose program cost is within the limit, by enumeration."""
    p = r.program()
    best = None
    for widths in itertools.product(range(len(r.act_menu)), repeat=len(r.groups.names)):
        read = {i: widths[g] for i, g in p.links}
        columns = [
            [j for j in range(len(r.choices)) if p.allowed[i, j] and p.width[j] == read.get(i, p.width[j])]
            for i in range(len(r.nodes))
        ]
        for pick in itertools.product(*columns):
            if r.total_cost(list(pick), list(widths)) <= limit:
                s = r.total_sensitivity(list(pick), list(widths))
                best = s if best is None or s < best else best
    return best


def test_with_activations_the_program_is_the_brute_force_optimum_of_its_tables(act_searched):
    _, _, r = act_searched
    assert r.groups.names and r.act_menu == (4, 8) and len(r.choices) == 10
    for budget in (0.65, 0.75, 0.9):
        pick, group_pick = solve_result(r, budget)
        best = brute_force_linked(r, budget * r.int8_cost * (1 + 1e-9))
        assert r.total_sensitivity(pick, group_pick) == pytest.approx(best, rel=1e-6, abs=1e-9)
        p = r.program()
        for i, g in p.links:  # every reader of a group reads its width
            assert r.choices[pick[i]].a_bits == r.act_menu[group_pick[g]]


def test_with_activations_the_chosen_model_and_the_front_keep_their_budgets_at_their_exact_cost(act_searched):
    fgraph, x, r = act_searched
    chosen = quantized_with(fgraph, x, r.entries())
    assert model_total(chosen, "energy") == pytest.approx(r.exact_cost, rel=1e-12)
    assert r.exact_cost <= 0.75 * r.int8_cost * (1 + 1e-9) and any(b < 8 for b in r.act_menu[: 1])
    assert any(r.act_menu[t] == 4 for t in r.group_pick)  # narrower activations are worth it here
    bits = {v: q.bits for v, q in chosen.q.items() if not q.accumulator}
    for node, group in r.groups.reads.items():  # the model reads what the program chose
        reader = next(n for n in chosen.nodes if n.name == node)
        assert bits[reader.inputs[0]] == r.act_menu[r.group_pick[r.groups.names.index(group)]]
    assert all(p["fraction"] <= p["budget"] * (1 + 1e-9) for p in r.front)
    assert abs(r.total_cost() - r.exact_cost) < 0.1 * r.int8_cost  # the estimate is near


@torch.no_grad()
def test_each_activation_sensitivity_is_the_logit_noise_of_that_group_alone_at_that_width(act_searched):
    fgraph, x, r = act_searched
    y8 = simulated(quantized_with(fgraph, x, [])).forward(x).double()
    for g, group in enumerate(r.groups.names):
        entries = [(n, 8, "int", 4) for n in r.groups.producers[group]]
        y = simulated(quantized_with(fgraph, x, entries))(x).double()
        nsr = float((y - y8).pow(2).mean() / y8.pow(2).mean())
        assert r.group_sensitivity[g, r.act_menu.index(4)] == pytest.approx(nsr, rel=1e-9), group
        assert r.group_sensitivity[g, r.act_menu.index(8)] == 0


def test_without_bits_all_the_image_and_the_last_layers_input_stay_eight_bits():
    fgraph, x = tiny()
    r = search_precision(fgraph, x, QuantSettings(), 0.95, ARCH, COST_DATAFLOW, menu=(4, 8), codes=(WeightCode.INT,))
    macs = fgraph.mac_nodes()
    assert r.fixed == [macs[0].name, macs[-1].name]
    group = shared_groups(fgraph)
    pinned = {group[fgraph.input], group[macs[-1].inputs[0]]}
    assert r.groups.names and not pinned & set(r.groups.names)


def test_another_architecture_is_priced_output_stationary_where_it_runs_it(tiny_run, tmp_path):
    from potq.jobs.mixed import Search, mixed_run

    run = shutil.copytree(tiny_run, tmp_path / "run")
    search = Search(QuantSettings(), "energy", 0.99, "systolic-16-45nm-sized", act_menu=(8,))
    r = mixed_run(run, search, calib=16)
    assert (r["arch"], r["dataflow"]) == ("systolic-16-45nm-sized", COST_DATAFLOW)
    r = mixed_run(run, replace(search, arch="eyeriss"), calib=16)
    assert r["dataflow"] == "rs"  # eyeriss runs row-stationary alone


@pytest.mark.parametrize("objective", ["bops", "size"])
def test_objectives_of_mac_nodes_alone_search_activations_too(objective):
    """bops and size price MAC nodes alone: a group's other nodes (a max pool) cost nothing by them."""
    fgraph, x = tiny()
    r = search_precision(fgraph, x, SETTINGS, 0.9, ARCH, objective=objective)
    assert r.groups.names and r.group_cost.shape == (len(r.groups.names), 2)
    assert r.total_cost() <= 0.9 * r.int8_cost * (1 + 1e-9)
