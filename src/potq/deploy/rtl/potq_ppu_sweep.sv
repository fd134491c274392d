// Test harness (not part of the accelerator): the PPU and its rounding shifter under each rounding rule,
// side by side, for the edge sweep of tests/test_rtl.py (driven by ppu_sweep.cpp).
module potq_ppu_sweep import potq_pkg::*; (
    input  logic signed [ACC_W-1:0]   acc,
    input  logic signed [SHIFT_W-1:0] shift,
    input  logic        [CODE_W-1:0]  zp,
    input  logic        [CODE_W-1:0]  lo,
    input  logic        [CODE_W-1:0]  hi,
    input  logic                      requant,
    output logic signed [ACC_W-1:0]   y[NUM_ROUNDINGS],
    output logic signed [WIDE_W-1:0]  r[NUM_ROUNDINGS]
);
  for (genvar k = 0; k < NUM_ROUNDINGS; k++) begin : g_rule
    potq_ppu #(.ROUNDING(k)) u_ppu (.acc, .shift, .zp, .lo, .hi, .requant, .y(y[k]));
    potq_shift_round #(.ROUNDING(k)) u_round (.acc, .shift, .y(r[k]));
  end
endmodule
