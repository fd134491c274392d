// potq_pe: one multiply-accumulate cell of the output-stationary array.
// Each cycle it adds x_in * w_in to its int32 accumulator (x_in is already x - zp_x: the row's feeder
// subtracts the input zero point once, and feeds 0 for padding) and passes x_in right and w_in down through
// registers. When `last` is high (the fold's last product reaches this PE) it moves acc + x_in * w_in into its
// output register and restarts its accumulator at 0, so the next fold can begin at once. The output registers
// of a column form a chain that shifts up every cycle (out <= out_in, the register of the PE below), which
// carries finished results out of the array's top edge while the next fold computes (double buffering).
// Ports are the contract for `potq verify --rtl --pe FILE.sv` (docs/rtl.md): keep names and widths.
module potq_pe import potq_pkg::*; (
    input  logic                     clk,
    input  logic                     rst,
    input  logic signed [CODE_W:0]   x_in,
    input  logic signed [CODE_W-1:0] w_in,
    input  logic                     last,
    input  logic signed [ACC_W-1:0]  out_in,
    output logic signed [CODE_W:0]   x_out,
    output logic signed [CODE_W-1:0] w_out,
    output logic signed [ACC_W-1:0]  out
);
  logic signed [2*CODE_W:0] prod;
  logic signed [ACC_W-1:0] acc, sum;
  assign prod = x_in * w_in;  // 9 x 8 bits, exact
  assign sum = acc + {{(ACC_W - 2*CODE_W - 1){prod[2*CODE_W]}}, prod};
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
