// potq_tb: the simulation top (not synthesizable: memories loaded with $readmemh, a checker). It holds
// the memories potq.deploy.rtl.program writes (+dir=FOLDER): desc.hex (DESC_WORDS words per descriptor),
// wgt.hex (int8 weights, or their storage codes for the shift PE; uint8 input tables), par.hex (int32 biases,
// shifts), and per image img<k>.hex: every value of the graph at its address, the golden model's integers.
// Each node reads its inputs there and writes its output into `res`; `check` compares the descriptor's region
// of `res` with the golden values, sets `mismatches`, writes the region to out_img<k>_d<node>.hex when any
// differ, and poisons it for the next node. Memories read combinationally (an idealization: banked SRAMs in a chip).
module potq_tb import potq_pkg::*; #(
    parameter int R = 4,
    parameter int C = 4,
    parameter int ACT_AW = 22,
    parameter int W_AW = 22,
    parameter int P_AW = 18,
    parameter int D_AW = 16
) (
    input  logic       clk,
    input  logic       rst,
    input  logic       load,
    input  logic       start,
    input  logic       check,
    input  int         image,
    input  int         node,
    input  logic [1:0] rounding,
    output logic       done,
    output int         mismatches
);
  logic [31:0] act[1 << ACT_AW];
  logic [31:0] res[1 << ACT_AW];
  logic [7:0] wgt[1 << W_AW];
  logic [31:0] par[1 << P_AW];
  logic [31:0] dsc[1 << D_AW];
  string dir;
  initial begin
    if (!$value$plusargs("dir=%s", dir)) dir = ".";
    $readmemh({dir, "/desc.hex"}, dsc);
    $readmemh({dir, "/wgt.hex"}, wgt);
    $readmemh({dir, "/par.hex"}, par);
    for (int a = 0; a < (1 << ACT_AW); a++) res[a] = 32'hBAD0BAD0;
  end

  logic [31:0] desc[DESC_WORDS];
  logic [31:0] x_addr[R], v_addr[2], w_addr[C], b_addr[C], s_addr[C], o_addr[C];
  logic signed [31:0] x_data[R], v_data[2], b_data[C], s_data[C], o_data[C];
  logic signed [7:0] w_data[C];
  logic we[C];
  for (genvar f = 0; f < DESC_WORDS; f++) begin : g_desc
    assign desc[f] = dsc[D_AW'(node * DESC_WORDS + f)];
  end
  for (genvar i = 0; i < R; i++) begin : g_x
    assign x_data[i] = act[x_addr[i][ACT_AW-1:0]];
  end
  for (genvar i = 0; i < 2; i++) begin : g_v
    assign v_data[i] = act[v_addr[i][ACT_AW-1:0]];
  end
  for (genvar j = 0; j < C; j++) begin : g_w
    assign w_data[j] = wgt[w_addr[j][W_AW-1:0]];
    assign b_data[j] = par[b_addr[j][P_AW-1:0]];
    assign s_data[j] = par[s_addr[j][P_AW-1:0]];
  end

  potq_core #(.R(R), .C(C)) u_core (.*);

  always @(posedge clk) begin
    for (int j = 0; j < C; j++) if (we[j]) res[o_addr[j][ACT_AW-1:0]] <= o_data[j];
  end

  int base, size, bad;
  always @(posedge clk) begin
    if (load) $readmemh($sformatf("%s/img%0d.hex", dir, image), act);
    if (check) begin
      base = desc[D_CHK_BASE];
      size = desc[D_CHK_SIZE];
      bad = 0;
      for (int a = base; a < base + size; a++) if (res[a] != act[a]) bad++;
      mismatches <= bad;
      if (bad > 0) $writememh($sformatf("%s/out_img%0d_d%0d.hex", dir, image, node), res, base, base + size - 1);
      for (int a = base; a < base + size; a++) res[a] = 32'hBAD0BAD0;
    end
  end
endmodule
