"""Every size the accelerator model accepts, in one place: an architecture file's fields, `--batch`, a DSE's
ranges and point count, and the row-stationary search's grid (issue 30, item 7).

Claim: with every input inside these limits, `potq accel` (report and `--dse`) answers in seconds and under
500 MB (potq's own process, torch loaded, is about 310 MB before the model runs); anything outside is one
`UserError` line naming the option or field and its limit, before anything is written. Each limit sits far
above the accelerators the model is for (the lab's Eyeriss: 6x8 PEs, 12/48/16 B scratchpads, 64 KiB global
buffer), so that no real design is refused. The costs were measured on a shared 2-core AMD EPYC: the search's
grid takes about 12 bytes and 40 ns a cell (29 million cells: 335 MB, 1.2 s).
Evidence: tests/test_accel.py (test_hostile_input_is_one_line_exit_2_nothing_written: every case of the
issue's "Hostile input" through the CLI; the presets and the tests' sweeps run within the limits).
"""

from __future__ import annotations

from potq.errors import UserError

# ---- the architecture file ----
MAX_ARCH_FILE_BYTES = 1 << 20  # 1 MiB: a preset is under 1 KiB; larger is refused before it is read whole
MAX_JSON_DEPTH = 8  # the format nests 2 deep (spad_bytes, energy, dataflows); checked before json recurses
MAX_NAME_CHARS = 100  # a label printed in tables and DSE variant names
MAX_PE_SIDE = 512  # PEs per row and per column: TPU v1's array is 256 x 256, Eyeriss's 12 x 14
MAX_SPAD_BYTES = 1024  # per PE and scratchpad: Eyeriss's largest (the filter's 224 x 16 bit) is 448 B
MAX_GLB_BYTES = 1 << 30  # 1 GiB of global buffer: chips with the most on-chip SRAM have hundreds of MiB
MAX_BYTES_PER_CYCLE = 4096  # DRAM bus and NoC: 32 kbit a cycle, beyond an HBM stack's interface
MAX_CYCLES_PER_TRANSACTION = 10_000  # a DRAM or global-buffer transaction: DRAM latency is ~100 cycles
MAX_PPU_OPS_PER_CYCLE = 1 << 16  # the post-processing unit: eyeriss does 1, eyeriss-ppu8 8, systolic-32 32
MAX_CLOCK_HZ = 1e11  # 100 GHz, beyond any CMOS clock
MAX_ENERGY = 1e9  # per operation or per byte, in pJ or relative units: a DRAM byte is ~100 pJ, 200 relative
MAX_LEAKAGE_W = 1e4  # watts of static power (a whole GPU draws hundreds)

# ---- a run: the batch, the row-stationary search, the design-space sweep ----
MAX_BATCH = 4096  # images per inference; the rs space has one n candidate per divisor of the batch
# cells of search.py's grid (m x n x e x p x q x r candidates): per layer it bounds the legality masks'
# memory (about 24 MB), over a report or a sweep the time (about 1 s at 40 ns a cell); the lab's eyeriss
# needs under 4,000 a layer, and its default sweep on mobilenet-cifar 2.6 million in all
MAX_GRID_CELLS_PER_LAYER = 2_000_000
MAX_GRID_CELLS = 20_000_000
# legal mappings of one layer, each costed by row_stationary.terms at about 750 bytes (213,120: 159 MB):
# 75 MB at most; the lab's eyeriss has at most 2,484 on a zoo layer
MAX_LEGAL_MAPPINGS_PER_LAYER = 100_000
# rows of --mappings-csv, held as text until the whole file is known (about 350 bytes a row): 35 MB at
# most; the lab's eyeriss writes 20,474 for mobilenet-cifar, the zoo's most
MAX_MAPPINGS_CSV_ROWS = 100_000
# design points of one `--dse` (bases x PE arrays x buffers x dataflows): its default is 9 per base and
# dataflow, so eyeriss with two systolic bases (9 + 27 + 27 = 63 points) fits; 64 resnet44 rs points take ~4 s
MAX_DSE_POINTS = 64


def check_batch(batch: int) -> int:
    """--batch within 1..MAX_BATCH (accel_report checks it, so the API and the CLI answer alike)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise UserError(f"--batch must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    return batch


def check_dse_points(points: int) -> None:
    if points > MAX_DSE_POINTS:
        raise UserError(
            f"--dse: {points:,} design points (bases x PE arrays x buffers x dataflows), more than {MAX_DSE_POINTS}; "
            "give fewer --dse-arrays, --dse-glb or --dse-with"
        )


def check_grid_cells(cells: int, what: str) -> None:
    """The row-stationary search's grid cells over a report or a sweep (`what`), within MAX_GRID_CELLS."""
    if cells > MAX_GRID_CELLS:
        raise UserError(
            f"{what}: the row-stationary mapping search would cover {cells:,} candidate mappings, more than "
            f"{MAX_GRID_CELLS:,}; a smaller PE array, scratchpads (spad_bytes) or --batch, or fewer design points"
        )
