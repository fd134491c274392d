// potq_core: the accelerator. One node per start pulse, described by a descriptor (potq_pkg's D_* fields,
// written by potq.deploy.rtl.program), over memories it reads and writes through its ports:
// - OP_MAC (conv, grouped and depthwise included; linear): the GEMM of the node's im2col, per group
//   M = OH*OW output pixels x N = O/G channels x K = (C/G)*KH*KW, tiled over the R x C output-stationary
//   array (potq_array_os) in folds of R pixels x C channels. The feeders compute the im2col address of each
//   row's pixel, pad with 0 (= zp - zp), subtract the zero point and skew; a fold takes
//   P = max(K + R + C - 2, 2R - 1) cycles (SCALE-Sim's output-stationary fold, K + R + C - 2, whenever
//   R <= K + C - 1), the next fold starting at once: results leave through the top edge of each column
//   (potq_pe's output chain) while the next fold computes, each plus its bias through a PPU into memory.
//   After the last fold, a tail of K + 2R + C - 2 - P cycles (R when P = K + R + C - 2) empties the chains.
// - the vector unit, one output per element (pools: one window tap per cycle): OP_ADD (align, add, one
//   rounding shift in the PPU), OP_MAXPOOL, OP_AVGPOOL (window sum of x - zp, the PPU's shift), OP_COPY
//   (concat pieces, flatten), OP_LUT (the input node's table).
// Cycles per node: 1 (latch the descriptor) + the work above; potq.deploy.rtl.program.rtl_cycles is the
// closed form and tests/test_rtl.py holds it equal to the simulated count.
module potq_core import potq_pkg::*; #(
    parameter int R = 4,
    parameter int C = 4
) (
    input  logic               clk,
    input  logic               rst,
    input  logic               start,
    input  logic [1:0]         rounding,
    input  logic [31:0]        desc[DESC_WORDS],
    output logic               done,
    output logic [31:0]        x_addr[R],
    input  logic signed [31:0] x_data[R],
    output logic [31:0]        v_addr[2],
    input  logic signed [31:0] v_data[2],
    output logic [31:0]        w_addr[C],
    input  logic signed [7:0]  w_data[C],
    output logic [31:0]        b_addr[C],
    input  logic signed [31:0] b_data[C],
    output logic [31:0]        s_addr[C],
    input  logic signed [31:0] s_data[C],
    output logic               we[C],
    output logic [31:0]        o_addr[C],
    output logic signed [31:0] o_data[C]
);
  typedef enum logic [2:0] {IDLE, FEED, TAIL, VEC, FIN} state_t;
  state_t state;
  int d[DESC_WORDS];
  int g, n0, m0, t, ci, kh, kw, idx, th, tw, acc_r;
  int pg, pn0, pm0;  // the previous fold, whose results may still be leaving the array
  logic pv;

  // the node's GEMM shape (per group)
  int cin_g, n_g, k_len, m_len, plane_in, taps, period;
  assign cin_g = d[D_C] / d[D_G];
  assign n_g = d[D_O] / d[D_G];
  assign k_len = cin_g * d[D_KH] * d[D_KW];
  assign m_len = d[D_OH] * d[D_OW];
  assign plane_in = d[D_H] * d[D_W];
  assign taps = d[D_KH] * d[D_KW];
  // a fold's cycles: the wavefront (K + R + C - 2), and at least 2R - 1 so that the previous fold's results
  // (one every other cycle per column) have left the output chains before the next fold's arrive
  assign period = k_len + R + C - 2 > 2 * R - 1 ? k_len + R + C - 2 : 2 * R - 1;
  assign done = state == FIN;

  // the input node's table entry: lut[channel][pixel]
  logic [31:0] lut_addr;
  assign lut_addr = 32'(d[D_WB] + (idx / (plane_in == 0 ? 1 : plane_in)) * 256 + (v_data[0] & 255));

  // ---- feeders: im2col addresses, zero point, padding, skew ----
  logic signed [CODE_W:0] x_now[R], x_left[R], xsk[R][R];
  logic last_now, last_left[R], lsk[R][R];
  assign last_now = state == FEED && t == k_len - 1;  // the fold's last product: travels with x
  logic signed [CODE_W-1:0] w_now[C], w_top[C], wsk[C][C];
  logic signed [ACC_W-1:0] out_top[C];
  for (genvar i = 0; i < R; i++) begin : g_xfeed
    int m, oh, ow, ih, iw;
    logic ok;
    always_comb begin
      m = m0 + i;
      oh = d[D_OW] == 0 ? 0 : m / d[D_OW];
      ow = d[D_OW] == 0 ? 0 : m % d[D_OW];
      ih = oh * d[D_SH] - d[D_PH] + kh;
      iw = ow * d[D_SW] - d[D_PW] + kw;
      ok = state == FEED && t < k_len && m < m_len && ih >= 0 && ih < d[D_H] && iw >= 0 && iw < d[D_W];
      x_addr[i] = ok ? 32'(d[D_IN0] + (g * cin_g + ci) * plane_in + ih * d[D_W] + iw) : 32'(d[D_IN0]);
    end
    // (address and data in separate blocks: no combinational loop through the memory)
    assign x_now[i] = ok ? (CODE_W+1)'(x_data[i] - d[D_ZP0]) : '0;  // padding: zp_in in code space, 0 here
    if (i == 0) begin : g_noskew
      assign x_left[0] = x_now[0];
      assign last_left[0] = last_now;
    end else begin : g_skew
      assign x_left[i] = xsk[i][i-1];
      assign last_left[i] = lsk[i][i-1];
      always_ff @(posedge clk) begin
        xsk[i][0] <= x_now[i];
        lsk[i][0] <= rst ? 1'b0 : last_now;
        for (int s = 1; s < i; s++) begin
          xsk[i][s] <= xsk[i][s-1];
          lsk[i][s] <= rst ? 1'b0 : lsk[i][s-1];
        end
      end
    end
  end
  for (genvar j = 0; j < C; j++) begin : g_wfeed
    logic ok;
    always_comb begin
      ok = state == FEED && t < k_len && n0 + j < n_g;
      w_addr[j] = ok ? 32'(d[D_WB] + (g * n_g + n0 + j) * k_len + t) : 32'(d[D_WB]);
      if (j == 0 && state == VEC) w_addr[j] = lut_addr;
    end
    assign w_now[j] = ok ? w_data[j] : '0;
    if (j == 0) begin : g_noskew
      assign w_top[0] = w_now[0];
    end else begin : g_skew
      assign w_top[j] = wsk[j][j-1];
      always_ff @(posedge clk) begin
        wsk[j][0] <= w_now[j];
        for (int s = 1; s < j; s++) wsk[j][s] <= wsk[j][s-1];
      end
    end
  end

  potq_array_os #(.R(R), .C(C)) u_array (
      .clk(clk), .rst(rst), .x_left(x_left), .last_left(last_left), .w_top(w_top), .out_top(out_top)
  );

  // ---- the vector unit's element: addresses and the value it computes ----
  int vc, vr, voh, vow, vih, viw, vsum, vmax, vcur, vtap;
  logic vin, vlast_tap, vlast;
  logic signed [ACC_W-1:0] v_acc, v_out;
  logic v_ppu;
  always_comb begin
    vc = d[D_OH] * d[D_OW] == 0 ? 0 : idx / (d[D_OH] * d[D_OW]);
    vr = d[D_OH] * d[D_OW] == 0 ? 0 : idx % (d[D_OH] * d[D_OW]);
    voh = d[D_OW] == 0 ? 0 : vr / d[D_OW];
    vow = d[D_OW] == 0 ? 0 : vr % d[D_OW];
    vih = voh * d[D_SH] - d[D_PH] + th;
    viw = vow * d[D_SW] - d[D_PW] + tw;
    vin = vih >= 0 && vih < d[D_H] && viw >= 0 && viw < d[D_W];
    vtap = th * d[D_KW] + tw;
    vlast_tap = d[D_OP] != OP_MAXPOOL && d[D_OP] != OP_AVGPOOL ? 1'b1 : vtap == taps - 1;
    vlast = vlast_tap && idx == d[D_SIZE] - 1;
    v_addr[0] = 32'(d[D_IN0] + idx);
    v_addr[1] = 32'(d[D_IN1] + idx);
    if (d[D_OP] == OP_MAXPOOL || d[D_OP] == OP_AVGPOOL)
      v_addr[0] = vin ? 32'(d[D_IN0] + vc * plane_in + vih * d[D_W] + viw) : 32'(d[D_IN0]);
  end
  always_comb begin
    vcur = vin ? v_data[0] : -1;  // every code is >= 0: -1 never wins the max (padding never wins)
    vmax = vtap == 0 || vcur > acc_r ? vcur : acc_r;
    vsum = (vtap == 0 ? 0 : acc_r) + (vin ? v_data[0] - d[D_ZP0] : 0);
    v_ppu = 1'b0;
    v_acc = '0;
    v_out = v_data[0];  // OP_COPY
    case (d[D_OP])
      OP_ADD: begin
        v_ppu = 1'b1;
        v_acc = ((v_data[0] - d[D_ZP0]) <<< d[D_AL0]) + ((v_data[1] - d[D_ZP1]) <<< d[D_AL1]);
      end
      OP_AVGPOOL: begin
        v_ppu = 1'b1;
        v_acc = vsum;
      end
      OP_MAXPOOL: v_out = vmax;
      OP_LUT: v_out = {24'b0, w_data[0]};  // the table is uint8
      default: ;
    endcase
  end

  // ---- the PPUs: one per column and rounding rule; column 0's also serves the vector unit ----
  for (genvar j = 0; j < C; j++) begin : g_ppu
    int ec, ep, e, m, ch, n;
    logic hc, hp, ok;
    logic signed [ACC_W-1:0] acc, y[NUM_ROUNDINGS];
    logic signed [SHIFT_W-1:0] sh;
    always_comb begin
      // PE (i, j)'s result of the fold that began `age` cycles ago shows at out_top[j] when age = K + 2i + j
      ec = t - k_len - j;  // the current fold
      ep = t + period - k_len - j;  // the previous one
      hc = state == FEED && ec >= 0 && ec % 2 == 0 && ec < 2 * R;
      hp = pv && (state == FEED || state == TAIL) && ep >= 0 && ep % 2 == 0 && ep < 2 * R;
      e = hc ? ec : ep;
      n = (hc ? n0 : pn0) + j;
      m = (hc ? m0 : pm0) + e / 2;
      ch = (hc ? g : pg) * n_g + n;
      ok = (hc || hp) && n < n_g && m < m_len;
      b_addr[j] = 32'(d[D_BB] + (ok ? ch : 0));
      s_addr[j] = 32'(d[D_SB] + (ok && d[D_SHIFT_PER_CH] != 0 ? ch : 0));
      o_addr[j] = j == 0 && state == VEC ? 32'(d[D_OUT] + idx) : 32'(d[D_OUT] + ch * m_len + m);
    end
    always_comb begin
      sh = s_data[j] > 127 ? 8'sd127 : s_data[j] < -128 ? -8'sd128 : SHIFT_W'(s_data[j]);
      acc = j == 0 && state == VEC ? v_acc : out_top[j] + b_data[j];
      we[j] = ok || (j == 0 && state == VEC && vlast_tap);
      o_data[j] = j == 0 && state == VEC && !v_ppu ? v_out : y[rounding];
    end
    for (genvar k = 0; k < NUM_ROUNDINGS; k++) begin : g_rule
      potq_ppu #(.ROUNDING(k)) u_ppu (
          .acc(acc), .shift(sh), .zp(CODE_W'(d[D_ZPO])), .lo(CODE_W'(d[D_LO])), .hi(CODE_W'(d[D_HI])),
          .requant(state == VEC || d[D_REQUANT] != 0), .y(y[k])
      );
    end
  end

  // ---- the controller ----
  always_ff @(posedge clk) begin
    if (rst) begin
      state <= IDLE;
    end else begin
      case (state)
        IDLE: if (start) begin
          for (int f = 0; f < DESC_WORDS; f++) d[f] <= desc[f];
          {g, n0, m0, t, ci, kh, kw, idx, th, tw, acc_r} <= '0;
          pv <= 1'b0;
          state <= desc[D_OP] == OP_MAC ? FEED : VEC;
        end
        FEED: begin
          t <= t + 1;
          if (kw + 1 < d[D_KW]) kw <= kw + 1;
          else begin
            kw <= 0;
            if (kh + 1 < d[D_KH]) kh <= kh + 1;
            else begin
              kh <= 0;
              ci <= ci + 1;
            end
          end
          if (t == period - 1) begin  // the next fold starts now; this one's results are still leaving
            {t, ci, kh, kw} <= '0;
            {pv, pg, pn0, pm0} <= {1'b1, g, n0, m0};
            if (m0 + R < m_len) m0 <= m0 + R;
            else begin
              m0 <= 0;
              if (n0 + C < n_g) n0 <= n0 + C;
              else begin
                n0 <= 0;
                g <= g + 1;
                if (g + 1 == d[D_G]) state <= TAIL;
              end
            end
          end
        end
        TAIL: begin  // the last fold's results leave; the last one (PE (R-1, C-1)) at age K + 2R + C - 3
          t <= t + 1;
          if (t + period == k_len + 2 * R + C - 3) state <= FIN;
        end
        VEC: begin
          acc_r <= d[D_OP] == OP_MAXPOOL ? vmax : vsum;
          if (vlast_tap) begin
            th <= 0;
            tw <= 0;
            idx <= idx + 1;
          end else if (tw + 1 < d[D_KW]) tw <= tw + 1;
          else begin
            tw <= 0;
            th <= th + 1;
          end
          if (vlast) state <= FIN;
        end
        default: state <= IDLE;  // FIN: done for one cycle
      endcase
    end
  end
endmodule
