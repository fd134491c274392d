"""Capture: a model's own graph (torch.fx) -> potq's float Graph. The only module that knows torch's
layer and function names.

BatchNorm2d after a convolution is folded into it (float64); ReLU, ReLU6 and clamps of the same kind
are fused into the Conv, Linear or Add before them as its output clamp; Dropout and Identity vanish.
Anything else is refused with one line naming the node, its operation and its place in the model.
"""

from __future__ import annotations

import operator
import re

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from potq.errors import UserError
from potq.ir.graph import RELU_FUSING_OPS, Graph, Node, OpType, pair

IMAGE = "image"
SUPPORTED = (
    "Conv2d (+BatchNorm2d), Linear, ReLU/ReLU6/clamp(min=0), MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), "
    "mean over H and W, add, torch.cat(dim=1), flatten/view/reshape to (N, -1), Dropout, Identity"
)
INF = float("inf")

ADD_FUNCS = {operator.add, operator.iadd, torch.add}
CAT_FUNCS = {torch.cat, torch.concat}
FLATTEN_FUNCS = {torch.flatten}
NOOP_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)
NOOP_FUNCS = {F.dropout, F.dropout2d}
NOOP_METHODS = {"contiguous", "clone", "detach"}


class _Tracer(fx.Tracer):
    def __init__(self, stack_traces: bool):
        super().__init__()
        # error messages name the source line; recording it imports torch._dynamo (seconds, once per process),
        # so `capture` records it only to word an error (issue 22)
        self.record_stack_traces = stack_traces


def where(node: fx.Node) -> str:
    """A node's place in the model: its module path, and the source line for functions."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    scope = next(reversed(stack.values()))[0] if stack else ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    user = [f for f in frames if "/torch/" not in f[0]]
    line = f" ({user[-1][0].rsplit('/', 1)[-1]}:{user[-1][1]})" if user else ""
    return (f"{scope}.{node.name}" if scope else node.name) + line


def _name(node: fx.Node) -> str:
    return where(node).split(" (")[0]


def _unsupported(node: fx.Node, what: str, why: str = "") -> UserError:
    detail = f": {why}" if why else f"; potq supports {SUPPORTED}"
    return UserError(f"model node {where(node)}: {what} is not supported{detail}")


def _op_text(node: fx.Node) -> str:
    t = node.target
    return f"{t}()" if isinstance(t, str) else f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}()"


def capture(model: nn.Module, in_shape: tuple[int, int, int], mean: list[float], std: list[float]) -> Graph:
    """The float graph of `model` for images of `in_shape`, normalized by mean and std per channel."""
    gm = _traced(model, in_shape, False)
    try:
        return _Builder(gm, in_shape, mean, std).build()
    except UserError:  # once more with the source lines, which the message names
        return _Builder(_traced(model, in_shape, True), in_shape, mean, std).build()


def _traced(model: nn.Module, in_shape: tuple[int, int, int], stack_traces: bool) -> fx.GraphModule:
    """The model's fx graph with every value's shape."""
    was_training = model.training
    model.eval()
    try:
        gm = fx.GraphModule(model, _Tracer(stack_traces).trace(model))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(
            f"--model: torch.fx can't trace the model's forward ({type(e).__name__}: {first}); potq needs a "
            "forward without data-dependent control flow"
        ) from None
    finally:
        model.train(was_training)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(2, *in_shape))
    except Exception as e:
        shape = tuple(in_shape)
        raise UserError(f"--model: the model does not run on input {shape}: {type(e).__name__}: {e}") from None
    return gm


class _Builder:
    def __init__(self, gm: fx.GraphModule, in_shape, mean, std):
        self.gm, self.modules = gm, dict(gm.named_modules())
        self.in_shape, self.mean, self.std = tuple(in_shape), list(mean), list(std)
        self.nodes: list[Node] = []
        self.value: dict[fx.Node, str] = {}  # fx node -> the potq value it computes
        self.shapes: dict[str, tuple[int, ...]] = {IMAGE: self.in_shape}
        self.made_by: dict[str, Node] = {}

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def add(self, fx_node: fx.Node, op: OpType, inputs: list[fx.Node], attrs=None, tensors=None) -> None:
        name = _name(fx_node)
        while name in self.shapes:  # a module called twice: its second node needs its own value name
            name += "_"
        n = Node(name, op, [self.input_value(i) for i in inputs], name, attrs or {}, tensors or {})
        self.nodes.append(n)
        self.shapes[name] = self.shape(fx_node)[1:]
        self.value[fx_node] = name
        self.made_by[name] = n

    def input_value(self, node) -> str:
        if not isinstance(node, fx.Node) or node not in self.value:
            raise UserError(f"--model: an operation takes {node!r} where potq expects a tensor of the network")
        return self.value[node]

    def build(self) -> Graph:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.value:
                    raise _unsupported(node, "a second input", "potq models take one image tensor")
                self.nodes.append(Node("input", OpType.INPUT, [IMAGE], "input", {"mean": self.mean, "std": self.std}))
                self.shapes["input"] = self.in_shape
                self.value[node] = "input"
                self.made_by["input"] = self.nodes[-1]
            elif node.op == "output":
                output = node.args[0]
                if not isinstance(output, fx.Node) or output not in self.value:
                    raise _unsupported(node, "an output that is not one tensor", "the model must return the logits")
            elif node.op == "get_attr":
                raise _unsupported(node, f"a parameter used directly ({node.target})")
            elif self.shape(node) is None:
                continue  # x.size(0), x.shape and the like: not tensors of the network
            elif node.op == "call_module":
                self.module(node, self.modules[node.target])
            elif node.op == "call_function":
                self.function(node)
            else:
                self.method(node)
        graph = Graph(self.nodes, self.shapes, IMAGE, self.value[output])
        unused = [n.name for n in self.nodes if n.output != graph.output and not graph.consumers(n.output)]
        if unused:
            raise UserError(f"--model: the output of {unused[0]} is never used")
        graph.check()
        return graph

    # ---- modules -------------------------------------------------------------------------------

    def module(self, node: fx.Node, m: nn.Module) -> None:
        x = node.args[0] if node.args else None
        if isinstance(m, nn.Conv2d):
            self.conv(node, m)
        elif isinstance(m, nn.BatchNorm2d):
            self.fold(node, m)
        elif isinstance(m, nn.ReLU):
            self.fuse(node, 0.0, INF)
        elif isinstance(m, nn.ReLU6):
            self.fuse(node, 0.0, 6.0)
        elif isinstance(m, nn.Hardtanh) and m.min_val == 0:
            self.fuse(node, 0.0, float(m.max_val))
        elif isinstance(m, nn.Linear):
            w = m.weight.detach().double()
            b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_features, dtype=torch.float64)
            self.add(node, OpType.LINEAR, [x], {}, {"weight": w, "bias": b})
        elif isinstance(m, nn.MaxPool2d):
            self.maxpool(node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        elif isinstance(m, nn.AvgPool2d):
            self.avgpool(node, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self.adaptive(node, m.output_size)
        elif isinstance(m, nn.Flatten):
            self.flatten(node)
        elif isinstance(m, NOOP_MODULES):
            self.value[node] = self.input_value(x)
        else:
            raise _unsupported(node, f"module {type(m).__name__}")

    def conv(self, node: fx.Node, m: nn.Conv2d) -> None:
        if pair(m.dilation) != (1, 1):
            raise _unsupported(node, "Conv2d with dilation", "potq convolutions have dilation 1")
        if m.padding_mode != "zeros":
            raise _unsupported(node, f"Conv2d padding_mode={m.padding_mode!r}", "potq pads with zeros")
        kernel = pair(m.kernel_size)
        padding = m.padding
        if isinstance(padding, str):  # 'valid', or 'same' at stride 1 with an odd kernel
            if padding == "same" and any(k % 2 == 0 for k in kernel):
                raise _unsupported(node, "Conv2d padding='same' with an even kernel")
            padding = (kernel[0] // 2, kernel[1] // 2) if padding == "same" else (0, 0)
        w = m.weight.detach().double()
        b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_channels, dtype=torch.float64)
        attrs = {
            "kernel": list(kernel),
            "stride": list(pair(m.stride)),
            "padding": list(pair(padding)),
            "groups": m.groups,
        }
        self.add(node, OpType.CONV, [node.args[0]], attrs, {"weight": w, "bias": b})

    def _sole_producer(self, node: fx.Node, ops: tuple[OpType, ...], what: str) -> Node:
        """The potq node that makes node's input, if it is of `ops` and node is its only user."""
        src = node.args[0]
        producer = self.made_by.get(self.input_value(src))
        if producer is None or producer.op not in ops or len(src.users) != 1:
            kind = producer.op.value if producer else "?"
            raise _unsupported(
                node,
                what,
                f"potq fuses it into the {'/'.join(o.value for o in ops)} that feeds only it "
                f"(here it follows a {kind} node)",
            )
        return producer

    def fold(self, node: fx.Node, bn: nn.BatchNorm2d) -> None:
        """bn(conv(x)) as one convolution, with the running statistics (eval mode)."""
        conv = self._sole_producer(node, (OpType.CONV,), "BatchNorm2d")
        if conv.act is not None or bn.running_var is None:
            raise _unsupported(node, "BatchNorm2d", "it must directly follow a convolution and track running stats")
        factor = (bn.weight.detach().double() if bn.weight is not None else 1.0) / torch.sqrt(
            bn.running_var.double() + bn.eps
        )
        shift = bn.bias.detach().double() if bn.bias is not None else 0.0
        conv.tensors["weight"] = conv.tensors["weight"] * factor.view(-1, 1, 1, 1)
        conv.tensors["bias"] = (conv.tensors["bias"] - bn.running_mean.double()) * factor + shift
        self.value[node] = conv.output

    def fuse(self, node: fx.Node, lo: float, hi: float) -> None:
        if not lo == 0.0 or not hi > 0:
            raise _unsupported(node, f"a clamp to [{lo}, {hi}]", "potq fuses clamps with a lower bound of 0")
        producer = self._sole_producer(node, RELU_FUSING_OPS, "ReLU")
        old = producer.act or (0.0, INF)
        producer.attrs["act"] = [max(lo, old[0]), min(hi, old[1])]
        self.value[node] = producer.output

    def maxpool(self, node, kernel, stride, padding, dilation, ceil_mode) -> None:
        if ceil_mode or pair(dilation) != (1, 1):
            raise _unsupported(node, "max pooling with ceil_mode or dilation")
        attrs = {
            "kernel": list(pair(kernel)),
            "stride": list(pair(stride or kernel)),
            "padding": list(pair(padding)),
        }
        self.add(node, OpType.MAXPOOL, [node.args[0]], attrs)

    def avgpool(self, node, kernel, stride, padding, ceil_mode, count_include_pad, divisor) -> None:
        if ceil_mode or divisor is not None or (not count_include_pad and pair(padding) != (0, 0)):
            raise _unsupported(
                node,
                "average pooling with ceil_mode, divisor_override or count_include_pad=False",
                "potq divides every window by its full size",
            )
        attrs = {
            "kernel": list(pair(kernel)),
            "stride": list(pair(stride or kernel)),
            "padding": list(pair(padding)),
        }
        self.add(node, OpType.AVGPOOL, [node.args[0]], attrs)

    def adaptive(self, node, output_size) -> None:
        if pair(output_size) != (1, 1):
            raise _unsupported(node, f"adaptive average pooling to {output_size}", "potq pools globally, to 1x1")
        _, h, w = self.shapes[self.input_value(node.args[0])]
        self.add(node, OpType.AVGPOOL, [node.args[0]], {"kernel": [h, w], "stride": [h, w], "padding": [0, 0]})

    def flatten(self, node) -> None:
        src = self.input_value(node.args[0])
        in_shape, out = self.shapes[src], self.shape(node)
        if out[1:] == in_shape:  # a reshape that changes nothing
            self.value[node] = src
        elif len(in_shape) == 3 and len(out) == 2:
            self.add(node, OpType.FLATTEN, [node.args[0]])
        else:
            raise _unsupported(node, f"a reshape of {in_shape} to {out[1:]}", "potq flattens (N, C, H, W) to (N, -1)")

    def global_mean(self, node, dims, keepdim) -> None:
        dims = sorted(d % 4 for d in ([dims] if isinstance(dims, int) else dims))
        if dims != [2, 3]:
            raise _unsupported(node, f"mean over dims {dims}", "potq averages over H and W only")
        x = node.args[0]
        _, h, w = self.shapes[self.input_value(x)]
        self.add(node, OpType.AVGPOOL, [x], {"kernel": [h, w], "stride": [h, w], "padding": [0, 0]})
        if not keepdim:
            pooled = self.value[node]
            name = pooled + ".flatten"
            self.nodes.append(Node(name, OpType.FLATTEN, [pooled], name))
            self.shapes[pooled] = (self.shapes[pooled][0], 1, 1)
            self.shapes[name] = (self.shapes[pooled][0],)
            self.value[node] = name
            self.made_by[name] = self.nodes[-1]

    def binary_add(self, node, args, kwargs) -> None:
        if len(args) != 2 or not all(isinstance(a, fx.Node) for a in args) or kwargs.get("alpha", 1) != 1:
            raise _unsupported(node, "an addition that is not tensor + tensor")
        self.add(node, OpType.ADD, list(args))

    # ---- functions and methods ---------------------------------------------------------------------

    def function(self, node: fx.Node) -> None:
        f, args, kw = node.target, node.args, node.kwargs
        if f in ADD_FUNCS:
            self.binary_add(node, args, kw)
        elif f in (torch.relu, F.relu, torch.relu_):
            self.fuse(node, 0.0, INF)
        elif f is F.relu6:
            self.fuse(node, 0.0, 6.0)
        elif f is F.hardtanh:
            self.fuse(
                node,
                float(args[1] if len(args) > 1 else kw.get("min_val", -1.0)),
                float(args[2] if len(args) > 2 else kw.get("max_val", 1.0)),
            )
        elif f in (torch.clamp, torch.clip, torch.clamp_min):
            self.clamp(node, args[1:], kw)
        elif f in FLATTEN_FUNCS:
            self.flatten(node)
        elif f in CAT_FUNCS:
            tensors, dim = args[0], args[1] if len(args) > 1 else kw.get("dim", 0)
            if dim % 4 != 1:
                raise _unsupported(node, f"torch.cat on dim {dim}", "potq concatenates channels (dim 1)")
            self.add(node, OpType.CONCAT, list(tensors))
        elif f is F.max_pool2d:
            p = _call_args(
                args[1:], kw, ("kernel_size", "stride", "padding", "dilation", "ceil_mode"), (None, None, 0, 1, False)
            )
            self.maxpool(node, *p)
        elif f is F.avg_pool2d:
            p = _call_args(
                args[1:],
                kw,
                ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
                (None, None, 0, False, True, None),
            )
            self.avgpool(node, *p)
        elif f is F.adaptive_avg_pool2d:
            self.adaptive(node, args[1] if len(args) > 1 else kw["output_size"])
        elif f is torch.mean:
            self.global_mean(node, args[1] if len(args) > 1 else kw.get("dim"), kw.get("keepdim", False))
        elif f in NOOP_FUNCS:
            self.value[node] = self.input_value(args[0])
        else:
            raise _unsupported(node, f"function {_op_text(node)}")

    def clamp(self, node, bounds, kw) -> None:
        lo = bounds[0] if bounds else kw.get("min")
        hi = bounds[1] if len(bounds) > 1 else kw.get("max")
        self.fuse(node, float(lo) if lo is not None else -INF, float(hi) if hi is not None else INF)

    def method(self, node: fx.Node) -> None:
        m, args, kw = node.target, node.args, node.kwargs
        if m in ("add", "add_", "__add__", "__iadd__"):
            self.binary_add(node, args, kw)
        elif m in ("relu", "relu_"):
            self.fuse(node, 0.0, INF)
        elif m in ("clamp", "clamp_", "clip", "clamp_min", "clamp_min_"):
            self.clamp(node, args[1:], kw)
        elif m in ("view", "reshape", "flatten"):
            self.flatten(node)
        elif m == "mean":
            self.global_mean(node, args[1] if len(args) > 1 else kw.get("dim"), kw.get("keepdim", False))
        elif m in NOOP_METHODS:
            self.value[node] = self.input_value(args[0])
        else:
            raise _unsupported(node, f"method .{m}()")


def _call_args(args, kwargs, names, defaults) -> list:
    values = list(args) + [None] * (len(names) - len(args))
    return [kwargs.get(n, v if v is not None else d) for n, v, d in zip(names, values, defaults, strict=True)]
