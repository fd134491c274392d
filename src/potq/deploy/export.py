"""Hardware export: the integer graph as model.json + weights.npz, a C header, $readmemh hex files and
test vectors keyed by value name.

model.json is the graph's own format (potq.ir.io; every field in docs/graph-format.md) with each tensor
named by its files, and the integer rule of every op written out, so that another program rebuilds
the golden model without potq (tests/test_export.py does, with numpy alone, for every op). Hex files
hold one value per line (2 digits for 8-bit, 8 for 32-bit tensors): two's complement, except the uint8 input
table, which reads unsigned (hex_encoding).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from potq.deploy.c_runtime import BUILD as C_BUILD
from potq.deploy.c_runtime import c_files, c_ident
from potq.deploy.onnx_qdq import INPUT, OPSET, OUTPUT, WEIGHTS_UINT8, to_onnx
from potq.deploy.rtl import PE_KINDS
from potq.deploy.rtl.pe import pe_build
from potq.errors import UserError
from potq.files import check_output_dir, clear_stale, replace_dir, save_json, temp_prefix
from potq.golden import IntegerModel
from potq.ir import io
from potq.ir.codes import WORD_BITS, encode_weights, pack_words, packed_bytes
from potq.ir.graph import OP_SPEC, POOL_OPS, Graph, Node, OpType
from potq.ir.rules import ROUNDING_DEFINITIONS, Rounding

EXPORT_KIND = "potq-export/2"
ONNX_FILE = "model.onnx"
MODEL_JSON = "model.json"  # the graph: docs/graph-format.md

# The exporter's kernel per op: its integer rule, written into model.json for the implementer.
OP_RULES: dict[OpType, str] = {op: spec.rule for op, spec in OP_SPEC.items()}
ROUNDING_RULES = {r.label: ROUNDING_DEFINITIONS[r] for r in Rounding}
TENSOR_LAYOUTS = {  # by tensor key, all row-major (C order)
    "weight": "conv: (out, in / groups, kh, kw); linear: (out, in)",
    "bias": "(out)",
    "shift": "(out) per output channel, or (1) for all",
    "w_exp": "(out) per output channel, or (1)",
    "align": "(2): the left shifts of the add's two inputs, in input order",
    "lut": "(channels, 256): the code of pixel value p of channel c is lut[c, p]",
}
FORMAT_NOTE = (
    f"{io.FORMAT} version {io.VERSION}: nodes in topological order, values by name with their QType, integer "
    f"tensors per node; every field is in docs/graph-format.md. A reader of version {io.VERSION} needs nothing else."
)
PACKED_ENCODING = (
    "the weights' storage codes (w_bits wide: docs/graph-format.md, 'Weight formats'), row-major, LSB first, "
    "floor(32 / w_bits) to a 32-bit word (no code straddles two words), the last word zero-padded; one word per "
    "line, 8 hex digits"
)
ROUND_SHIFT = (
    "round_shift(acc, s) for s > 0: acc * 2^-s rounded by the model's rule (each defined exactly under "
    "'rounding_rules'); for s <= 0: acc << -s. Every accumulator fits int32 (worst cases under "
    "'worst_case_accumulator')."
)


def hex_lines(values: np.ndarray, bits: int) -> str:
    """Two's complement hex, one value per line, for Verilog $readmemh."""
    mask = (1 << bits) - 1
    digits = bits // 4
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in np.asarray(values).reshape(-1))


def read_hex(path: Path, bits: int, signed: bool = True) -> np.ndarray:
    """The inverse of hex_lines."""
    raw = np.array([int(line, 16) for line in Path(path).read_text().split()], dtype=np.int64)
    return np.where(signed & (raw >= 1 << (bits - 1)), raw - (1 << bits), raw)


def _bits(array: np.ndarray) -> int:
    return 8 if array.dtype in (np.int8, np.uint8) else 32


def hex_encoding(array: np.ndarray) -> str:
    """How a tensor's hex file reads (model.json's `hex_encoding`): the words hold the value's low bits either way,
    and a uint8 tensor (the input table, codes 0..255) is read unsigned, every other tensor as two's complement."""
    kind = "unsigned" if array.dtype == np.uint8 else "two's complement"
    return f"{kind}, one value per line, row-major (C) order of shape"


def _as_array(t: torch.Tensor) -> np.ndarray:
    """int8 and uint8 stay; every other integer tensor is exported as int32."""
    a = t.numpy()
    return a if a.dtype in (np.int8, np.uint8) else a.astype(np.int32)


def _c_array(name: str, array: np.ndarray) -> str:
    ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t"}.get(array.dtype, "int32_t")
    flat = ", ".join(str(int(v)) for v in array.reshape(-1))
    dims = "x".join(str(d) for d in array.shape)
    return f"/* {dims} */\nstatic const {ctype} potq_{c_ident(name)}[{array.size}] = {{{flat}}};\n"


def build_model_json(graph: Graph, golden: IntegerModel, in_shape, classes) -> tuple[dict, dict[str, np.ndarray]]:
    desc, tensors = io.to_dict(graph)
    arrays = {name: _as_array(t) for name, t in tensors.items()}
    bounds = golden.bounds
    for node in desc["nodes"]:
        op = OpType(node["op"])
        node["rule"] = OP_RULES[op]
        if op in (OpType.CONV, OpType.AVGPOOL):  # padding is the input zero point in code space
            node["attrs"]["pad_code"] = graph.q[node["inputs"][0]].zero_point
        if op is OpType.MAXPOOL:
            node["attrs"]["pad_code"] = None  # padding never wins the max
        if op in POOL_OPS:
            node["attrs"]["ceil_mode"] = False  # output size floor((h + 2p - k) / s) + 1
        if node["name"] in bounds:
            node["worst_case_accumulator"] = bounds[node["name"]]
    desc.update(
        format_note=FORMAT_NOTE,
        input_shape=list(in_shape),
        classes=list(classes),
        round_shift=ROUND_SHIFT,
        rounding_rules=ROUNDING_RULES,
        rounding_codes={r.label: int(r) for r in Rounding},
        tensor_files={
            k: {
                "dtype": str(v.dtype),
                "shape": list(v.shape),
                "layout": TENSOR_LAYOUTS.get(k.rsplit(".", 1)[-1], "row-major"),
                "npz": "weights.npz",
                "hex": f"hex/{k}.hex",
                "hex_word_bits": _bits(v),
                "hex_encoding": hex_encoding(v),
            }
            for k, v in arrays.items()
        },
    )
    for n in graph.mac_nodes():  # the weights' format, and their storage codes packed into 32-bit words
        entry = desc["tensor_files"][io.tensor_name(n, "weight")]
        entry.update(w_bits=n.weight_bits, w_code=n.weight_code.value)
        if n.low_bit:
            entry.update(
                packed_hex=f"hex/{io.tensor_name(n, 'weight')}.packed.hex",
                packed_bytes=packed_bytes(n.tensors["weight"].numel(), n.weight_bits),
                packed_encoding=PACKED_ENCODING,
            )
    return desc, arrays


def packed_weights(n: Node) -> np.ndarray:
    """A MAC node's weights as their storage codes packed into 32-bit words (docs/graph-format.md)."""
    values = n.tensors["weight"].numpy().reshape(-1)
    return pack_words(encode_weights(values, n.weight_code, n.weight_bits), n.weight_bits)


def c_header(desc: dict, arrays: dict[str, np.ndarray]) -> str:
    out = [
        "/* potq integer model: generated by `potq export`; the graph is in model.json. */",
        "#ifndef POTQ_MODEL_H",
        "#define POTQ_MODEL_H",
        "#include <stdint.h>",
        "",
        f"#define POTQ_ROUNDING {desc['rounding_code']} /* {desc['rounding']}: "
        + ", ".join(f"{k} = {v}" for k, v in desc["rounding_codes"].items())
        + " */",
        *(f"#define POTQ_ROUNDING_{r.name} {int(r)}" for r in Rounding),
        f"#define POTQ_NUM_NODES {len(desc['nodes'])}",
        "",
    ]
    for v, d in desc["values"].items():
        if "q" in d:
            key = c_ident(v).upper()
            q = d["q"]
            out += [
                f"#define POTQ_{key}_ZP {q['zero_point']}",
                f"#define POTQ_{key}_LO {q['lo']}",
                f"#define POTQ_{key}_HI {q['hi']}",
            ]
    out.append("")
    out += [_c_array(name, array) for name, array in arrays.items()]
    out += ["#endif"]
    return "\n".join(out) + "\n"


def check_pe_kind(graph: Graph, formats: tuple[str, ...], pe_kind: str) -> None:
    """--pe-kind is the RTL's: another kind than the default needs --format rtl and a graph its PE takes."""
    if pe_kind != PE_KINDS[0] and "rtl" not in formats:
        raise UserError(f"--pe-kind {pe_kind} chooses the RTL's PE: add rtl to --format")
    pe_build(graph, pe_kind)


def write_export(
    graph: Graph,
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    protect: tuple[Path, ...] = (),
    formats: tuple[str, ...] = ("hw",),
    source: dict | None = None,
    indices: np.ndarray | None = None,
    onnx_weights: str = WEIGHTS_UINT8,
    pe_kind: str = PE_KINDS[0],
    force: bool | None = None,
) -> dict:
    """Write the export folder of a graph in `formats`; built in a temporary folder, then moved into
    place whole. images: uint8 (N, C, H, W) test vectors; source: which quantized model this is;
    pe_kind: the RTL array's PE (potq.deploy.rtl.PE_KINDS), with "rtl" in formats; force: replace files
    potq wrote there that the user changed since (potq.files.check_output_dir)."""
    out = Path(out)
    check_output_dir(out, EXPORT_KIND, protect, force=force)
    check_pe_kind(graph, formats, pe_kind)
    golden = IntegerModel(graph)
    # before any file: a missing extra stops here
    onnx_model = to_onnx(graph, weights=onnx_weights) if "onnx" in formats else None
    desc, arrays = build_model_json(graph, golden, graph.shapes[graph.input], classes)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(out.parent, f".{out.name}.")
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    try:
        record: dict[str, torch.Tensor] = {}
        logits = golden.run(torch.from_numpy(images), record).numpy().astype(np.int32)
        if "hw" in formats or "c" in formats:
            (tmp / "model.h").write_text(c_header(desc, arrays))
        if "hw" in formats:
            desc["vectors"] = _write_hw(graph, tmp, arrays, images, labels, logits, record)
            desc["vectors"]["test_indices"] = None if indices is None else [int(i) for i in indices]
        if "c" in formats:
            for name, text in c_files(graph, images, logits).items():
                (tmp / name).write_text(text)
            desc["c_runtime"] = {"build": C_BUILD, "run": "./potq_main", "vectors": len(images)}
        if "rtl" in formats:
            from potq.deploy.rtl.export import write_rtl

            desc["rtl"] = write_rtl(graph, tmp / "rtl", images, record, pe_kind)
        if onnx_model is not None:
            (tmp / ONNX_FILE).write_bytes(onnx_model.SerializeToString())
            desc["onnx"] = {"file": ONNX_FILE, "opset": OPSET, "input": INPUT, "output": OUTPUT}
            desc["onnx"]["weights"] = onnx_weights
        desc["formats"] = list(formats)
        rounding = graph.rounding.label
        desc["quantized_model"] = source or {"label": graph.scheme, "scheme": graph.scheme, "rounding": rounding}
        if "hw" not in formats:  # the tensors are in model.h or model.onnx, not in npz and hex files
            for t in desc["tensor_files"].values():
                del t["npz"], t["hex"]
                t.pop("packed_hex", None)  # written with the hex files only
        save_json(desc, tmp / MODEL_JSON)
        replace_dir(tmp, out, EXPORT_KIND, protect, force=force)
    except OSError as e:  # a full disk: numpy's and zipfile's writers name no file
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"--out {out}: can't write the export ({e.strerror or e}{f' at {size:,} bytes' if size else ''}); "
            "nothing of it was kept, an old export is unchanged"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "tensors": len(arrays),
        "vectors": len(images),
        "nodes": len(graph.nodes),
        "formats": list(formats),
    }


def _write_hw(graph: Graph, tmp: Path, arrays, images, labels, logits, record) -> dict:
    """The RTL testbench files: weights.npz, hex files of every tensor, and the test vectors."""
    (tmp / "hex").mkdir()
    (tmp / "vectors").mkdir()
    for k, v in arrays.items():
        (tmp / "hex" / f"{k}.hex").write_text(hex_lines(v, _bits(v)))
    for n in graph.mac_nodes():
        if n.low_bit:
            words = packed_weights(n)
            (tmp / "hex" / f"{io.tensor_name(n, 'weight')}.packed.hex").write_text(hex_lines(words, WORD_BITS))
    np.savez(tmp / "weights.npz", **arrays)
    vec = {graph.input: images, "labels": labels, "logits": logits}
    vec.update({v: t.numpy().astype(np.int32) for v, t in record.items()})
    np.savez(tmp / "vectors.npz", **vec)
    for k in range(len(images)):
        (tmp / "vectors" / f"img{k}_{graph.input}.hex").write_text(hex_lines(images[k], 8))
        for v, t in record.items():
            (tmp / "vectors" / f"img{k}_{v}.hex").write_text(hex_lines(t[k].numpy(), graph.q[v].bits))
    return {
        "count": len(images),
        "npz": "vectors.npz",
        "note": f"keys: {graph.input} (the uint8 images), labels, logits, and every value of the graph by name",
        "hex": f"vectors/img{{k}}_{graph.input}.hex (uint8 pixels, C,H,W order), vectors/img{{k}}_{{value}}.hex",
    }
