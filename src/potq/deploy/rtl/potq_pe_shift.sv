// potq_pe_shift: the shift-add PE of low-bit power-of-two weights (issue 27). Ports and timing are potq_pe's
// (docs/rtl.md): x_in is x - zp_x, the accumulator is int32 and wraps, `last` moves acc + product into `out`
// and restarts the sum, out <= out_in otherwise, and x and w pass on through registers. The one difference:
// w_in carries the weight's STORAGE CODE (defined in potq.ir.codes) in its low W_BITS bits (the upper bits
// zero), not its value, so the product needs no multiplier:
//   pot  (WCODE "pot", W_BITS 2..4): sign | m (W_BITS-1 bits); w = 0 for m = 0, else +-2^(m-1):
//        one barrel shift of x.
//   apot (WCODE "apot", W_BITS 3..5): sign | f1 (M1 bits) | f2 (M2 bits); w = +-(t1 + t2) with
//        t1 = 2^(TOP - 2(f1-1)) and t2 = 2^(TOP - 1 - 2(f2-1)) (0 for a zero field): two shifts and an add.
// The format's parameters come from potq.deploy.rtl.pe.pe_shift_params, which reads them from potq.ir.codes;
// never type them by hand. The widths are potq_pkg's, named by scope rather than imported in the header so
// that Yosys 0.23 (Debian's) reads the file as it is (read potq_pkg.sv first).
module potq_pe_shift #(
    parameter bit [31:0] WCODE = "pot",  // potq.ir.codes' label, "pot" or "apot" (4 ASCII bytes at most)
    parameter int W_BITS = 4,            // bits of the storage code, sign included
    parameter int M1 = 0,                // apot only: the width of f1 ...
    parameter int M2 = 0,                // ... of f2 ...
    parameter int TOP = 0                // ... and the exponent of t1's largest power
) (
    input  logic                                   clk,
    input  logic                                   rst,
    input  logic signed [potq_pkg::CODE_W:0]       x_in,
    input  logic signed [potq_pkg::CODE_W-1:0]     w_in,
    input  logic                                   last,
    input  logic signed [potq_pkg::ACC_W-1:0]      out_in,
    output logic signed [potq_pkg::CODE_W:0]       x_out,
    output logic signed [potq_pkg::CODE_W-1:0]     w_out,
    output logic signed [potq_pkg::ACC_W-1:0]      out
);
  localparam int CODE_W = potq_pkg::CODE_W;
  localparam int ACC_W = potq_pkg::ACC_W;
  localparam bit APOT = WCODE == "apot";
  localparam int MAG_W = W_BITS - 1;  // the code less its sign bit
  // the largest left shift: pot's top exponent 2^(W_BITS-1) - 2, apot's TOP
  localparam int SH_MAX = APOT ? TOP : (1 << MAG_W) - 2;
  // +-(x - zp) takes CODE_W + 2 bits; apot's two terms sum to less than 2^(SH_MAX + 1) times it
  localparam int X_W = CODE_W + 2;
  localparam int P_W = X_W + SH_MAX + 1;

  if (!(APOT || WCODE == "pot")) begin : bad_code
    $error("potq_pe_shift: WCODE must be \"pot\" or \"apot\"");
  end
  if (APOT && (M1 < 1 || M2 < 1 || M1 + M2 != MAG_W || TOP < 1)) begin : bad_apot
    $error("potq_pe_shift: apot needs M1 + M2 = W_BITS - 1 and TOP (potq.deploy.rtl.pe.pe_shift_params)");
  end

  logic sign;
  logic [MAG_W-1:0] mag;
  logic signed [X_W-1:0] xw, xs;  // xs = +-x: the sign applied once, to x, before the shifts (fewer bits)
  logic signed [P_W-1:0] prod;
  logic signed [ACC_W-1:0] acc, sum;
  assign sign = w_in[W_BITS-1];
  assign mag = w_in[MAG_W-1:0];
  assign xw = X_W'(x_in);  // sign-extended
  assign xs = sign ? -xw : xw;

  if (APOT) begin : g_apot
    // the f-th power from the top is 2^(TOP + 2 - 2f) (t2's one lower): x * 2^(TOP + 2) shifted right by 2f,
    // exact (it never passes the zeros shifted in), so each term's shifter takes the field's bits as they are;
    // a zero field is an absent term (x masked before the shift: narrower than masking the term)
    localparam int T_W = X_W + TOP + 2;
    logic [M1-1:0] f1;
    logic [M2-1:0] f2;
    logic signed [X_W-1:0] x1, x2;
    logic signed [T_W-1:0] t1, t2;
    assign f1 = mag[MAG_W-1:M2];
    assign f2 = mag[M2-1:0];
    assign x1 = f1 == 0 ? '0 : xs;
    assign x2 = f2 == 0 ? '0 : xs;
    assign t1 = (T_W'(x1) <<< (TOP + 2)) >>> {f1, 1'b0};
    assign t2 = (T_W'(x2) <<< (TOP + 1)) >>> {f2, 1'b0};
    assign prod = P_W'(t1 + t2);
  end else begin : g_pot
    // m = k + 1 for 2^k: shift by m and drop one bit (a shifted-in zero), so the shifter takes m as it is;
    // m = 0 is the weight 0 (x masked before the shift)
    logic signed [X_W-1:0] xm;
    logic signed [P_W:0] shifted;
    assign xm = mag == 0 ? '0 : xs;
    assign shifted = (P_W + 1)'(xm) <<< mag;
    assign prod = shifted[P_W:1];
  end

  // sign-extended inline, as in potq_pe (potq_pe_mac.sv says why)
  assign sum = acc + {{(ACC_W - P_W){prod[P_W-1]}}, prod};
  always_ff @(posedge clk) begin
    if (rst) begin
      acc <= '0;
      out <= '0;
      x_out <= '0;
      w_out <= '0;
    end else begin
      x_out <= x_in;
      w_out <= w_in;
      acc <= last ? '0 : sum;
      out <= last ? sum : out_in;
    end
  end
endmodule
