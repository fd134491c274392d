/* Runs the exported test vectors through potq_infer and counts the logits that differ from the golden
   model's. Usage: ./potq_main [repeats]; exit status 0 when none differs. Build: cc -std=c99 -O2 -o potq_main potq_model.c main.c */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "potq_model.h"
#include "potq_vectors.h"

int main(int argc, char **argv) {
    static int32_t logits[POTQ_NUM_OUTPUTS];
    long repeats = argc > 1 ? atol(argv[1]) : 1, r, mismatches = 0, classes = 0;
    int k, i;
    clock_t t0 = clock();
    double seconds;
    if (repeats < 1) repeats = 1;
    for (r = 0; r < repeats; r++)
        for (k = 0; k < POTQ_NUM_VECTORS; k++) {
            int best = potq_infer(potq_vector_images[k], logits), golden_best = 0;
            if (r > 0) continue;
            for (i = 0; i < POTQ_NUM_OUTPUTS; i++) {
                mismatches += logits[i] != potq_vector_logits[k][i];
                if (potq_vector_logits[k][i] > potq_vector_logits[k][golden_best]) golden_best = i;
            }
            classes += best != golden_best;
        }
    seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
    printf("vectors %d mismatching_logits %ld differing_classes %ld images_per_second %.1f\n", POTQ_NUM_VECTORS,
           mismatches, classes, seconds > 0 ? repeats * POTQ_NUM_VECTORS / seconds : 0.0);
    return mismatches == 0 && classes == 0 ? 0 : 1;
}
