// potq_pe: one multiply-accumulate cell of the output-stationary array.
// Each cycle it adds x_in * w_in to its int32 accumulator (x_in is already x - zp_x: the row's feeder
// subtracts the input zero point once, and feeds 0 for padding), and passes x_in right and w_in down
// through registers. With drain = 1 it instead loads acc_in (the accumulator of the PE above), so the
// column shifts its results down and out of the bottom; the top row loads 0, which clears the array.
// Ports are the contract for `potq verify --rtl --pe FILE.sv` (docs/rtl.md): keep names and widths.
module potq_pe import potq_pkg::*; (
    input  logic                     clk,
    input  logic                     rst,
    input  logic                     drain,
    input  logic signed [CODE_W:0]   x_in,
    input  logic signed [CODE_W-1:0] w_in,
    input  logic signed [ACC_W-1:0]  acc_in,
    output logic signed [CODE_W:0]   x_out,
    output logic signed [CODE_W-1:0] w_out,
    output logic signed [ACC_W-1:0]  acc
);
  logic signed [2*CODE_W:0] prod;
  assign prod = x_in * w_in;  // 9 x 8 bits, exact
  always_ff @(posedge clk) begin
    if (rst) begin
      acc <= '0;
      x_out <= '0;
      w_out <= '0;
    end else begin
      x_out <= x_in;
      w_out <= w_in;
      if (drain) acc <= acc_in;
      else acc <= acc + {{(ACC_W - 2*CODE_W - 1){prod[2*CODE_W]}}, prod};
    end
  end
endmodule
