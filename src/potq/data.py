"""The data path: CIFAR-10 (official archive), image folders (plain or .tar.gz), Fashion-MNIST IDX.

Every source is decoded once into uint8 arrays (N, C, H, W) and cached as .npy files, so a second
load is a memory map away. Augmentation (random crop with padding, horizontal flip) runs on whole
batches as tensor operations.

What a load promises, cache hit or not (tests/test_data.py): the arrays pass `check_dataset` (a cache
entry that fails it is decoded again from the source, since a cache holds nothing the source does not);
a cache that can't be written costs speed only (one warning line); no file, archive member or image is
read or decoded beyond MAX_MEMBER_BYTES and MAX_IMAGE_PIXELS, both checked from sizes declared before
the bytes are read (a tar header, a file's size, an image header), so a bomb costs no memory.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import pickle
import shutil
import stat
import sys
import tarfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from potq.errors import UserError, one_line
from potq.files import atomic_write, save_text

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FMNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
CACHE_VERSION = "1"
MAX_IMAGE_PIXELS = 4096 * 4096  # compact classifiers take small images; a larger one is refused, not decoded
# any one file read whole: a CIFAR-10 batch is 31 MB, Fashion-MNIST's training images 47 MB, an image far less
MAX_MEMBER_BYTES = 64 << 20


@dataclass
class Dataset:
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @cached_property
    def digest(self) -> str:
        """The content's fingerprint (SHA-256 of the images, labels and class names; never the path): a
        run records the data it was made from, and a later load of other data is refused or redone. About
        0.2 s for CIFAR-10's 184 MB."""
        h = hashlib.sha256()
        for array in (self.train_x, self.train_y, self.test_x, self.test_y):
            array = np.ascontiguousarray(array)
            h.update(f"{array.dtype.str}{array.shape}".encode())
            h.update(memoryview(array).cast("B"))
        h.update("\n".join(self.classes).encode())
        return h.hexdigest()


def default_cache_dir() -> Path:
    """$POTQ_CACHE, else ~/.cache/potq. An empty POTQ_CACHE is a mistake (it would mean the current
    folder), not a request for the default."""
    value = os.environ.get("POTQ_CACHE")
    if value is None:
        return Path.home() / ".cache" / "potq"
    if not value.strip():
        raise UserError("POTQ_CACHE is set but empty; unset it or name a folder for potq's data cache")
    return Path(value)


def cache_folder(cache_dir: Path | None) -> Path:
    """The cache folder: --cache, else default_cache_dir(); one that is a file is one line naming it."""
    where = f"--cache {cache_dir}" if cache_dir else None
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"{where or f'POTQ_CACHE={cache_dir}'}: is a file, not a folder for potq's data cache")
    return cache_dir


def load_dataset(
    spec: str, cache_dir: Path | None = None, classes: list[str] | None = None, digest: str | None = None
) -> Dataset:
    """`spec` is 'cifar10', or a path to a CIFAR-10 archive or folder, an image folder (or its .tar.gz),
    or a folder of Fashion-MNIST IDX files. `classes`, `digest`: the class list and the content's
    fingerprint (Dataset.digest) that a run recorded, which the data's must equal."""
    cache_dir = cache_folder(cache_dir)
    if spec == "cifar10":
        path = download(CIFAR10_URL, cache_dir / "cifar-10-python.tar.gz", CIFAR10_MD5)
    else:
        path = Path(spec)
        if not path.exists():
            raise UserError(f"--data {spec}: no such file or directory")
    path = path.resolve()
    key = _cache_key(path)
    data = _read_cache(cache_dir / key, spec)
    if data is None:
        data = _decode(path)
        check_dataset(data, spec)
        _write_cache(cache_dir / key, data)
    if classes:
        check_classes(data, classes)
    check_digest(data, digest)
    return data


def check_dataset(ds: Dataset, spec: str) -> None:
    """Images (N, C, H, W) with one label each, every label a class: else one line naming the data."""
    for split, x, y in (("training", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        if x.ndim != 4 or y.ndim != 1:
            raise UserError(f"--data {spec}: {split} images must be (N, C, H, W) with labels (N,), got {x.shape}")
        if x.dtype != np.uint8 or y.dtype.kind not in "iu":
            raise UserError(
                f"--data {spec}: {split} images must be uint8 with integer labels, got {x.dtype}, {y.dtype}"
            )
        if len(x) != len(y):
            raise UserError(f"--data {spec}: {len(x)} {split} images but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(ds.classes)):
            raise UserError(
                f"--data {spec}: {split} labels run from {int(y.min())} to {int(y.max())}, "
                f"but there are {len(ds.classes)} classes"
            )
    if ds.train_x.shape[1:] != ds.test_x.shape[1:]:
        raise UserError(f"--data {spec}: training and test images differ in shape")


def _names(classes: list[str]) -> str:
    shown = ", ".join(classes[:8])
    return shown if len(classes) <= 8 else f"{shown}, ... ({len(classes)} in all)"


def check_classes(ds: Dataset, expected: list[str]) -> None:
    """The data's class list is the one a run was trained on, names and order: label k must mean the
    same class to the model and to the data."""
    if list(ds.classes) != list(expected):
        raise UserError(
            f"--data {ds.source}: classes {_names(ds.classes)}, but the run was trained on {_names(expected)}"
        )


def check_digest(ds: Dataset, digest: str | None) -> None:
    """The data's content is the one a run recorded (Dataset.digest; None: a run of potq 0.3 recorded none)."""
    if digest and ds.digest != digest:
        raise UserError(
            f"--data {ds.source}: not the data the run was made from (its content changed: fingerprint "
            f"{ds.digest[:12]}, the run's {digest[:12]}); give the run's data, or train anew"
        )


# ---- download -------------------------------------------------------------------------------


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str) -> Path:
    """Fetch `url` into `dest` unless a file with the right MD5 is already there."""
    if dest.exists() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not download {url}: {e}; pass --data PATH to a local copy") from None
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink()
        raise UserError(f"{url}: MD5 mismatch (got {got}, expected {md5}); the download is corrupt")
    os.replace(tmp, dest)
    return dest


# ---- decoding -------------------------------------------------------------------------------


def _decode(path: Path) -> Dataset:
    try:
        if path.is_dir():
            return _decode_dir(path)
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                return _decode_tar(tar, path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UserError(f"--data {path}: corrupt or truncated archive ({e})") from None
    raise UserError(f"--data {path}: not a folder or a .tar.gz archive")


def _check_size(size: int, name: str) -> None:
    """Refuse, from its declared size and before a byte is read, a file potq would read whole."""
    if size > MAX_MEMBER_BYTES:
        raise UserError(
            f"{name}: {size / 2**20:.1f} MB, more than potq reads as one file ({MAX_MEMBER_BYTES >> 20} MB); "
            "is it really part of a small-image dataset?"
        )


def _file_reader(p: Path):
    def read() -> bytes:
        _check_size(p.stat().st_size, str(p))
        return p.read_bytes()

    return read


def _member_reader(tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path):
    def read() -> bytes:
        _check_size(m.size, f"{path}:{m.name}")
        return tar.extractfile(m).read(MAX_MEMBER_BYTES)  # type: ignore[union-attr]

    return read


def _decode_dir(path: Path) -> Dataset:
    if (path / CIFAR10_DIR).is_dir():
        path = path / CIFAR10_DIR
    if (path / "data_batch_1").exists():
        return _cifar_from_files({p.name: _file_reader(p) for p in path.iterdir() if p.is_file()}, path)
    if any((path / f).exists() or (path / (f + ".gz")).exists() for f in FMNIST_FILES.values()):
        return _fashion_mnist(path)
    if (path / "train").is_dir() and (path / "test").is_dir():
        files = {
            split: [(p.parent.name, _file_reader(p), str(p)) for p in sorted((path / split).glob("*/*"), key=_order)]
            for split in ("train", "test")
        }
        return _image_folder(files, path)
    raise UserError(
        f"--data {path}: not a CIFAR-10 folder, an image folder with train/ and test/, or Fashion-MNIST IDX files"
    )


def _order(path: Path | str) -> tuple[str, ...]:
    """The one order of an image folder's files, plain or archived: by their path's parts, so by class folder
    name (the labels' order), then by file name, both in code-point order (`B` before `a`, `img10.png` before
    `img2.png`). Test image k (`vectors.test_indices`, the draws of --test-limit) is the k-th in it. Parts, not
    the whole string: an archive sorted by its member names would put `cat-big/` before `cat/`."""
    return Path(path).parts


def _decode_tar(tar: tarfile.TarFile, path: Path) -> Dataset:
    members = [m for m in tar.getmembers() if m.isfile()]
    names = {m.name: m for m in members}
    batches = {Path(n).name: m for n, m in names.items() if Path(n).parent.name == CIFAR10_DIR}
    if "data_batch_1" in batches:
        return _cifar_from_files({k: _member_reader(tar, m, path) for k, m in batches.items()}, path)
    files: dict[str, list] = {"train": [], "test": []}
    for m in sorted(members, key=lambda m: _order(m.name)):
        parts = Path(m.name).parts
        if len(parts) >= 3 and parts[-3] in files:
            files[parts[-3]].append((parts[-2], _member_reader(tar, m, path), f"{path}:{m.name}"))
    if not files["train"] or not files["test"]:
        raise UserError(f"--data {path}: archive holds neither CIFAR-10 batches nor train/<class>/ and test/<class>/")
    return _image_folder(files, path)


class _ArrayUnpickler(pickle.Unpickler):
    """Accepts only what CIFAR-10 batches hold: dicts, lists, bytes, numbers and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain arrays are allowed")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        if name == "encode":
            return codecs.encode
        return getattr(np, name)


def safe_unpickle(raw: bytes) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise UserError(f"bad CIFAR-10 batch: {e}") from None
    if not isinstance(obj, dict):
        raise UserError("bad CIFAR-10 batch: not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_from_files(read: dict, path: Path) -> Dataset:
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in read:
            raise UserError(f"--data {path}: CIFAR-10 batch {name} is missing")
        try:
            d = safe_unpickle(read[name]())
        except UserError as e:
            raise UserError(f"--data {path}: {name}: {e}") from None
        x = np.asarray(d.get("data"), dtype=np.uint8)
        y = np.asarray(d.get("labels"), dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise UserError(f"--data {path}: {name} does not hold 3x32x32 images with labels")
        return x.reshape(-1, 3, 32, 32), y

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    classes = [str(i) for i in range(10)]
    if "batches.meta" in read:
        meta = safe_unpickle(read["batches.meta"]())
        names = meta.get("label_names", [])
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names] or classes
    return Dataset(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        classes,
        str(path),
    )


def _image_folder(files: dict[str, list], path: Path) -> Dataset:
    classes = sorted({c for c, _, _ in files["train"]})
    if not classes:
        raise UserError(f"--data {path}: train/ holds no class folders with images")
    unknown = sorted({c for c, _, _ in files["test"]} - set(classes))
    if unknown:
        raise UserError(f"--data {path}: test/ has classes not in train/: {', '.join(unknown)}")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        images, labels = [], []
        for cls, read, name in files[split]:
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = _open_image(read(), name)
            arr = np.asarray(img.convert("RGB" if img.mode not in ("L", "1") else "L"))
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(index[cls])
        if not images:
            raise UserError(f"--data {path}: {split}/ holds no images")
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise UserError(f"--data {path}: {split}/ images differ in size: {sorted(shapes)[:3]}")
        out.append((np.stack(images).transpose(0, 3, 1, 2).copy(), np.array(labels, dtype=np.int64)))
    (train_x, train_y), (test_x, test_y) = out
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"--data {path}: train and test images differ in shape")
    return Dataset(train_x, train_y, test_x, test_y, classes, str(path))


def _open_image(raw: bytes, name: str) -> Image.Image:
    """Decode one image, its pixel count checked from its header first (PIL reads only the header on
    open); PIL's own bomb warning is silenced, as this check comes first and is stricter."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
        if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:  # known from the header, before decoding
            raise UserError(
                f"{name}: {img.size[0]}x{img.size[1]} pixels, more than potq decodes "
                f"({MAX_IMAGE_PIXELS:,}: is it really part of a small-image dataset?)"
            )
        img.load()
    except Image.DecompressionBombError as e:  # beyond twice PIL's limit, refused by PIL's open itself
        raise UserError(f"{name}: more pixels than potq decodes (PIL: {one_line(e)})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"unreadable image {name}: {e}") from None
    return img


def _read_idx(path: Path) -> np.ndarray:
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and not gz.exists():
        raise UserError(f"--data {path.parent}: missing Fashion-MNIST file {path.name}[.gz]")
    if gz.exists():
        with gzip.open(gz) as f:
            raw = f.read(MAX_MEMBER_BYTES + 1)  # a gzip bomb stops here
        if len(raw) > MAX_MEMBER_BYTES:
            raise UserError(f"{gz}: unpacks to more than {MAX_MEMBER_BYTES >> 20} MB, more than potq reads as one file")
    else:
        raw = _file_reader(path)()
    if len(raw) < 8 or raw[:2] != b"\0\0" or raw[2] != 8:
        raise UserError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(dims))} values)")
    return body.reshape(dims)


def _fashion_mnist(path: Path) -> Dataset:
    arrays = {k: _read_idx(path / f) for k, f in FMNIST_FILES.items()}
    for k, f in FMNIST_FILES.items():
        if arrays[k].ndim != (3 if k.endswith("_x") else 1):
            raise UserError(
                f"{path / f}: an IDX file of shape {arrays[k].shape}; expected (N, H, W) images or (N,) labels"
            )
    return Dataset(
        arrays["train_x"][:, None].copy(),
        arrays["train_y"].astype(np.int64),
        arrays["test_x"][:, None].copy(),
        arrays["test_y"].astype(np.int64),
        FMNIST_CLASSES,
        str(path),
    )


# ---- cache ----------------------------------------------------------------------------------


def _cache_key(path: Path) -> str:
    """What determines the decoded arrays: a file's resolved path and stat, or for a folder those of every
    file in it, reached through symbolic links (a class folder that is a link: an image replaced behind it,
    or the link pointed elsewhere, gives a new key). The stat holds the inode and the change time, which
    no copy or `touch` sets back: a file overwritten in place with the same size and mtime is a new key too."""
    h = hashlib.sha1(f"{CACHE_VERSION}:{path}".encode())
    for rel, real, st in _files_through_links(path):
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
        h.update(f"\n{rel}:{real}:{stamp}".encode())
    return h.hexdigest()[:16]


def _files_through_links(path: Path) -> list[tuple[str, str, os.stat_result]]:
    """(path relative to `path`, resolved path, stat) of every file under `path` (itself, if a file), following
    symbolic links to folders and files, each folder once (a link loop ends there), in sorted order."""
    if not path.is_dir():
        return [("", os.path.realpath(path), path.stat())]
    found, seen = [], set()
    for folder, dirs, names in os.walk(path, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        real_folder = os.path.realpath(folder)  # once per folder: 60,000 images need no 60,000 realpaths
        for name in names:
            f = os.path.join(folder, name)
            try:
                st = os.stat(f)
            except OSError:  # a dangling link: no file, as the decoder sees it
                continue
            if stat.S_ISREG(st.st_mode):
                real = os.path.realpath(f) if os.path.islink(f) else os.path.join(real_folder, name)
                found.append((os.path.relpath(f, path), real, st))
    return sorted(found, key=lambda t: t[0])


def _warn(message: str) -> None:
    print(f"potq: warning: {message}", file=sys.stderr)


DIGEST_FILE = "sha256.txt"  # a cache entry's content fingerprint (Dataset.digest), checked when it is used


def _read_cache(folder: Path, spec: str) -> Dataset | None:
    """A complete cache entry that passes check_dataset and whose arrays are still those written (their
    Dataset.digest the one recorded beside them: an array overwritten in place is not the data), else None
    (decode the source again): a cache entry is derived data, so one that is broken or edited is not the
    user's mistake, only lost speed."""
    done = folder / "classes.txt"
    try:
        if not done.exists():
            return None
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ("train_x", "train_y", "test_x", "test_y")}
        lines = done.read_text().splitlines()
        data = Dataset(**arrays, classes=lines[1:], source=lines[0])
        check_dataset(data, spec)
        recorded = (folder / DIGEST_FILE).read_text().strip() if (folder / DIGEST_FILE).exists() else None
        if recorded is None:  # an entry of potq 0.4 or older: not checkable, made again once
            return None
        if data.digest != recorded:
            raise UserError("its arrays are not those written there (changed since)")
    except (OSError, ValueError, IndexError, UserError) as e:
        _warn(f"cache entry {folder} is unreadable or fails its check ({one_line(e)}); decoding --data again")
        return None
    return data


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a temporary name
        np.save(f, array)


def _write_cache(folder: Path, data: Dataset) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for k in ("train_x", "train_y", "test_x", "test_y"):  # atomic: torchrun's ranks may race here
            atomic_write(folder / f"{k}.npy", lambda tmp, k=k: _save_npy(tmp, getattr(data, k)))
        save_text(data.digest + "\n", folder / DIGEST_FILE)  # what _read_cache checks the arrays against
        # written last: its presence marks a complete cache entry
        save_text("\n".join([data.source, *data.classes]), folder / "classes.txt")
    except (OSError, UserError) as e:  # a full or read-only cache only costs speed
        cause = e if isinstance(e, OSError) else e.__context__  # atomic_write's UserError wraps the OSError
        reason = (cause.strerror or one_line(cause)) if isinstance(cause, OSError) else one_line(e)
        _warn(f"data cache {folder}: can't write it ({reason}); going on without it, which costs only speed")
        if not (folder / "classes.txt").exists():  # an incomplete entry: give its space back
            shutil.rmtree(folder, ignore_errors=True)


# ---- splits and batches ---------------------------------------------------------------------


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of range(n): (train indices, validation indices), both in shuffled order,
    so that the first N training images (--train-limit) hold every class."""
    if not 0 <= val_size < n:
        raise UserError(f"--val-size must be in [0, {n - 1}], got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for i in range(0, len(x), 4096):  # in chunks: a float copy of 50,000 images is over a gigabyte
        chunk = np.asarray(x[i : i + 4096], dtype=np.float64) / 255
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    return mean.tolist(), np.sqrt(np.maximum(squares / n - mean**2, 0)).tolist()


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, on a whole batch at once."""
    n, _, h, w = x.shape
    if pad == 0 and not flip:
        return x
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n,1,h,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n,1,1,w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chans, rows, cols]
    if not flip:
        return out
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flips[:, None, None, None], out.flip(3), out)


# ---- samplers: which test images the steps after training use ----

VECTOR_SEED = 0


def vector_indices(labels: np.ndarray, count: int, seed: int = VECTOR_SEED) -> np.ndarray:
    """Test-set indices of `count` test vectors drawn across the classes in turn (fixed by `seed`): a
    class-sorted test set still gives vectors of every class."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < count:
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop())
    return np.array(sorted(picked), dtype=np.int64)


def test_subset(x, y, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels the steps after training evaluate: `limit` of them drawn across the classes
    (vector_indices: a class-sorted test set's first N would hold one or two classes), or all of them."""
    y = np.array(y)  # copies: a cached dataset's arrays are read-only memory maps
    if limit is None or limit >= len(y):
        return np.array(x), y
    picked = vector_indices(y, limit)
    return np.array(x[picked]), y[picked]
