/* Sanitizer harness for csrc/exact_cpu.c's threads (tools/sanitize_exact_cpu.sh builds and runs
 * it under ThreadSanitizer, then AddressSanitizer + UBSan): random blocks of every sampling shape
 * decoded in one band and in 2..14, and streamed (the blocks written and handed over block row by
 * block row by a producer thread through a RowFeed, as kdecode._jpegnative's reader does, while
 * the pixel stage runs; the producer then decodes the bottom rows itself, feed_help; half of the
 * streamed runs read the blocks from rows padded wider, as a progressive file's stay), compared
 * byte for byte; and a producer that fails halfway, which must
 * stop the pixel stage. The pixel stage is static C, so the source is included (its path comes
 * from the build: EXACT_CPU_SOURCE). */
#include EXACT_CPU_SOURCE
#include <stdio.h>
#include <time.h>

static uint32_t seed = 1;
static int splits; /* streamed runs in which the producer took rows (feed_help) */
static int rnd(int lo, int hi) { seed = seed * 1103515245u + 12345u; return lo + (int)((seed >> 8) % (uint32_t)(hi - lo)); }
/* The producer of a streamed decode: copies each iMCU row's block rows of every component from
 * `src` into the blocks the pixel stage reads, then publishes them (with pauses, so that both
 * sides get ahead of each other); fails after `fail_at` iMCU rows when that is >= 0. */
typedef struct {
    RowFeed *feed;
    int n, vmax, fail_at, H, W, convert, pad;
    Comp *comps, idle[4];
    uint8_t *out;
    int16_t **src, **dst;
    int vs[4];
} Producer;

static void *produce(void *arg) {
    Producer *p = (Producer *)arg;
    Py_ssize_t imcu_rows = (p->comps[0].bh + p->vs[0] - 1) / p->vs[0];
    for (Py_ssize_t m = 0; m < imcu_rows; m++) {
        if (m == p->fail_at) {
            feed_publish(p->feed, -1, 0);
            return NULL;
        }
        for (int k = 0; k < p->n; k++) {
            Comp *c = &p->comps[k];
            Py_ssize_t r0 = m * p->vs[k], r1 = r0 + p->vs[k] < c->bh ? r0 + p->vs[k] : c->bh;
            if (r0 >= r1) continue;
            for (Py_ssize_t r = r0; r < r1; r++)
                memcpy(p->dst[k] + r * (c->bw + p->pad) * 64, p->src[k] + r * c->bw * 64, (size_t)(c->bw * 64 * 2));
            feed_publish(p->feed, k, r1);
        }
        if (rnd(0, 4) == 0) {
            struct timespec pause = {0, rnd(1, 200) * 1000};
            nanosleep(&pause, NULL);
        }
    }
    for (int k = 0; k < p->n; k++) feed_publish(p->feed, k, p->comps[k].bh);
    feed_help(p->feed, p->idle, p->n, p->out, p->H, p->W, p->convert, p->n); /* as kdecode._jpegnative does */
    return NULL;
}

/* bands > 0: decode in that many bands; 0: streamed; -1: streamed with a producer that fails
 * halfway (then only "no hang, no race" is checked). */
static int run(int H, int W, int n, const int *hs, const int *vs, int convert, int bands, int pad) {
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
    int16_t *streamed[4] = {0};
    RowFeed feed;
    feed_init(&feed);
    for (int pass = 0; pass < 2; pass++) {
        Comp *cs = pass ? c2 : c1;
        for (int k = 0; k < n; k++) {
            comp_alloc(&cs[k], 1);
            cs[k].done = 0;
            if (pass && bands <= 0) { /* the pixel stage reads blocks the producer is still writing */
                streamed[k] = calloc(cs[k].bh * (cs[k].bw + pad) * 64, 2);
                cs[k].blocks = streamed[k];
                cs[k].row_blocks = pad ? cs[k].bw + pad : 0;
                cs[k].feed = &feed;
                cs[k].index = k;
            }
        }
        if (pass && bands <= 0) {
            Producer p = {.feed = &feed, .n = n, .vmax = vmax, .fail_at = bands < 0 ? (cs[0].bh / vs[0]) / 2 : -1,
                          .H = H, .W = W, .convert = convert, .pad = pad, .comps = cs, .out = o2, .src = blocks,
                          .dst = streamed};
            memcpy(p.idle, cs, sizeof p.idle);
            memcpy(p.vs, vs, (size_t)n * sizeof *vs);
            pthread_t producer;
            pthread_create(&producer, NULL, produce, &p);
            upsample_color_rows(cs, n, o2, 0, H, W, convert, n);
            pthread_join(producer, NULL);
            splits += feed.end < H;
            if (bands < 0) memcpy(o2, o1, H * W * n); /* rows after the failure stay unwritten */
        } else {
            upsample_color_image(cs, n, pass ? o2 : o1, H, W, convert, n, pass ? bands : 1);
        }
    }
    feed_destroy(&feed);
    int same = memcmp(o1, o2, H * W * n) == 0;
    for (int k = 0; k < n; k++) free(streamed[k]);
    for (int pass = 0; pass < 2; pass++) {
        Comp *cs = pass ? c2 : c1;
        for (int k = 0; k < n; k++) comp_free(&cs[k], 1);
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
        for (int bands = -1; bands <= 16; bands += bands < 2 ? 1 : 3) { /* -1, 0: streamed; 1 is the reference */
            if (bands == 1) continue;
            for (int rep = 0; rep < (bands <= 0 ? 4 : 1); rep++) { /* streamed: other timings each time */
                cases++;
                if (!run(t[i].H, t[i].W, t[i].n, t[i].hs, t[i].vs, t[i].convert, bands, bands <= 0 ? rep % 3 : 0)) {
                    bad++;
                    printf("mismatch case %u bands %d\n", i, bands);
                }
            }
        }
    printf("%d cases, %d mismatches; the producer took rows in %d streamed runs\n", cases, bad, splits);
    return bad != 0;
}
