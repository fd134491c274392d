"""The C99 runtime: integer-only inference source generated from the integer graph.

`potq_model.c` is the fixed kernel library (potq_kernels.c, one function per op type) followed by the
generated `potq_infer()`, which calls one kernel per node on static buffers sized here from the
graph's shapes: no malloc, no float. It includes `model.h` (weights, biases, shifts, zero points,
clamps: the export's header). `main.c` runs the exported test vectors through it and prints the count
of logits that differ from the golden model's. tests/test_deploy.py compiles both with
`gcc -std=c99 -Wall -Wextra -Werror` (and once with ASan/UBSan) for every rounding rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from importlib.resources import files

import numpy as np

from potq.ir.graph import Graph, Node, OpType, pair
from potq.ir.io import tensor_name
from potq.ir.rules import SHIFT_CAP

API_HEADER = "potq_model.h"
SOURCE = "potq_model.c"
MAIN = "main.c"
VECTORS = "potq_vectors.h"
BUILD = "cc -std=c99 -O2 -o potq_main potq_model.c main.c"


def c_ident(name: str) -> str:
    """A C identifier for a value or tensor name (model.h's arrays are potq_<c_ident(tensor)>)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _array(n: Node, key: str) -> str:
    return f"potq_{c_ident(tensor_name(n, key))}"


def _buffer(v: str) -> str:
    return f"potq_v_{c_ident(v)}"


def _size(graph: Graph, v: str) -> int:
    return math.prod(graph.shapes[v])


def _chw(graph: Graph, v: str) -> tuple[int, int, int]:
    s = graph.shapes[v]
    return (s[0], 1, 1) if len(s) == 1 else (s[0], s[1], s[2])


# ---- one emitter per op type: the C statements of one node ---------------------------------------


def _src(graph: Graph, n: Node, i: int = 0) -> str:
    return "image" if n.inputs[i] == graph.input else _buffer(n.inputs[i])


def _dst(graph: Graph, n: Node) -> str:
    return "logits" if graph.q[n.output].bits == 32 else _buffer(n.output)


def _input(graph: Graph, n: Node) -> str:
    c, h, w = _chw(graph, n.output)
    return f"potq_input(image, {_array(n, 'lut')}, {c}, {h * w}, {_dst(graph, n)});"


def _mac(graph: Graph, n: Node) -> str:
    q_in, q_out = graph.q[n.inputs[0]], graph.q[n.output]
    c, h, w = _chw(graph, n.inputs[0])
    o, oh, ow = _chw(graph, n.output)
    if n.op is OpType.CONV:
        (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
        groups = n.attrs.get("groups", 1)
    else:  # a linear layer: a 1x1 convolution of a 1x1 image
        c, h, w, kh, kw, sh, sw, ph, pw, groups = _size(graph, n.inputs[0]), 1, 1, 1, 1, 1, 1, 0, 0, 1
    if n.requant:
        shift, shifts = _array(n, "shift"), int(n.tensors["shift"].numel())
        y, acc = _dst(graph, n), "NULL"
    else:
        shift, shifts, y, acc = "NULL", 1, "NULL", "logits"
    fields = [c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw, groups, q_in.zero_point]
    fields += [_array(n, "weight"), _array(n, "bias"), shift, shifts, q_out.zero_point, q_out.lo, q_out.hi]
    return (
        f"{{ static const potq_conv_t p = {{{', '.join(map(str, fields))}}};\n"
        f"      potq_conv(&p, {_src(graph, n)}, {y}, {acc}); }}"
    )


def _add(graph: Graph, n: Node) -> str:
    q = graph.q
    a, b = n.inputs
    align = [int(v) for v in n.tensors["align"].tolist()]
    o = q[n.output]
    return (
        f"potq_add({_src(graph, n, 0)}, {_src(graph, n, 1)}, {_size(graph, n.output)}L, {q[a].zero_point}, "
        f"{q[b].zero_point}, {align[0]}, {align[1]}, {int(n.tensors['shift'][0])}, {o.zero_point}, {o.lo}, "
        f"{o.hi}, {_dst(graph, n)});"
    )


def _pool(graph: Graph, n: Node) -> str:
    c, h, w = _chw(graph, n.inputs[0])
    _, oh, ow = _chw(graph, n.output)
    (kh, kw), (sh, sw), (ph, pw) = (pair(n.attrs[k]) for k in ("kernel", "stride", "padding"))
    p = f"{{ static const potq_pool_t p = {{{c}, {h}, {w}, {oh}, {ow}, {kh}, {kw}, {sh}, {sw}, {ph}, {pw}}};\n      "
    if n.op is OpType.MAXPOOL:
        return p + f"potq_maxpool(&p, {_src(graph, n)}, {_dst(graph, n)}); }}"
    q_in, o = graph.q[n.inputs[0]], graph.q[n.output]
    return p + (
        f"potq_avgpool(&p, {_src(graph, n)}, {q_in.zero_point}, {int(n.tensors['shift'][0])}, {o.zero_point}, "
        f"{o.lo}, {o.hi}, {_dst(graph, n)}); }}"
    )


def _concat(graph: Graph, n: Node) -> str:
    out, offset = [], 0
    for i, v in enumerate(n.inputs):
        out.append(f"potq_copy({_src(graph, n, i)}, {_size(graph, v)}L, {_dst(graph, n)} + {offset});")
        offset += _size(graph, v)
    return "\n    ".join(out)


def _flatten(graph: Graph, n: Node) -> str:
    return f"potq_copy({_src(graph, n)}, {_size(graph, n.output)}L, {_dst(graph, n)});"


C_KERNELS: dict[OpType, Callable[[Graph, Node], str]] = {
    OpType.INPUT: _input,
    OpType.CONV: _mac,
    OpType.LINEAR: _mac,
    OpType.ADD: _add,
    OpType.MAXPOOL: _pool,
    OpType.AVGPOOL: _pool,
    OpType.CONCAT: _concat,
    OpType.FLATTEN: _flatten,
}


# ---- the files -------------------------------------------------------------------------------------


def api_header(graph: Graph) -> str:
    c, h, w = graph.shapes[graph.input]
    return f"""/* potq integer model: the C runtime's interface (generated by `potq export --format c`). */
#ifndef POTQ_MODEL_API_H
#define POTQ_MODEL_API_H
#include <stdint.h>

#define POTQ_IN_C {c}
#define POTQ_IN_H {h}
#define POTQ_IN_W {w}
#define POTQ_IN_SIZE {c * h * w}
#define POTQ_NUM_OUTPUTS {_size(graph, graph.output)}

/* image: uint8 pixels in C, H, W order; logits: the int32 outputs of the last layer
   (its accumulators: real logits are these times 2^{graph.q[graph.output].exponent}).
   Returns the predicted class (the first largest logit). Not reentrant: the buffers are static. */
int potq_infer(const uint8_t *image, int32_t *logits);

#endif
"""


def model_source(graph: Graph) -> str:
    # the kernels' constants come from potq.ir.rules, never typed in C
    kernels = files("potq.deploy").joinpath("potq_kernels.c").read_text().replace("@SHIFT_CAP@", str(SHIFT_CAP))
    buffers = [
        f"static uint8_t {_buffer(n.output)}[{_size(graph, n.output)}];" for n in graph.nodes if _is_codes(graph, n)
    ]
    body = [f"    /* {n.name} ({n.op.value}) */\n    {C_KERNELS[n.op](graph, n)}" for n in graph.nodes]
    if not graph.q[graph.output].accumulator:  # a clamped last layer: its codes are the outputs
        body.append(f"    for (i = 0; i < POTQ_NUM_OUTPUTS; i++) logits[i] = {_buffer(graph.output)}[i];")
    return (
        "/* potq integer model: C99 integer-only inference (generated by `potq export --format c`).\n"
        f"   Build: {BUILD} */\n"
        "#include <stdint.h>\n#include <stddef.h>\n"
        '#include "model.h"\n'
        f'#include "{API_HEADER}"\n\n'
        f"#define POTQ_MAX_PLANE {_max_plane(graph)} /* the largest output plane of a conv or linear node */\n"
        + kernels
        + "\n/* ---- the graph, node by node: one static buffer per activation ---- */\n\n"
        + "\n".join(buffers)
        + "\n\nint potq_infer(const uint8_t *image, int32_t *logits) {\n    int i, best = 0;\n"
        + "\n".join(body)
        + "\n    for (i = 1; i < POTQ_NUM_OUTPUTS; i++)\n        if (logits[i] > logits[best]) best = i;\n"
        + "    return best;\n}\n"
    )


def _max_plane(graph: Graph) -> int:
    return max(math.prod(_chw(graph, n.output)[1:]) for n in graph.mac_nodes())


def _is_codes(graph: Graph, n: Node) -> bool:
    return not graph.q[n.output].accumulator


def vectors_header(images: np.ndarray, logits: np.ndarray) -> str:
    def rows(a: np.ndarray) -> str:
        return ",\n".join("  {" + ", ".join(str(int(v)) for v in r.reshape(-1)) + "}" for r in a)

    return (
        "/* potq test vectors: uint8 images and the golden model's int32 logits (generated). */\n"
        f"#define POTQ_NUM_VECTORS {len(images)}\n"
        f"static const uint8_t potq_vector_images[{len(images)}][POTQ_IN_SIZE] = {{\n{rows(images)}\n}};\n"
        f"static const int32_t potq_vector_logits[{len(images)}][POTQ_NUM_OUTPUTS] = {{\n{rows(logits)}\n}};\n"
    )


def c_files(graph: Graph, images: np.ndarray, logits: np.ndarray) -> dict[str, str]:
    """The C runtime's files (beside the export's model.h), by name."""
    return {
        API_HEADER: api_header(graph),
        SOURCE: model_source(graph),
        MAIN: files("potq.deploy").joinpath("main.c").read_text(),
        VECTORS: vectors_header(images, logits),
    }
