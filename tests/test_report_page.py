"""Issue 31, item 5: the report names the machine's CPU and its flags (potq.machine, their one home), its wide
tables scroll in a browser instead of being cut at the page's edge, and what third-party libraries print
themselves goes to the run's log, not to the user's output."""

import os
import re
import shutil
import sys

import pytest

from potq.files import stderr_to_log
from potq.machine import CPU_FLAGS, cpu_facts, cpu_text

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 sha_ni
"""


@pytest.mark.parametrize(
    "text, model, flags",
    [
        (EPYC, "AMD EPYC 7B13 64-Core Processor", ["avx2"]),
        (XEON, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", list(CPU_FLAGS)),
        ("processor\t: 0\n", None, []),  # no model name, no flags: still an answer
    ],
)
def test_cpu_facts_name_the_model_and_the_flags_that_decide_the_kernels(tmp_path, text, model, flags):
    (tmp_path / "cpuinfo").write_text(text)
    facts = cpu_facts(tmp_path / "cpuinfo")
    assert facts["flags"] == flags and (model is None or facts["model"] == model)
    assert cpu_text(facts).startswith(facts["model"]) and "flags:" in cpu_text(facts)


def test_the_onnx_check_reads_the_same_cpu_facts():
    from potq.deploy.saturation import this_cpu

    cpu = this_cpu()
    assert {k: cpu[k] for k in ("model", "flags")} == cpu_facts()


def test_the_reports_machine_row_names_the_cpu_and_its_flags(tiny_run):
    from potq.report import build_markdown

    row = next(line for line in build_markdown(tiny_run).splitlines() if line.startswith("| Machine |"))
    assert cpu_text(cpu_facts()) in row, row


def test_every_table_of_the_html_report_scrolls_sideways(tiny_run, tmp_path):
    from potq.report import CSS, write_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    write_report(run)
    page = (run / "report.html").read_text()
    tables = page.count("<table>")
    assert tables >= 3 and page.count('<div class="scroll"><table>') == tables
    assert page.count("</table></div>") == tables
    assert re.search(r"\.scroll \{ overflow-x: auto; \}", CSS)


def test_what_a_library_writes_to_stderr_itself_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / "third-party.log"
    print("potq's own line", file=sys.stderr)
    with stderr_to_log(log, "TVM, pot-channel"):
        os.write(2, b"Warning: Fast mode segfaults when there are out-of-bounds indices\n")  # as C++ LOG does
        print("a Python warning", file=sys.stderr)
    print("potq again", file=sys.stderr)
    err = capfd.readouterr().err
    assert "Fast mode" not in err and "a Python warning" not in err
    assert "potq's own line" in err and "potq again" in err
    text = log.read_text()
    assert "TVM, pot-channel" in text and "Fast mode segfaults" in text and "a Python warning" in text


def test_a_quiet_library_leaves_no_log(tmp_path, capfd):
    with stderr_to_log(tmp_path / "third-party.log", "onnxruntime, pot-channel"):
        print("potq's own answer")
    assert "potq's own answer" in capfd.readouterr().out and not (tmp_path / "third-party.log").exists()
