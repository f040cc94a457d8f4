/* Sanitizer harness for csrc/exact_cpu.c's bands (tools/sanitize_exact_cpu.sh builds and runs it
 * under ThreadSanitizer, then AddressSanitizer + UBSan): random blocks of every sampling shape
 * decoded in one band and in 2..14, compared byte for byte. The pixel stage is static C, so the
 * source is included (its path comes from the build: EXACT_CPU_SOURCE). */
#include EXACT_CPU_SOURCE
#include <stdio.h>

static uint32_t seed = 1;
static int rnd(int lo, int hi) { seed = seed * 1103515245u + 12345u; return lo + (int)((seed >> 8) % (uint32_t)(hi - lo)); }
static int run(int H, int W, int n, const int *hs, const int *vs, int convert, int bands) {
    int hmax = 1, vmax = 1;
    for (int k = 0; k < n; k++) { if (hs[k] > hmax) hmax = hs[k]; if (vs[k] > vmax) vmax = vs[k]; }
    Comp c1[4], c2[4];
    int16_t *blocks[4]; int32_t q[4][64];
    memset(c1, 0, sizeof c1);
    for (int k = 0; k < n; k++) {
        Comp *c = &c1[k];
        c->ch = (H * vs[k] + vmax - 1) / vmax; c->cw = (W * hs[k] + hmax - 1) / hmax;
        c->bh = (c->ch + 7) / 8; c->bw = (c->cw + 7) / 8; c->stride = c->bw * 8;
        c->hf = hmax / hs[k]; c->vf = vmax / vs[k];
        c->mode = (c->hf == 2 && c->vf == 1 && c->cw > 2) ? 1 : (c->hf == 1 && c->vf == 2) ? 2 : (c->hf == 2 && c->vf == 2 && c->cw > 2) ? 3 : 0;
        blocks[k] = malloc(c->bh * c->bw * 64 * 2);
        for (Py_ssize_t i = 0; i < c->bh * c->bw * 64; i++) blocks[k][i] = (int16_t)(i % 64 == 0 ? rnd(-60, 60) : rnd(-3, 4));
        for (int i = 0; i < 64; i++) q[k][i] = rnd(1, 30);
        c->blocks = blocks[k]; idct_init(&c->idct, q[k]); c->stop = c->bh;
    }
    memcpy(c2, c1, sizeof c1);
    uint8_t *o1 = malloc(H * W * n), *o2 = malloc(H * W * n);
    for (int pass = 0; pass < 2; pass++) {
        Comp *cs = pass ? c2 : c1;
        for (int k = 0; k < n; k++) {
            cs[k].plane = malloc(cs[k].bh * 8 * cs[k].stride);
            cs[k].row = malloc(cs[k].hf * cs[k].cw + 8);
            cs[k].sums = malloc((cs[k].cw + 2) * sizeof(int16_t));
            cs[k].done = 0;
        }
        upsample_color_image(cs, n, pass ? o2 : o1, H, W, convert, n, pass ? bands : 1);
    }
    int same = memcmp(o1, o2, H * W * n) == 0;
    for (int pass = 0; pass < 2; pass++) {
        Comp *cs = pass ? c2 : c1;
        for (int k = 0; k < n; k++) { free((void *)cs[k].plane); free(cs[k].row); free(cs[k].sums); }
    }
    for (int k = 0; k < n; k++) free(blocks[k]);
    free(o1); free(o2);
    return same;
}
int main(void) {
    int cases = 0, bad = 0;
    int hs420[] = {2, 1, 1}, vs420[] = {2, 1, 1}, hs440[] = {1, 1, 1}, vs440[] = {2, 1, 1}, hs14[] = {1, 1, 1}, vs14[] = {4, 1, 1};
    int hs444[] = {1, 1, 1, 1}, vs444[] = {1, 1, 1, 1}, hs4c[] = {2, 1, 1, 2}, vs4c[] = {2, 1, 1, 2}, hs422[] = {2, 1, 1}, vs422[] = {1, 1, 1};
    struct { int H, W, n; int *hs, *vs; int convert; } t[] = {
        {301, 45, 3, hs420, vs420, 1}, {200, 130, 3, hs440, vs440, 1}, {160, 33, 3, hs14, vs14, 1},
        {97, 64, 4, hs444, vs444, 0}, {130, 90, 4, hs4c, vs4c, 0}, {123, 77, 3, hs422, vs422, 1}, {150, 70, 1, hs444, vs444, 0}};
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
        for (int bands = 2; bands <= 16; bands += 3) {
            cases++;
            if (!run(t[i].H, t[i].W, t[i].n, t[i].hs, t[i].vs, t[i].convert, bands)) { bad++; printf("mismatch case %u bands %d\n", i, bands); }
        }
    printf("%d cases, %d mismatches\n", cases, bad);
    return bad != 0;
}
