// potq_ppu: the post-processing unit. One int32 accumulator (bias included) -> one output value:
//   requant = 1: y = clamp(round_shift(acc, shift) + zp, lo, hi), the 8-bit code (zero-extended);
//   requant = 0: y = acc (the logits node's int32 accumulators pass unchanged).
// round_shift is potq's (docs/graph-format.md): shift > 0 rounds acc * 2^-shift by ROUNDING (half-up, half-even,
// floor; potq_pkg's codes), shift <= 0 is the exact left shift acc << -shift. Combinational.
// Ports are the contract for `potq verify --rtl --ppu FILE.sv` (docs/rtl.md): keep names and widths.
module potq_ppu import potq_pkg::*; #(
    parameter int ROUNDING = ROUND_HALF_EVEN
) (
    input  logic signed [ACC_W-1:0]   acc,
    input  logic signed [SHIFT_W-1:0] shift,
    input  logic        [CODE_W-1:0]  zp,
    input  logic        [CODE_W-1:0]  lo,
    input  logic        [CODE_W-1:0]  hi,
    input  logic                      requant,
    output logic signed [ACC_W-1:0]   y
);
  logic signed [WIDE_W-1:0] r, v, zp_w, lo_w, hi_w;
  potq_shift_round #(.ROUNDING(ROUNDING)) u_round (.acc(acc), .shift(shift), .y(r));
  always_comb begin
    zp_w = {{(WIDE_W - CODE_W){1'b0}}, zp};
    lo_w = {{(WIDE_W - CODE_W){1'b0}}, lo};
    hi_w = {{(WIDE_W - CODE_W){1'b0}}, hi};
    v = r + zp_w;
    if (!requant) y = acc;
    else if (v < lo_w) y = {{(ACC_W - CODE_W){1'b0}}, lo};
    else if (v > hi_w) y = {{(ACC_W - CODE_W){1'b0}}, hi};
    else y = v[ACC_W-1:0];
  end
endmodule

// round_shift(acc, shift) by ROUNDING, exactly, in WIDE_W bits: a right shift of up to SHIFT_CAP bits
// (beyond it every int32 rounds as at the cap), or a left shift (capped at LSHIFT_CAP: a nonzero int32
// shifted that far already lies beyond every code, so the PPU's clamp gives the exact result).
module potq_shift_round import potq_pkg::*; #(
    parameter int ROUNDING = ROUND_HALF_EVEN
) (
    input  logic signed [ACC_W-1:0]   acc,
    input  logic signed [SHIFT_W-1:0] shift,
    output logic signed [WIDE_W-1:0]  y
);
  logic signed [WIDE_W-1:0] a, q, rem, half;
  logic signed [31:0] sh, s;  // (not `int`: Yosys 0.23 reads only this form)
  always_comb begin
    a = {{(WIDE_W - ACC_W){acc[ACC_W-1]}}, acc};
    sh = {{(32 - SHIFT_W){shift[SHIFT_W-1]}}, shift};
    s = sh > SHIFT_CAP ? SHIFT_CAP : (sh < 0 ? 0 : sh);
    q = a >>> s;
    rem = a - (q <<< s);
    half = s == 0 ? '0 : ({{(WIDE_W - 1){1'b0}}, 1'b1} <<< (s - 1));
    if (sh < 0) y = a <<< (-sh > LSHIFT_CAP ? LSHIFT_CAP : -sh);
    else if (ROUNDING == ROUND_FLOOR) y = q;
    else if (ROUNDING == ROUND_HALF_UP) y = (a + half) >>> s;
    else y = q + ((rem > half || (rem == half && half != 0 && q[0])) ? 1 : 0);  // half-even
  end
endmodule
