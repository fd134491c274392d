"""The model zoo (a registry, one entry per model) and the loader of users' own models.

`build_model(spec, in_shape, classes)` takes a zoo name or the user's own model:
- `path/to/file.py:factory` or `package.module:factory`, where `factory(in_shape, classes)` gets the
  input shape (C, H, W) and the number of classes, or `factory()` takes no arguments (then the model
  must already fit the data). It returns an `nn.Module`.

The zoo: the reference lab's sequential `seed` family (layer table of the reference report exactly),
the CIFAR ResNets of He et al. 2016 (option B: 1x1 projection shortcuts where the shape changes)
and a MobileNet-style depthwise-separable net. Every one is captured into potq's integer graph
(potq.ir.capture), so any stage takes any of them, and any user model built from the same ops.

A user's file that raises or calls sys.exit at import or in its factory is one line naming the file and
what happened (exit 2), never potq ending with the user's status and no word; Ctrl-C still interrupts.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from potq.errors import UserError

Shape = tuple[int, int, int]
# compact image classifiers: far beyond these, building the model only fails to allocate memory
MAX_CHANNELS, MAX_PIXELS, MAX_CLASSES = 1024, 4096 * 4096, 100_000
MAX_PARAMS = 100_000_000  # 400 MB of float32: the zoo's nets have 0.07-2.7 million


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[Shape, int], nn.Module]
    note: str


ZOO: dict[str, ZooEntry] = {}


def register(name: str, note: str):
    """Decorator: add a factory(in_shape, classes) to the zoo under `name`."""

    def add(factory: Callable[[Shape, int], nn.Module]):
        ZOO[name] = ZooEntry(factory, note)
        return factory

    return add


# ---- the seed family: Conv-BN-ReLU(-MaxPool) blocks, flatten, Linear layers ---------------------


@dataclass(frozen=True)
class Design:
    channels: tuple[int, ...]  # output channels of each conv block
    pools: tuple[int, ...]  # indices of the conv blocks followed by a 2x2 max pool
    hidden: tuple[int, ...]  # hidden widths of the classifier


class ConvNet(nn.Module):
    """`features` then a flatten in `forward` (no Flatten module, so the layer table matches the
    reference report) then `classifier`."""

    def __init__(self, design: Design, in_shape: Shape = (3, 32, 32), classes: int = 10):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for i, out in enumerate(design.channels):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if i in design.pools:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        if h < 1 or w < 1:
            raise UserError(f"input {in_shape} is too small for {len(design.pools)} max pools")
        self.features = nn.Sequential(*layers)
        fc: list[nn.Module] = []
        width = c * h * w
        for hidden in design.hidden:
            fc += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        fc.append(nn.Linear(width, classes))
        self.classifier = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


SEED_FAMILY = {
    "seed": (
        Design((32, 64, 128, 128, 128), (0, 1, 4), (128, 64)),
        "the reference lab's net: 5 conv blocks, FC 2048-128-64-10, 660,554 params on CIFAR-10",
    ),
    "seed-wide": (
        Design((64, 128, 256, 256, 256), (0, 1, 4), (256,)),
        "seed with doubled channels and one hidden FC layer: more accuracy for about 4x the params",
    ),
    "seed-slim": (
        Design((16, 32, 64, 64, 64), (0, 1, 4), (64,)),
        "seed at half width: about a quarter of the params, for small accelerators",
    ),
    "tiny": (Design((8, 16), (0, 1), (16,)), "a two-block net for tests and smoke runs"),
}
for _name, (_design, _note) in SEED_FAMILY.items():
    register(_name, _note)(lambda in_shape, classes, d=_design: ConvNet(d, in_shape, classes))


# ---- CIFAR ResNets (He et al. 2016, section 4.2) -------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # option B: a 1x1 projection where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """6n+2 layers: a 3x3 stem, 3 stages of n blocks (16, 32, 64 channels, stride 2 between stages),
    global average pooling, one Linear layer."""

    def __init__(self, n: int, in_shape: Shape = (3, 32, 32), classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, c = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(
                nn.Sequential(*[BasicBlock(c if i == 0 else width, width, stride if i == 0 else 1) for i in range(n)])
            )
            c = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


for _n, _depth, _params in ((3, 20, "0.27M"), (5, 32, "0.46M"), (7, 44, "0.66M")):
    register(f"resnet{_depth}", f"CIFAR ResNet-{_depth} (He et al. 2016), about {_params} params")(
        lambda in_shape, classes, n=_n: CifarResNet(n, in_shape, classes)
    )


# ---- a MobileNet-style net -------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class MobileNetCifar(nn.Module):
    """A 3x3 stem, then depthwise 3x3 + pointwise 1x1 blocks (stride-2 depthwise where it downsamples,
    32 -> 16 -> 8), global average pooling over 8x8 = 2^6 values, one Linear layer."""

    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (256, 1), (512, 1))

    def __init__(self, in_shape: Shape = (3, 32, 32), classes: int = 10):
        super().__init__()
        layers, c = [_conv_bn_relu(in_shape[0], 32, 3, 1)], 32
        for width, stride in self.BLOCKS:
            layers += [_conv_bn_relu(c, c, 3, stride, groups=c), _conv_bn_relu(c, width, 1, 1)]
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


register("mobilenet-cifar", "depthwise-separable blocks, global average pooling, about 0.4M params")(MobileNetCifar)


# ---- building: zoo names and users' factories ------------------------------------------------------


def build_model(spec: str, in_shape: Shape = (3, 32, 32), classes: int = 10) -> nn.Module:
    """A zoo model by name, or the user's `file.py:factory` / `package.module:factory`."""
    if not 2 <= classes <= MAX_CLASSES:
        raise UserError(f"--classes must be from 2 to {MAX_CLASSES:,}, got {classes}")
    if spec in ZOO:
        _check_zoo_size(spec, tuple(in_shape), classes)
        return ZOO[spec].factory(tuple(in_shape), classes)
    if ":" not in spec:
        raise UserError(
            f"--model {spec}: not a zoo model ({', '.join(ZOO)}) nor file.py:factory or package.module:factory"
        )
    factory = load_factory(spec)
    try:
        params = [p for p in inspect.signature(factory).parameters.values() if p.default is inspect.Parameter.empty]
        model = factory(tuple(in_shape), classes) if params else factory()
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as e:  # the user's code: SystemExit included, which must not end potq silently
        raise _user_code_error(spec, "the factory", e) from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec}: the factory returned a {type(model).__name__}, not an nn.Module")
    return model


def _check_zoo_size(spec: str, in_shape: Shape, classes: int) -> None:
    """A zoo model whose size grows with the input (seed's flatten) is counted on the meta device first:
    seed at 3x4096x4096 would be 4.3 billion parameters, tens of GB before any error."""
    with torch.device("meta"):
        params = sum(p.numel() for p in ZOO[spec].factory(in_shape, classes).parameters())
    if params > MAX_PARAMS:
        shape = ",".join(map(str, in_shape))
        raise UserError(
            f"model {spec} on inputs of {shape} would have {params:,} parameters ({4 * params / 1e9:.1f} GB); "
            f"potq is for compact classifiers (at most {MAX_PARAMS:,}): use smaller images"
        )


def source_file(spec: str) -> Path | None:
    """The file a user's model is defined in (a run fingerprints it); None for a zoo model."""
    if spec in ZOO or ":" not in spec:
        return None
    where = spec.rpartition(":")[0]
    if where.endswith(".py") or Path(where).is_file():
        return Path(where)
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin and Path(found.origin).is_file() else None


def source_digest(spec: str) -> str | None:
    """The user's model code's fingerprint (None for a zoo model): what a run's weights were trained from. The
    SHA-256 of the model's file where it imports no module of the user's (so a run of potq 0.4 still matches),
    else of every such module's name and content (source_modules): a helper module edited is a changed model."""
    from potq.files import file_digest

    path = source_file(spec)
    if path is None:
        return None
    modules = source_modules(path, spec.rpartition(":")[0])
    if len(modules) == 1:
        return file_digest(path)
    h = hashlib.sha256()
    for name, file in sorted(modules.items()):
        h.update(f"{name}\0{file_digest(file)}\n".encode())
    return h.hexdigest()


MAX_SOURCE_MODULES = 1000  # a model's own code: a bound, not a limit anyone should meet


def source_modules(path: Path, where: str) -> dict[str, Path]:
    """The model's file (as "") and every module of the user's that it imports, directly or through another
    such module, by name: found statically (each file's import statements, resolved on sys.path without
    running anything), so the list is the same in every process. A module of the user's: a .py file outside
    the standard library, the installed packages and potq itself."""
    if where.endswith(".py") or Path(where).is_file():
        package = ""  # a file loaded by its path: no package, no relative imports
    else:
        package = where if path.name == "__init__.py" else where.rpartition(".")[0]
    found: dict[str, Path] = {"": path}
    todo = [(path, package)]
    while todo and len(found) < MAX_SOURCE_MODULES:
        file, pkg = todo.pop()
        for name in _imported_names(file, pkg):
            if name in found:
                continue
            origin = _module_file(name)
            if origin is not None and _users(origin):
                found[name] = origin
                todo.append((origin, name if origin.name == "__init__.py" else name.rpartition(".")[0]))
    return found


def _imported_names(file: Path, package: str) -> list[str]:
    """Every module an `import` or `from ... import` in `file` may load (each package on the way, and the
    names imported from a package, which may be its submodules); relative imports resolved in `package`."""
    try:
        tree = ast.parse(file.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []  # importing it reports the error itself
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            subs: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            if base is None:
                continue
            bases, subs = ([base] if base else []), [f"{base}.{a.name}" if base else a.name for a in node.names]
        else:
            continue
        for name in bases:
            parts = name.split(".")
            names += [".".join(parts[: i + 1]) for i in range(len(parts))]
        names += subs
    return names


def _absolute(module: str, level: int, package: str) -> str | None:
    """`from ..x import y`'s module as an absolute name; None where it reaches above `package`."""
    if not level:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or not package:
        return None
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module and base else base or module


def _module_file(name: str) -> Path | None:
    """The file of module `name` as an import would find it on sys.path, without importing anything."""
    from importlib.machinery import PathFinder

    search, origin, parts = None, None, name.split(".")
    for i in range(len(parts)):
        try:
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        origin, search = spec.origin, spec.submodule_search_locations
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _users(file: Path) -> bool:
    """A module of the user's: not in the standard library, an installed package's or potq's own."""
    import sysconfig

    file = file.resolve()
    if {"site-packages", "dist-packages"} & set(file.parts):
        return False
    system = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")] + [str(Path(__file__).parent)]
    return not any(file.is_relative_to(Path(p).resolve()) for p in system)


def load_factory(spec: str) -> Callable:
    where, _, name = spec.rpartition(":")
    if where.endswith(".py") or Path(where).is_file():
        path = Path(where)
        if not path.is_file():
            raise UserError(f"--model {spec}: no such file {where}")
        module_name = f"potq_user_model_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
        sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
        try:
            loader.loader.exec_module(module)  # type: ignore[union-attr]
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            sys.modules.pop(module_name, None)
            raise _user_code_error(spec, f"importing {where}", e) from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise UserError(f"--model {spec}: can't import {where}: {type(e).__name__}: {e}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            raise _user_code_error(spec, f"importing {where}", e) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"--model {spec}: {where} has no function {name!r}")
    return factory


def _user_code_error(spec: str, doing: str, e: BaseException) -> UserError:
    """One line for whatever the user's code raised: an exception by type and text; a sys.exit (which
    would otherwise end potq with the user's status and no word) named as such."""
    if isinstance(e, SystemExit):
        return UserError(f"--model {spec}: {doing} called sys.exit({e.code!r}); a model file must not exit")
    return UserError(f"--model {spec}: {doing} failed: {type(e).__name__}: {e}")


def check_model(spec: str) -> None:
    """Fail early, with one line, on a model that can't be found (before data is loaded)."""
    if spec not in ZOO:
        if ":" not in spec:
            build_model(spec)  # raises the message naming the zoo
        load_factory(spec)


def model_spec(spec: str) -> str:
    """What a run folder records: a zoo name as it is, a user's file as an absolute path."""
    where, sep, name = spec.rpartition(":")
    if spec in ZOO or not sep or not (where.endswith(".py") or Path(where).is_file()):
        return spec
    return f"{Path(where).resolve()}:{name}"


def parse_shape(text: str) -> Shape:
    """'3,32,32' -> (3, 32, 32), for --input."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--input must be three positive integers C,H,W, got {text!r}")
    if shape[0] > MAX_CHANNELS or shape[1] * shape[2] > MAX_PIXELS:
        raise UserError(f"--input {text}: larger than potq handles ({MAX_CHANNELS} channels, {MAX_PIXELS:,} pixels)")
    return shape  # type: ignore[return-value]
