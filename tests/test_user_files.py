"""Issue 32, item 2: nothing the user owns is overwritten. A file potq wrote into an export or a --scalesim-out
folder that the user changed since (its SHA-256 no longer the manifest's) is kept and the write refused with one
line, exit 2, unless `potq export --force` says otherwise for that folder; a symbolic link as --out is refused
untouched. Each test fails on potq 0.4 (68e5d84), which replaced the edited file, or the link, silently."""

from __future__ import annotations

import json
import shutil

import pytest

from potq.cli import main
from potq.files import MANIFEST


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with its pot-channel model."""
    copy = shutil.copytree(tiny_run, tmp_path_factory.mktemp("userfiles") / "run")
    assert main(["quantize", "--run", str(copy), "--scheme", "pot-channel", "--calib", "32"]) == 0
    return copy


def export(run, out, *extra: str) -> list[str]:
    return ["export", "--run", str(run), "--scheme", "pot-channel", "--out", str(out), "--vectors", "2", *extra]


def one_line(capsys, *says: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for s in says:
        assert s in err, err
    return err


def test_an_edited_export_file_is_kept_and_the_export_refused(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(export(run, out, "--format", "hw,rtl")) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["sha256"]) == set(manifest["files"]) and "rtl/potq_pe.sv" in manifest["files"]
    for rel in ("rtl/potq_pe.sv", "model.h"):
        edited = out / rel
        original = edited.read_text()
        edited.write_text(original + "// mine\n")
        capsys.readouterr()
        assert main(export(run, out, "--format", "hw,rtl")) == 2
        one_line(capsys, rel, "was changed since potq wrote it", "--force")
        assert edited.read_text() == original + "// mine\n"
        edited.write_text(original)  # restored: potq's file again
    (out / "model.h").write_text("// mine\n")
    assert main(export(run, out, "--force")) == 0  # said explicitly for this folder
    assert "// mine" not in (out / "model.h").read_text() and not (out / "rtl").exists()


def test_an_export_of_potq_0_4_without_digests_is_still_replaced(run, tmp_path):
    out = tmp_path / "exp"
    assert main(export(run, out)) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["sha256"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert main(export(run, out)) == 0


def test_a_symlinked_out_is_refused_and_left_as_it_was(run, tmp_path, capsys):
    old = tmp_path / "old"
    assert main(export(run, old)) == 0
    before = sorted(p.name for p in old.iterdir())
    link = tmp_path / "link"
    link.symlink_to(old)
    capsys.readouterr()
    assert main(export(run, link)) == 2
    one_line(capsys, "a symbolic link", "give the folder itself")
    assert link.is_symlink() and link.resolve() == old.resolve()
    assert sorted(p.name for p in old.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".link")] == []


def scalesim(out) -> list[str]:
    return ["accel", "--model", "tiny", "--arch", "systolic-16", "--scalesim-out", str(out)]


def test_scalesim_out_follows_the_exports_manifest_rule(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "topology.csv").write_text("my own topology\n")
    assert main(scalesim(mine)) == 2
    one_line(capsys, "--scalesim-out", "potq did not write")
    assert (mine / "topology.csv").read_text() == "my own topology\n"
    ours = tmp_path / "ours"
    assert main(scalesim(ours)) == 0 and main(scalesim(ours)) == 0  # potq's own folder: replaced
    (ours / "topology.csv").write_text("edited\n")
    capsys.readouterr()
    assert main(scalesim(ours)) == 2
    one_line(capsys, "topology.csv was changed since potq wrote it")
    assert (ours / "topology.csv").read_text() == "edited\n"
