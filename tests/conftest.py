"""Shared fixtures: small datasets built on the fly, and a tiny trained run."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(os.environ.get("POTQ_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REAL_CIFAR = SHARED / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own data cache; nothing touches ~/.cache."""
    monkeypatch.setenv("POTQ_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
    }


def write_cifar_folder(root: Path, per_batch: int = 20) -> Path:
    """The official python layout: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(per_batch, i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(per_batch, 9), protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_image_folder(
    root: Path, per_class: int = 6, classes=("cat", "dog", "frog"), size: int = 32, suffix: str = ".png"
) -> Path:
    """{train,test}/<class>/*.png where each class has its own mean colour, so a net can learn it."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
        for k, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                base = np.zeros((size, size, 3)) + 60 * k + 40
                img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}{suffix}")
    return root


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def learnable_data(tmp_path_factory) -> Path:
    """A 3-class image folder with 120 training images per class: enough to learn in one epoch."""
    return write_image_folder(tmp_path_factory.mktemp("learnable"), per_class=120)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, learnable_data) -> Path:
    """A trained `tiny` model on the learnable folder."""
    from potq.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(model="tiny", data=str(learnable_data), epochs=2, val_size=60, batch_size=32, lr=0.02)
    train(cfg, out)
    return out


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_CIFAR.exists():
        pytest.skip(f"{REAL_CIFAR} is not here")
    return REAL_CIFAR
