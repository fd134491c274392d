/* potq C99 runtime kernels: integer-only, no malloc, no float. One function per op type of the graph;
 * `potq export --format c` appends the generated potq_infer() that calls them node by node.
 * Activations are uint8 codes in C, H, W order; the logits are int32 accumulators.
 * The integer rules are the golden model's (model.json "rule" of each node): every accumulator fits
 * int32 (potq proved it at export), requantization works in int64 so that no shift overflows.
 * The kernels have external linkage so that a graph without some op type compiles without warnings. */

#define POTQ_SHIFT_CAP @SHIFT_CAP@ /* an int32 accumulator shifted by @SHIFT_CAP@ or more rounds like by any larger amount */

/* a * 2^-s rounded down, for any sign of a (>> of a negative value is implementation-defined in C99) */
static int64_t potq_floor_shift(int64_t a, int s) {
    return a >= 0 ? a >> s : -((-a - 1) >> s) - 1;
}

/* acc * 2^-s, rounded by POTQ_ROUNDING; s <= 0 is an exact left shift (a product: << of a negative is UB) */
static int64_t potq_round_shift(int64_t acc, int s) {
    int64_t half, q, rem;
    if (s <= 0) return acc * ((int64_t)1 << -s);
    if (s > POTQ_SHIFT_CAP) s = POTQ_SHIFT_CAP;
#if POTQ_ROUNDING == POTQ_ROUNDING_FLOOR
    (void)half; (void)q; (void)rem;
    return potq_floor_shift(acc, s);
#elif POTQ_ROUNDING == POTQ_ROUNDING_HALF_UP
    (void)q; (void)rem;
    half = (int64_t)1 << (s - 1);
    return potq_floor_shift(acc + half, s);
#elif POTQ_ROUNDING == POTQ_ROUNDING_HALF_EVEN
    half = (int64_t)1 << (s - 1);
    q = potq_floor_shift(acc, s);
    rem = acc - q * ((int64_t)1 << s); /* in [0, 2^s) */
    return q + ((rem > half || (rem == half && q % 2 != 0)) ? 1 : 0);
#else
#error "unknown POTQ_ROUNDING"
#endif
}

/* round_shift, then the output zero point, then the clamp: one activation code */
uint8_t potq_requantize(int64_t acc, int s, int zp, int lo, int hi) {
    int64_t y = potq_round_shift(acc, s) + zp;
    return (uint8_t)(y < lo ? lo : y > hi ? hi : y);
}

/* uint8 image -> input codes: lut[c][pixel] (normalization and input quantization in one table) */
void potq_input(const uint8_t *image, const uint8_t *lut, int c, int hw, uint8_t *y) {
    int i, j;
    for (i = 0; i < c; i++)
        for (j = 0; j < hw; j++) y[i * hw + j] = lut[i * 256 + image[i * hw + j]];
}

typedef struct {
    int c, h, w;              /* input shape */
    int o, oh, ow;            /* output shape */
    int kh, kw, sh, sw, ph, pw, groups;
    int zp_in;
    const int8_t *weight;     /* (o, c / groups, kh, kw) */
    const int32_t *bias;      /* (o) */
    const int32_t *shift;     /* (o) or (1); NULL: emit the int32 accumulators */
    int shifts;               /* 1 or o */
    int zp_out, lo, hi;
} potq_conv_t;

/* convolution (a linear layer is a 1x1 convolution of a 1x1 image): acc = bias + sum (x - zp) * w over the
 * group's input channels and the kernel; padding contributes 0 (x = zp in code space). Per output channel,
 * the accumulators of the whole output plane are summed one weight at a time, so that the innermost loop
 * runs over contiguous pixels (the compiler vectorizes it); integer sums are exact in any order. */
static int32_t potq_plane[POTQ_MAX_PLANE];

void potq_conv(const potq_conv_t *p, const uint8_t *x, uint8_t *y, int32_t *acc_out) {
    int cg = p->c / p->groups, og = p->o / p->groups, plane = p->oh * p->ow;
    int o, i, ky, kx, oy, ox, j;
    for (o = 0; o < p->o; o++) {
        int g = o / og;
        const int8_t *wo = p->weight + (long)o * cg * p->kh * p->kw;
        for (j = 0; j < plane; j++) potq_plane[j] = p->bias[o];
        for (i = 0; i < cg; i++) {
            const uint8_t *xi = x + (long)(g * cg + i) * p->h * p->w;
            for (ky = 0; ky < p->kh; ky++)
                for (kx = 0; kx < p->kw; kx++) {
                    int32_t w = wo[((long)i * p->kh + ky) * p->kw + kx];
                    /* the output columns whose input column ox * sw - pw + kx lies inside the image */
                    int ox0 = 0, ox1 = p->ow, off = kx - p->pw;
                    if (w == 0) continue;
                    while (ox0 < ox1 && ox0 * p->sw - p->pw + kx < 0) ox0++;
                    while (ox1 > ox0 && (ox1 - 1) * p->sw - p->pw + kx >= p->w) ox1--;
                    for (oy = 0; oy < p->oh; oy++) {
                        int iy = oy * p->sh - p->ph + ky;
                        const uint8_t *row;
                        int32_t *acc;
                        if (iy < 0 || iy >= p->h) continue;
                        row = xi + (long)iy * p->w;
                        acc = potq_plane + oy * p->ow;
                        if (p->sw == 1)
                            for (ox = ox0; ox < ox1; ox++) acc[ox] += ((int32_t)row[ox + off] - p->zp_in) * w;
                        else
                            for (ox = ox0; ox < ox1; ox++) acc[ox] += ((int32_t)row[ox * p->sw + off] - p->zp_in) * w;
                    }
                }
        }
        if (p->shift) {
            int s = p->shift[p->shifts == 1 ? 0 : o];
            for (j = 0; j < plane; j++) y[(long)o * plane + j] = potq_requantize(potq_plane[j], s, p->zp_out, p->lo, p->hi);
        } else {
            for (j = 0; j < plane; j++) acc_out[(long)o * plane + j] = potq_plane[j];
        }
    }
}

/* residual addition: acc = ((a - zp_a) << align_a) + ((b - zp_b) << align_b), then requantization */
void potq_add(const uint8_t *a, const uint8_t *b, long n, int zp_a, int zp_b, int align_a, int align_b,
                     int shift, int zp, int lo, int hi, uint8_t *y) {
    long i;
    for (i = 0; i < n; i++) {
        int64_t acc = (int64_t)(a[i] - zp_a) * ((int64_t)1 << align_a) + (int64_t)(b[i] - zp_b) * ((int64_t)1 << align_b);
        y[i] = potq_requantize(acc, shift, zp, lo, hi);
    }
}

typedef struct {
    int c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
} potq_pool_t;

/* max over the window of the codes; padding never wins */
void potq_maxpool(const potq_pool_t *p, const uint8_t *x, uint8_t *y) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->c; c++)
        for (oy = 0; oy < p->oh; oy++)
            for (ox = 0; ox < p->ow; ox++) {
                int m = -1;
                for (ky = 0; ky < p->kh; ky++) {
                    int iy = oy * p->sh - p->ph + ky;
                    if (iy < 0 || iy >= p->h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int ix = ox * p->sw - p->pw + kx;
                        int v;
                        if (ix < 0 || ix >= p->w) continue;
                        v = x[((long)c * p->h + iy) * p->w + ix];
                        if (v > m) m = v;
                    }
                }
                y[((long)c * p->oh + oy) * p->ow + ox] = (uint8_t)m;
            }
}

/* sum over the window of (x - zp_in) (padding adds 0), then a shift that includes the division by 2^n */
void potq_avgpool(const potq_pool_t *p, const uint8_t *x, int zp_in, int shift, int zp, int lo, int hi,
                         uint8_t *y) {
    int c, oy, ox, ky, kx;
    for (c = 0; c < p->c; c++)
        for (oy = 0; oy < p->oh; oy++)
            for (ox = 0; ox < p->ow; ox++) {
                int32_t acc = 0;
                for (ky = 0; ky < p->kh; ky++) {
                    int iy = oy * p->sh - p->ph + ky;
                    if (iy < 0 || iy >= p->h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int ix = ox * p->sw - p->pw + kx;
                        if (ix < 0 || ix >= p->w) continue;
                        acc += x[((long)c * p->h + iy) * p->w + ix] - zp_in;
                    }
                }
                y[((long)c * p->oh + oy) * p->ow + ox] = potq_requantize(acc, shift, zp, lo, hi);
            }
}

/* concatenation along channels and flatten move codes: in C, H, W order both are copies */
void potq_copy(const uint8_t *x, long n, uint8_t *y) {
    long i;
    for (i = 0; i < n; i++) y[i] = x[i];
}
