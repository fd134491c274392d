import gzip
import hashlib
import io
import os
import pickle
import tarfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from potq import data as potq_data
from potq.cli import main
from potq.data import augment, download, load_dataset, safe_unpickle, split_train_val
from potq.errors import UserError
from tests.conftest import cifar_batch, tar_folder, write_cifar_folder, write_image_folder


def test_cifar_archive_and_extracted_folder_load_the_same(tmp_path):
    folder = write_cifar_folder(tmp_path / "src", per_batch=20)
    archive = tar_folder(folder, tmp_path / "cifar-10-python.tar.gz")
    a = load_dataset(str(archive), tmp_path / "c1")
    b = load_dataset(str(folder.parent), tmp_path / "c2")
    assert a.train_x.shape == (100, 3, 32, 32) and a.test_x.shape == (20, 3, 32, 32)
    assert a.classes == [f"class{i}" for i in range(10)]
    np.testing.assert_array_equal(a.train_x, b.train_x)
    expected = cifar_batch(20, 1)
    np.testing.assert_array_equal(a.train_x[:20].reshape(20, -1), expected[b"data"])
    np.testing.assert_array_equal(a.train_y[:20], expected[b"labels"])


def test_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    raw = pickle.dumps({b"data": Evil(), b"labels": [1]}, protocol=2)
    with pytest.raises(UserError, match="refusing to load"):
        safe_unpickle(raw)
    assert not (tmp_path / "pwned").exists()


def test_crafted_batch_in_archive_is_a_clean_error(tmp_path, capsys):
    folder = write_cifar_folder(tmp_path / "src")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": print, b"labels": []}))
    assert main(["train", "--data", str(folder.parent), "--out", str(tmp_path / "out"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "data_batch_3" in err and "refusing" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_download_checks_md5_and_never_needs_network(tmp_path):
    archive = tar_folder(write_cifar_folder(tmp_path / "src"), tmp_path / "served.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = download(archive.as_uri(), tmp_path / "cache" / "cifar-10-python.tar.gz", md5)
    assert dest.read_bytes() == archive.read_bytes()
    with pytest.raises(UserError, match="MD5 mismatch"):
        download(archive.as_uri(), tmp_path / "cache2" / "x.tar.gz", "0" * 32)
    assert not (tmp_path / "cache2" / "x.tar.gz").exists()
    assert list((tmp_path / "cache2").iterdir()) == []  # no partial file left behind


def test_official_url_and_checksum_are_the_published_ones():
    assert potq_data.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert potq_data.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_cifar10_name_downloads_into_the_cache(tmp_path, monkeypatch):
    archive = tar_folder(write_cifar_folder(tmp_path / "src"), tmp_path / "served.tar.gz")
    monkeypatch.setattr(potq_data, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(potq_data, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    ds = load_dataset("cifar10", tmp_path / "cache")
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()
    assert len(ds.train_x) == 100


@pytest.mark.parametrize("packed", [False, True])
def test_image_folder_plain_and_tar_gz(tmp_path, packed):
    root = write_image_folder(tmp_path / "imgs", per_class=4)
    spec = root
    if packed:
        spec = tmp_path / "imgs.tar.gz"
        with tarfile.open(spec, "w:gz") as tar:
            tar.add(root, arcname="imgs")
    ds = load_dataset(str(spec), tmp_path / "cache")
    assert ds.classes == ["cat", "dog", "frog"]
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert sorted(np.bincount(ds.train_y).tolist()) == [4, 4, 4]
    # class k has mean colour 60k + 40
    assert abs(ds.train_x[ds.train_y == 2].mean() - 160) < 5


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    first = load_dataset(str(root), tmp_path / "cache")

    def boom(path):
        raise AssertionError("decoded again")

    monkeypatch.setattr(potq_data, "_decode", boom)
    second = load_dataset(str(root), tmp_path / "cache")
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert second.classes == first.classes


def test_cache_sees_a_changed_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    first = load_dataset(str(root), tmp_path / "cache")
    write_image_folder(tmp_path / "more", per_class=2, classes=("owl",))
    (tmp_path / "more" / "train" / "owl").rename(root / "train" / "owl")
    (tmp_path / "more" / "test" / "owl").rename(root / "test" / "owl")
    second = load_dataset(str(root), tmp_path / "cache")
    assert "owl" in second.classes and len(second.train_x) > len(first.train_x)
    broken = next((root / "train" / "cat").iterdir())
    broken.write_bytes(b"not an image")
    with pytest.raises(UserError, match="cat"):
        load_dataset(str(root), tmp_path / "cache")


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_fashion_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for name, arr in {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 30),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10),
    }.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(_idx(arr)))
    ds = load_dataset(str(tmp_path), tmp_path / "cache")
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.test_y.shape == (10,)
    assert len(ds.classes) == 10


def test_truncated_idx_file_is_an_error(tmp_path):
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / name).write_bytes(_idx(np.zeros((5, 28, 28)))[:-10])
    with pytest.raises(UserError, match="truncated"):
        load_dataset(str(tmp_path), tmp_path / "cache")


def _bad_inputs(tmp_path):
    truncated = tar_folder(write_cifar_folder(tmp_path / "t"), tmp_path / "t.tar.gz")
    truncated.write_bytes(truncated.read_bytes()[:2000])
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    unreadable = write_image_folder(tmp_path / "unreadable", per_class=2)
    (unreadable / "train" / "cat" / "0000.png").write_bytes(b"not an image")
    notdata = tmp_path / "notdata.txt"
    notdata.write_text("hello")
    return {
        "missing": (tmp_path / "nope", "no such file"),
        "truncated": (truncated, "corrupt or truncated"),
        "empty": (empty, "no class folders"),
        "unreadable": (unreadable, "unreadable image"),
        "notdata": (notdata, "not a folder or a .tar.gz"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "empty", "unreadable", "notdata"])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, case, capsys):
    path, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_split_is_fixed_by_seed_and_disjoint():
    tr, va = split_train_val(100, 10, seed=3)
    tr2, va2 = split_train_val(100, 10, seed=3)
    assert (tr == tr2).all() and (va == va2).all()
    assert len(set(tr) | set(va)) == 100 and not set(tr) & set(va)
    assert not (split_train_val(100, 10, seed=4)[1] == va).all()


def test_augment_crops_and_flips_whole_batches():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = augment(x, 1, True, g)
    assert out.shape == x.shape
    # every output is a shifted (and maybe mirrored) window of its own zero-padded input
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    same = augment(x, 1, True, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    assert torch.equal(augment(x, 0, False, g), x)


def test_augment_flips_about_half():
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).repeat(1000, 1, 1, 1)
    out = augment(x, 0, True, torch.Generator().manual_seed(1))
    flipped = (out[:, 0, 0, 0] == 7).float().mean()
    assert 0.4 < flipped < 0.6


def test_labels_out_of_range_and_counts_that_differ(tmp_path, capsys):
    folder = write_cifar_folder(tmp_path / "c")
    batch = cifar_batch(20, 1)
    batch[b"labels"][3] = 12  # 10 classes
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    assert main(["train", "--data", str(folder.parent), "--out", str(tmp_path / "o"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "labels run from 0 to 12, but there are 10 classes" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_idx_file_of_the_wrong_shape(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    (root / "train-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 255, (6, 28, 28))))
    (root / "train-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, (6, 2))))  # 2-D labels
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 255, (4, 28, 28))))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, 4)))
    with pytest.raises(UserError, match="train-labels-idx1-ubyte: an IDX file of shape"):
        load_dataset(str(root), tmp_path / "cache")


def test_an_image_too_large_to_decode_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    big = next((root / "train" / "cat").iterdir())
    Image.new("L", (5000, 4000)).save(big)
    with pytest.raises(UserError, match="5000x4000 pixels, more than potq decodes"):
        load_dataset(str(root), tmp_path / "cache")


# ---- issue 21: checks on every load, a cache that costs speed only, bounded reads -----------------


def test_a_cache_entry_with_labels_out_of_range_is_rebuilt_from_the_source(tmp_path, capsys):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    first = load_dataset(str(root), tmp_path / "cache")
    (entry,) = (tmp_path / "cache").iterdir()
    np.save(entry / "train_y.npy", np.full(len(first.train_y), 7, dtype=np.int64))  # 3 classes
    again = load_dataset(str(root), tmp_path / "cache")
    np.testing.assert_array_equal(again.train_y, first.train_y)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and str(entry) in err
    capsys.readouterr()
    load_dataset(str(root), tmp_path / "cache")  # the rebuilt entry holds
    assert capsys.readouterr().err == ""


def test_the_class_list_must_equal_the_runs(tmp_path):
    from potq.train import TrainConfig, prepare_data

    ds = load_dataset(str(write_image_folder(tmp_path / "imgs", per_class=2, classes=("cat", "dog", "fox"))))
    cfg = TrainConfig(data="x", val_size=1, in_shape=[3, 32, 32], classes=["cat", "dog", "frog"])
    with pytest.raises(UserError, match="classes cat, dog, fox, but the run was trained on cat, dog, frog"):
        prepare_data(cfg, ds)


def test_a_full_cache_disk_costs_speed_only(tmp_path, monkeypatch, capsys):
    import errno

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(potq_data, "_save_npy", full)
    root = write_image_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "run"
    assert (
        main(["train", "--model", "tiny", "--data", str(root), "--out", str(out), "--epochs", "1", "--val-size", "3"])
        == 0
    )
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "cache" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "potq: warning:" in warnings[0]
    assert (out / "weights.pt").exists()


@pytest.mark.parametrize("value", ["", "a_file"])
def test_potq_cache_empty_or_a_file_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine")
    monkeypatch.setenv("POTQ_CACHE", value)
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    with pytest.raises(UserError, match="POTQ_CACHE"):
        load_dataset(str(root))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "imgs"]
    assert (tmp_path / "a_file").read_text() == "mine"


class _Zeros(io.RawIOBase):
    """`n` zero bytes, read in blocks: an archive member as large as a bomb's without holding it."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels; its pixel data is a few zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
        + chunk(b"IEND", b"")
    )


def _archive_with(tmp_path, name: str, head: bytes, size: int):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(root, arcname="imgs")
        info = tarfile.TarInfo(f"imgs/train/cat/{name}")
        info.size = size
        tar.addfile(info, io.BufferedReader(_ConcatReader(head, _Zeros(size - len(head)))))
    return archive


class _ConcatReader(io.RawIOBase):
    def __init__(self, head: bytes, rest: io.RawIOBase):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            k = min(len(b), len(self.head))
            b[:k], self.head = self.head[:k], self.head[k:]
            return k
        return self.rest.readinto(b)


def test_an_archive_member_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    small = io.BytesIO()
    Image.new("RGB", (32, 32)).save(small, format="PNG")  # a valid image, then 80 MB of zeros
    archive = _archive_with(tmp_path, "huge.png", small.getvalue(), 80 << 20)
    with pytest.raises(UserError, match=r"imgs\.tar\.gz:imgs/train/cat/huge\.png: 80\.0 MB, more than"):
        load_dataset(str(archive), tmp_path / "cache")


def test_an_image_header_claiming_a_huge_size_is_one_line_without_decoding(tmp_path):
    import warnings

    archive = _archive_with(tmp_path, "bomb.png", _png_header(10000, 10000), len(_png_header(10000, 10000)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would be a second line on stderr
        with pytest.raises(UserError, match=r"imgs\.tar\.gz:imgs/train/cat/bomb\.png: 10000x10000 pixels"):
            load_dataset(str(archive), tmp_path / "cache")


def test_verify_refuses_data_whose_classes_are_not_the_runs(tmp_path, tiny_run, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["quantize", "--run", str(run), "--scheme", "pot-channel", "--calib", "20"]) == 0
    other = write_image_folder(tmp_path / "other", per_class=4, classes=("cat", "dog", "fox"))
    capsys.readouterr()
    assert main(["verify", "--run", str(run), "--scheme", "pot-channel", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "classes cat, dog, fox, but the run was trained on cat, dog, frog" in err and err.count("\n") == 1
    assert not (run / "verify_pot-channel.json").exists()


def test_cache_option_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(UserError, match="--cache .*a_file: is a file"):
        load_dataset(str(write_image_folder(tmp_path / "imgs", per_class=2)), tmp_path / "a_file")


def test_a_file_too_large_in_a_folder_is_refused_before_it_is_read(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    with open(root / "train" / "cat" / "huge.png", "wb") as f:
        f.truncate(80 << 20)  # sparse: 80 MB declared, no disk used
    with pytest.raises(UserError, match=r"huge\.png: 80\.0 MB, more than potq reads"):
        load_dataset(str(root), tmp_path / "cache")


def test_a_gzip_idx_file_that_unpacks_too_large_is_refused(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(b"\0\0\x08\x03" + bytes(80 << 20))
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz: unpacks to more than 64 MB"):
        load_dataset(str(root), tmp_path / "cache")
