// potq_array_os: an R x C output-stationary systolic array of potq_pe. Row i holds output pixel m0 + i,
// column j output channel n0 + j. x_left[i] and w_top[j] arrive already skewed (row i by i cycles, column j
// by j cycles: potq_core's feeders), so that PE (i, j) sees x[k] and w[k] together at cycle k + i + j.
// drain = 1 shifts every column down by one PE: acc_bottom[j] shows the bottom row's accumulator, and after
// R drain cycles the array holds zeros again.
module potq_array_os import potq_pkg::*; #(
    parameter int R = 4,
    parameter int C = 4
) (
    input  logic                     clk,
    input  logic                     rst,
    input  logic                     drain,
    input  logic signed [CODE_W:0]   x_left[R],
    input  logic signed [CODE_W-1:0] w_top[C],
    output logic signed [ACC_W-1:0]  acc_bottom[C]
);
  logic signed [CODE_W:0]   xs[R][C+1];
  logic signed [CODE_W-1:0] ws[R+1][C];
  logic signed [ACC_W-1:0]  as_[R+1][C];
  for (genvar i = 0; i < R; i++) begin : g_row
    assign xs[i][0] = x_left[i];
    for (genvar j = 0; j < C; j++) begin : g_col
      potq_pe u_pe (
          .clk(clk), .rst(rst), .drain(drain),
          .x_in(xs[i][j]), .w_in(ws[i][j]), .acc_in(as_[i][j]),
          .x_out(xs[i][j+1]), .w_out(ws[i+1][j]), .acc(as_[i+1][j])
      );
    end
  end
  for (genvar j = 0; j < C; j++) begin : g_edge
    assign ws[0][j] = w_top[j];
    assign as_[0][j] = '0;
    assign acc_bottom[j] = as_[R][j];
  end
endmodule
