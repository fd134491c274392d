"""The run's jobs: each reads a run folder (potq.runs), calls the libraries and interpreters (potq.quant, the
trainer, potq.golden, potq.deploy), and writes its records there: quantize (and compare), verify, export and the
consumers' checks (deploy). They sit above the interpreters and below the whole run (potq.workflow).

Their image counts, one home each (torch-free: argparse, RunOptions, the API and the budget planner read them):"""

EXPORT_VECTORS = 10  # test images exported with every value's integers (a few MB)
C_VECTORS = 200  # test images the C runtime's check runs
TVM_IMAGES = 100  # test images the TVM check runs (its untuned llvm build runs a few per second)
RTL_VECTORS = 2  # test images `verify --rtl` simulates, every value of every node
