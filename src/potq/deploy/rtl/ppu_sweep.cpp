// Drives potq_ppu_sweep: reads "acc shift zp lo hi requant" lines on stdin, prints per line the rounded
// value and the PPU's output under each rounding rule ("r0 r1 r2 y0 y1 y2").
#include <cstdio>
#include <cstdint>
#include "Vpotq_ppu_sweep.h"
#include "verilated.h"

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    Vpotq_ppu_sweep top;
    long long acc, shift, zp, lo, hi, requant;
    while (scanf("%lld %lld %lld %lld %lld %lld", &acc, &shift, &zp, &lo, &hi, &requant) == 6) {
        top.acc = (uint32_t)(int32_t)acc;
        top.shift = (uint8_t)(int8_t)shift;
        top.zp = zp; top.lo = lo; top.hi = hi; top.requant = requant;
        top.eval();
        if (Verilated::gotFinish()) {  // a module's $finish: the results stop here
            fprintf(stderr, "a module called $finish: the sweep stopped\n");
            return 3;
        }
        for (int k = 0; k < 3; k++) printf("%lld ", (long long)(int64_t)top.r[k]);
        for (int k = 0; k < 3; k++) printf("%d ", (int)(int32_t)top.y[k]);
        printf("\n");
    }
    return 0;
}
