// Drives potq_tb: for each image, load its memory image, then run every descriptor (node) once and print
// "img <k> desc <d> cycles <n> mismatches <m>" (cycles: from the start pulse to done, both included).
// Usage: potq_sim +dir=FOLDER IMAGES DESCRIPTORS ROUNDING
#include <cstdio>
#include <cstdlib>
#include "Vpotq_tb.h"
#include "verilated.h"

static void tick(Vpotq_tb &top) {
    top.clk = 0;
    top.eval();
    top.clk = 1;
    top.eval();
    if (Verilated::gotFinish()) {  // a module's $finish: the run is over, and potq must not read it as done
        fprintf(stderr, "a module called $finish: the simulation stopped\n");
        exit(3);
    }
}

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    int pos[3], n = 0;
    for (int i = 1; i < argc && n < 3; i++)
        if (argv[i][0] != '+') pos[n++] = atoi(argv[i]);
    if (n != 3) {
        fprintf(stderr, "usage: %s +dir=FOLDER IMAGES DESCRIPTORS ROUNDING\n", argv[0]);
        return 2;
    }
    Vpotq_tb *top = new Vpotq_tb;
    top->eval();  // the initial blocks run here
    if (Verilated::gotFinish()) {
        fprintf(stderr, "a module called $finish: the simulation stopped\n");
        return 3;
    }
    top->rounding = pos[2];
    top->rst = 1;
    tick(*top);
    tick(*top);
    top->rst = 0;
    for (int img = 0; img < pos[0]; img++) {
        top->image = img;
        top->load = 1;
        tick(*top);
        top->load = 0;
        for (int d = 0; d < pos[1]; d++) {
            top->node = d;
            top->start = 1;
            tick(*top);
            top->start = 0;
            unsigned long long cycles = 1;
            while (!top->done) {
                tick(*top);
                if (++cycles > 4000000000ULL) {
                    fprintf(stderr, "descriptor %d never finished\n", d);
                    return 1;
                }
            }
            top->check = 1;
            tick(*top);
            top->check = 0;
            printf("img %d desc %d cycles %llu mismatches %d\n", img, d, cycles, top->mismatches);
        }
    }
    fflush(stdout);
    top->final();
    delete top;
    return 0;
}
