// potq_array_os: an R x C output-stationary systolic array of potq_pe. Row i holds output pixel m0 + i,
// column j output channel n0 + j. x_left[i], last_left[i] and w_top[j] arrive already skewed (row i by i
// cycles, column j by j cycles: potq_core's feeders), so that PE (i, j) sees x[k] and w[k] together at fold
// cycle k + i + j, and `last` with k = K - 1. The `last` marker travels right with x (a register per PE).
// PE (i, j) thus finishes at fold cycle K - 1 + i + j; its result climbs the column's output chain one row per
// cycle and shows at out_top[j] during fold cycle K + 2i + j (potq_core decodes which output it is).
module potq_array_os import potq_pkg::*; #(
    parameter int R = 4,
    parameter int C = 4
) (
    input  logic                     clk,
    input  logic                     rst,
    input  logic signed [CODE_W:0]   x_left[R],
    input  logic                     last_left[R],
    input  logic signed [CODE_W-1:0] w_top[C],
    output logic signed [ACC_W-1:0]  out_top[C]
);
  logic signed [CODE_W:0]   xs[R][C+1];
  logic                     ls[R][C+1];
  logic signed [CODE_W-1:0] ws[R+1][C];
  logic signed [ACC_W-1:0]  os[R+1][C];
  for (genvar i = 0; i < R; i++) begin : g_row
    assign xs[i][0] = x_left[i];
    assign ls[i][0] = last_left[i];
    for (genvar j = 0; j < C; j++) begin : g_col
      potq_pe u_pe (
          .clk(clk), .rst(rst), .x_in(xs[i][j]), .w_in(ws[i][j]), .last(ls[i][j]), .out_in(os[i+1][j]),
          .x_out(xs[i][j+1]), .w_out(ws[i+1][j]), .out(os[i][j])
      );
      always_ff @(posedge clk) ls[i][j+1] <= rst ? 1'b0 : ls[i][j];
    end
  end
  for (genvar j = 0; j < C; j++) begin : g_edge
    assign ws[0][j] = w_top[j];
    assign os[R][j] = '0;
    assign out_top[j] = os[0][j];
  end
endmodule
