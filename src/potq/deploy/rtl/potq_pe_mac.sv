// potq_pe_mac: potq_pe's multiply-accumulate cell with its operand widths as parameters, for the area study
// of low-bit formats (benchmarks/pe_area.py, issue 27) and the PE sweep of tests/test_rtl_pe.py. X_BITS is the
// activation code's width (x_in = x - zp_x takes X_BITS + 1 bits, signed), W_BITS the int weight's (two's
// complement, its value); the accumulator is potq_pkg's ACC_W bits and wraps. Timing and register behaviour
// are potq_pe's exactly (docs/rtl.md); at X_BITS = W_BITS = CODE_W it is potq_pe, and the sweep holds the two
// equal on every operand pair.
// Why a separate module rather than parameters on potq_pe: potq_pe.sv is the shipped array's PE and the
// template of `potq verify --rtl --pe FILE.sv`, whose header docs/rtl.md prints verbatim; left as it is, the
// array, its Verilator cache keys and every user's PE file stay exactly what they were, and nothing in the
// array can pick up a narrower operand by accident. This module also names potq_pkg by scope instead of
// importing it in the header, so that Yosys 0.23 (Debian's) reads it as it is (read potq_pkg.sv first).
module potq_pe_mac #(
    parameter int X_BITS = potq_pkg::CODE_W,  // activation code bits
    parameter int W_BITS = potq_pkg::CODE_W   // weight bits
) (
    input  logic                              clk,
    input  logic                              rst,
    input  logic signed [X_BITS:0]            x_in,
    input  logic signed [W_BITS-1:0]          w_in,
    input  logic                              last,
    input  logic signed [potq_pkg::ACC_W-1:0] out_in,
    output logic signed [X_BITS:0]            x_out,
    output logic signed [W_BITS-1:0]          w_out,
    output logic signed [potq_pkg::ACC_W-1:0] out
);
  localparam int ACC_W = potq_pkg::ACC_W;
  localparam int P_W = X_BITS + 1 + W_BITS;  // the exact product of the two signed operands

  logic signed [P_W-1:0] prod;
  logic signed [ACC_W-1:0] acc, sum;
  assign prod = x_in * w_in;
  // sign-extended inline, as in potq_pe: through a separate wire Yosys 0.23 no longer merges the product and
  // the sum into one adder tree, and the 8 x 8 PE grows from 830 cells to 1196
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
