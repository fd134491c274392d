// Drives potq_pe_tb (potq.deploy.rtl.pe): reads int32 n, cycles, then per cycle int32 x, last, out_in and the
// n PEs' weight codes on stdin; after one reset cycle clocks the PEs once per record and writes per cycle
// int32 out[n], x_out[n], w_out[n] (the registers after the clock edge) on stdout. Binary both ways: a full
// sweep is hundreds of thousands of cycles.
#include <cstdint>
#include <cstdio>
#include <vector>
#include "Vpotq_pe_tb.h"
#include "verilated.h"

static void tick(Vpotq_pe_tb &top) {
    top.clk = 1;
    top.eval();
    top.clk = 0;
    top.eval();
}

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    Vpotq_pe_tb top;
    int32_t head[2];
    if (fread(head, sizeof head, 1, stdin) != 1) return 1;
    const int n = head[0], cycles = head[1];
    std::vector<int32_t> in(3 + n), res(3 * n);
    top.clk = 0;
    top.rst = 1;
    top.eval();
    tick(top);
    top.rst = 0;
    for (int t = 0; t < cycles; t++) {
        if (fread(in.data(), sizeof(int32_t), in.size(), stdin) != in.size()) return 1;
        top.x_in = in[0];  // already CODE_W + 1 bits of two's complement
        top.last = in[1];
        top.out_in = (uint32_t)in[2];
        for (int i = 0; i < n; i++) top.w_in[i] = (uint8_t)in[3 + i];
        tick(top);
        for (int i = 0; i < n; i++) {
            res[i] = (int32_t)top.out[i];  // ACC_W = 32 bits: the C++ int32
            res[n + i] = top.x_out[i];
            res[2 * n + i] = top.w_out[i];
        }
        fwrite(res.data(), sizeof(int32_t), res.size(), stdout);
    }
    return 0;
}
