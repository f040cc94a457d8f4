/* kdecode._exactcpu: the exact (bit-exact with libjpeg-turbo) pixel stage on CPU, fed from
 * coefficients: islow IDCT, fancy chroma upsampling and YCbCr->RGB.
 *
 * The torch ops of kdecode/ops are the reference; this is their CPU fast path and computes the
 * same integer arithmetic step for step (int32, wrapping like torch: built with -fwrapv), so
 * tests/test_exact_cpu.py can demand identical output. Both functions release the GIL, so a
 * thread pool decodes images in parallel.
 *
 * One image can use several threads: bands of rows (upsample_color_image), or, fed block row by
 * block row by an entropy decoder on another thread (RowFeed), the rows as their blocks arrive.
 * kdecode._jpegnative compiles this file in (KDECODE_PIXEL_STAGE_ONLY) to do the latter while
 * libjpeg reads a file; tools/sanitize_exact_cpu.sh runs both under ThreadSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#define HAVE_THREADS 1
#endif

/* Hand-written AVX2 paths (IDCT of block pairs, colour rows) on x86-64, chosen at run time. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2 1
#endif

/* Vector-friendly loops: an AVX2 clone next to the baseline one, picked at load time. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

/* What kdecode._exactcpu compiles but only kdecode._jpegnative calls (the streaming side). */
#define MAYBE_UNUSED __attribute__((unused))

/* jidctint.c constants: FIX(x) = round(x * 2^13). */
#define CONST_BITS 13
#define PASS1_BITS 2
#define F0_298631336 2446
#define F0_390180644 3196
#define F0_541196100 4433
#define F0_765366865 6270
#define F0_899976223 7373
#define F1_175875602 9633
#define F1_501321110 12299
#define F1_847759065 15137
#define F1_961570560 16069
#define F2_053119869 16819
#define F2_562915447 20995
#define F3_072711026 25172

/* GCC/Clang vector extensions: 8 int32 lanes (one AVX2 register; two SSE2 registers on the
 * baseline clone). Element-wise arithmetic wraps like the scalar int32 code (-fwrapv). */
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int16_t v8h __attribute__((vector_size(16), aligned(2)));
typedef uint8_t v8b __attribute__((vector_size(8), aligned(1)));
typedef uint8_t v32b __attribute__((vector_size(32)));
#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#error "kdecode._exactcpu needs GCC >= 12 or Clang (__builtin_shufflevector)"
#endif

/* One 8-point islow pass (jidctint.c) on 8 lanes at once: vector k holds frequency k of eight
 * 1-D signals; on return vector k holds their sample k, descaled by `shift` with libjpeg's
 * rounding. */
static inline void islow_pass(v8i *x, int shift) {
    const int32_t half = 1 << (shift - 1);
    v8i z1, z2, z3, z4, z5, tmp0, tmp1, tmp2, tmp3, tmp10, tmp11, tmp12, tmp13, t0, t1, t2, t3;
    /* Even part. */
    z2 = x[2];
    z3 = x[6];
    z1 = (z2 + z3) * F0_541196100;
    tmp2 = z1 - z3 * F1_847759065;
    tmp3 = z1 + z2 * F0_765366865;
    tmp0 = (x[0] + x[4]) << CONST_BITS;
    tmp1 = (x[0] - x[4]) << CONST_BITS;
    tmp10 = tmp0 + tmp3 + half; /* the descale's rounding, added once to each even term */
    tmp13 = tmp0 - tmp3 + half;
    tmp11 = tmp1 + tmp2 + half;
    tmp12 = tmp1 - tmp2 + half;
    /* Odd part. */
    t0 = x[7];
    t1 = x[5];
    t2 = x[3];
    t3 = x[1];
    z1 = t0 + t3;
    z2 = t1 + t2;
    z3 = t0 + t2;
    z4 = t1 + t3;
    z5 = (z3 + z4) * F1_175875602;
    t0 *= F0_298631336;
    t1 *= F2_053119869;
    t2 *= F3_072711026;
    t3 *= F1_501321110;
    z1 *= -F0_899976223;
    z2 *= -F2_562915447;
    z3 = z3 * -F1_961570560 + z5;
    z4 = z4 * -F0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    x[0] = (tmp10 + t3) >> shift;
    x[7] = (tmp10 - t3) >> shift;
    x[1] = (tmp11 + t2) >> shift;
    x[6] = (tmp11 - t2) >> shift;
    x[2] = (tmp12 + t1) >> shift;
    x[5] = (tmp12 - t1) >> shift;
    x[3] = (tmp13 + t0) >> shift;
    x[4] = (tmp13 - t0) >> shift;
}

/* 8x8 int32 transpose in 24 two-register shuffles (unpack 32, unpack 64, swap 128-bit halves). */
static inline void transpose8(v8i *r) {
    v8i t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = SHUFFLE(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = SHUFFLE(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = SHUFFLE(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        s[i + 1] = SHUFFLE(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        s[i + 2] = SHUFFLE(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        s[i + 3] = SHUFFLE(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = SHUFFLE(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = SHUFFLE(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* Whether a block's 63 AC coefficients are all zero. */
static inline int dc_only(const int16_t *b) {
    uint64_t words[16], any;
    memcpy(words, b, sizeof words);
    any = words[0] & ~(uint64_t)0xffff; /* little endian: the DC is the low 16 bits */
    for (int i = 1; i < 16; i++) any |= words[i];
    return any == 0;
}

/* A block without AC coefficients: the arithmetic below, which gives one value for all 64. */
static inline void dc_block(const int16_t *b, const int32_t *qtable, uint8_t *dst, Py_ssize_t stride) {
    const int shift1 = CONST_BITS - PASS1_BITS, shift2 = CONST_BITS + PASS1_BITS + 3;
    int32_t w = (int32_t)(((uint32_t)(b[0] * qtable[0]) << CONST_BITS) + (1u << (shift1 - 1))) >> shift1;
    int32_t s = ((int32_t)(((uint32_t)w << CONST_BITS) + (1u << (shift2 - 1))) >> shift2) + 128;
    uint8_t value = (uint8_t)(s < 0 ? 0 : (s > 255 ? 255 : s));
    for (int v = 0; v < 8; v++) memset(dst + v * stride, value, 8);
}

/* Blocks [bx0, bx1) of one block row (`row`: its first block; `dst_row`: its first plane row,
 * of `stride` samples), dequantized and inverse transformed: int32 lanes, exactly the torch
 * reference's arithmetic. Blocks are [8, 8] int16 in natural order [v, u]. */
HOT static void idct_row_int32(const int16_t *row, const int32_t *qtable, uint8_t *dst_row, Py_ssize_t stride,
                               Py_ssize_t bx0, Py_ssize_t bx1) {
    v8i q[8];
    memcpy(q, qtable, sizeof q);
    for (Py_ssize_t bx = bx0; bx < bx1; bx++) {
        const int16_t *b = row + bx * 64;
        uint8_t *dst = dst_row + bx * 8;
        if (dc_only(b)) { /* common at low quality */
            dc_block(b, qtable, dst, stride);
            continue;
        }
        v8i x[8];
        /* Rows v of the block: vector v holds frequencies u = 0..7 (lanes). */
        for (int v = 0; v < 8; v++) x[v] = __builtin_convertvector(*(const v8h *)(b + 8 * v), v8i) * q[v];
        /* Pass 1: columns (along v); keeps PASS1_BITS of extra precision. */
        islow_pass(x, CONST_BITS - PASS1_BITS);
        /* Pass 2: rows (along u): vector u holds frequency u of the eight rows (lanes v);
         * removes the 2^3 DCT gain and the pass-1 scale. */
        transpose8(x);
        islow_pass(x, CONST_BITS + PASS1_BITS + 3);
        /* Back to rows, level shift, range limit, store. */
        transpose8(x);
        const v8i max = (v8i){0} + 255;
        for (int v = 0; v < 8; v++) {
            v8i s = x[v] + 128, over;
            s &= ~(s >> 31); /* max(s, 0) */
            over = s > max;  /* min(s, 255): lanes over 255 are all ones */
            s = (s & ~over) | (max & over);
            /* The low byte of each lane (little endian): one byte shuffle, not 8 extracts. */
            v32b bytes = (v32b)s;
            *(v8b *)(dst + v * stride) = SHUFFLE8(bytes, bytes, 0, 4, 8, 12, 16, 20, 24, 28);
        }
    }
}

#ifdef HAVE_AVX2
/* The same IDCT on two blocks at once in 16-bit lanes (one block per 128-bit half), with
 * pmaddwd: every product-sum of jidctint.c is rewritten as sums of (sample pair) x (constant
 * pair) products over the inputs, which in int32 ring arithmetic is the same value as the
 * scalar code's, bit for bit, whatever the grouping. What 16 bits cannot hold is checked, not
 * assumed: the dequantized coefficients and the pass-1 outputs must fit int16 (they always do
 * for images an 8-bit encoder made); otherwise this returns 0 and the caller runs the int32
 * path. tests/test_exact_cpu.py holds both paths to the torch reference. */
#define PAIR(a, b) _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)(b) << 16) | (uint16_t)(a)))

/* One 8-point pass: x[k] holds frequency k (int16, 8 lanes a block); out_lo/out_hi[k] get
 * sample k of lanes 0-3 / 4-7 as int32, plus `bias`, before the descale. The odd-part
 * constants are those of jidctint.c folded per input (e.g. t0' = t0 (F0.298 - F0.899 - F1.961 +
 * F1.175) + t2 (F1.175 - F1.961) + t3 (F1.175 - F0.899) + t1 F1.175). */
__attribute__((target("avx2"))) static inline void pass16(const __m256i *x, __m256i *out_lo, __m256i *out_hi,
                                                          __m256i bias) {
    const __m256i e04a = PAIR(8192, 8192), e04b = PAIR(8192, -8192);
    const __m256i e26a = PAIR(F0_541196100, F0_541196100 - F1_847759065);
    const __m256i e26b = PAIR(F0_541196100 + F0_765366865, F0_541196100);
    const __m256i a = PAIR(F0_298631336 - F0_899976223 + F1_175875602 - F1_961570560, F1_175875602 - F1_961570560);
    const __m256i b = PAIR(F1_175875602, F1_175875602 - F0_899976223);
    const __m256i c = PAIR(F1_175875602, F1_175875602 - F2_562915447);
    const __m256i d = PAIR(F2_053119869 - F2_562915447 + F1_175875602 - F0_390180644, F1_175875602 - F0_390180644);
    const __m256i e = PAIR(F1_175875602 - F1_961570560, F3_072711026 - F2_562915447 + F1_175875602 - F1_961570560);
    const __m256i f = PAIR(F1_175875602 - F2_562915447, F1_175875602);
    const __m256i g = PAIR(F1_175875602 - F0_899976223, F1_175875602);
    const __m256i h = PAIR(F1_175875602 - F0_390180644, F1_501321110 - F0_899976223 + F1_175875602 - F0_390180644);
    for (int half = 0; half < 2; half++) {
        __m256i u04, u26, u02, u13; /* (x0, x4), (x2, x6), (t0 = x7, t2 = x3), (t1 = x5, t3 = x1) */
        if (half == 0) {
            u04 = _mm256_unpacklo_epi16(x[0], x[4]);
            u26 = _mm256_unpacklo_epi16(x[2], x[6]);
            u02 = _mm256_unpacklo_epi16(x[7], x[3]);
            u13 = _mm256_unpacklo_epi16(x[5], x[1]);
        } else {
            u04 = _mm256_unpackhi_epi16(x[0], x[4]);
            u26 = _mm256_unpackhi_epi16(x[2], x[6]);
            u02 = _mm256_unpackhi_epi16(x[7], x[3]);
            u13 = _mm256_unpackhi_epi16(x[5], x[1]);
        }
        __m256i *out = half ? out_hi : out_lo;
        __m256i tmp0 = _mm256_add_epi32(_mm256_madd_epi16(u04, e04a), bias);
        __m256i tmp1 = _mm256_add_epi32(_mm256_madd_epi16(u04, e04b), bias);
        __m256i tmp2 = _mm256_madd_epi16(u26, e26a), tmp3 = _mm256_madd_epi16(u26, e26b);
        __m256i tmp10 = _mm256_add_epi32(tmp0, tmp3), tmp13 = _mm256_sub_epi32(tmp0, tmp3);
        __m256i tmp11 = _mm256_add_epi32(tmp1, tmp2), tmp12 = _mm256_sub_epi32(tmp1, tmp2);
        __m256i o0 = _mm256_add_epi32(_mm256_madd_epi16(u02, a), _mm256_madd_epi16(u13, b)); /* t0' */
        __m256i o1 = _mm256_add_epi32(_mm256_madd_epi16(u02, c), _mm256_madd_epi16(u13, d)); /* t1' */
        __m256i o2 = _mm256_add_epi32(_mm256_madd_epi16(u02, e), _mm256_madd_epi16(u13, f)); /* t2' */
        __m256i o3 = _mm256_add_epi32(_mm256_madd_epi16(u02, g), _mm256_madd_epi16(u13, h)); /* t3' */
        out[0] = _mm256_add_epi32(tmp10, o3);
        out[7] = _mm256_sub_epi32(tmp10, o3);
        out[1] = _mm256_add_epi32(tmp11, o2);
        out[6] = _mm256_sub_epi32(tmp11, o2);
        out[2] = _mm256_add_epi32(tmp12, o1);
        out[5] = _mm256_sub_epi32(tmp12, o1);
        out[3] = _mm256_add_epi32(tmp13, o0);
        out[4] = _mm256_sub_epi32(tmp13, o0);
    }
}

/* 8x8 int16 transpose within each 128-bit half. */
__attribute__((target("avx2"))) static inline void transpose16(__m256i *r) {
    __m256i a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
        a[i] = _mm256_unpacklo_epi16(r[i], r[i + 1]);
        a[i + 1] = _mm256_unpackhi_epi16(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        b[i] = _mm256_unpacklo_epi32(a[i], a[i + 2]);
        b[i + 1] = _mm256_unpackhi_epi32(a[i], a[i + 2]);
        b[i + 2] = _mm256_unpacklo_epi32(a[i + 1], a[i + 3]);
        b[i + 3] = _mm256_unpackhi_epi32(a[i + 1], a[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        r[2 * i] = _mm256_unpacklo_epi64(b[i], b[i + 4]);
        r[2 * i + 1] = _mm256_unpackhi_epi64(b[i], b[i + 4]);
    }
}

/* Blocks p and p2 (two blocks of a row) into dst and dst2; `q` holds the table rows as int16
 * (both halves). Returns 0, writing nothing, when a value does not fit 16 bits. */
__attribute__((target("avx2"))) static int idct_pair_avx2(const int16_t *p, const int16_t *p2, const __m256i *q,
                                                          uint8_t *dst, uint8_t *dst2, Py_ssize_t stride) {
    __m256i x[8], lo[8], hi[8], wide = _mm256_setzero_si256(), big = _mm256_set1_epi32(32767);
    __m256i small = _mm256_set1_epi32(-32768), over = _mm256_setzero_si256();
    for (int v = 0; v < 8; v++) {
        __m256i c = _mm256_loadu2_m128i((const __m128i *)(p2 + 8 * v), (const __m128i *)(p + 8 * v));
        x[v] = _mm256_mullo_epi16(c, q[v]);
        /* the product fits 16 bits when its high half is the sign of its low half */
        wide = _mm256_or_si256(wide, _mm256_xor_si256(_mm256_mulhi_epi16(c, q[v]), _mm256_srai_epi16(x[v], 15)));
    }
    /* Pass 1: columns (along v), keeping PASS1_BITS. */
    pass16(x, lo, hi, _mm256_set1_epi32(1 << (CONST_BITS - PASS1_BITS - 1)));
    for (int k = 0; k < 8; k++) {
        lo[k] = _mm256_srai_epi32(lo[k], CONST_BITS - PASS1_BITS);
        hi[k] = _mm256_srai_epi32(hi[k], CONST_BITS - PASS1_BITS);
        over = _mm256_or_si256(over, _mm256_or_si256(_mm256_cmpgt_epi32(lo[k], big), _mm256_cmpgt_epi32(small, lo[k])));
        over = _mm256_or_si256(over, _mm256_or_si256(_mm256_cmpgt_epi32(hi[k], big), _mm256_cmpgt_epi32(small, hi[k])));
        x[k] = _mm256_packs_epi32(lo[k], hi[k]);
    }
    if (!_mm256_testz_si256(wide, wide) || !_mm256_testz_si256(over, over)) return 0;
    /* Pass 2: rows (along u); the level shift rides on the rounding bias. */
    transpose16(x);
    pass16(x, lo, hi, _mm256_set1_epi32((1 << (CONST_BITS + PASS1_BITS + 2)) + (128 << (CONST_BITS + PASS1_BITS + 3))));
    __m256i col[8]; /* column u of the block, rows 0-7, as int16 (saturating: the range limit follows) */
    for (int k = 0; k < 8; k++)
        col[k] = _mm256_packs_epi32(_mm256_srai_epi32(lo[k], CONST_BITS + PASS1_BITS + 3),
                                    _mm256_srai_epi32(hi[k], CONST_BITS + PASS1_BITS + 3));
    /* Range limit to bytes, then the byte transpose back to rows: (c0 c1)(c2 c3).. interleaved
     * by byte, then by 16 and 32 bits. */
    __m256i q01[4], r4[4];
    for (int k = 0; k < 4; k++) {
        __m256i pair = _mm256_packus_epi16(col[2 * k], col[2 * k + 1]); /* [c(2k) rows | c(2k+1) rows] */
        q01[k] = _mm256_unpacklo_epi8(pair, _mm256_srli_si256(pair, 8));
    }
    r4[0] = _mm256_unpacklo_epi16(q01[0], q01[1]); /* rows 0-3, columns 0-3 */
    r4[1] = _mm256_unpackhi_epi16(q01[0], q01[1]); /* rows 4-7, columns 0-3 */
    r4[2] = _mm256_unpacklo_epi16(q01[2], q01[3]); /* rows 0-3, columns 4-7 */
    r4[3] = _mm256_unpackhi_epi16(q01[2], q01[3]); /* rows 4-7, columns 4-7 */
    __m256i rows[4] = {_mm256_unpacklo_epi32(r4[0], r4[2]), _mm256_unpackhi_epi32(r4[0], r4[2]),
                       _mm256_unpacklo_epi32(r4[1], r4[3]), _mm256_unpackhi_epi32(r4[1], r4[3])};
    for (int k = 0; k < 4; k++) { /* rows 2k and 2k+1 of each block */
        __m128i a = _mm256_castsi256_si128(rows[k]), b = _mm256_extracti128_si256(rows[k], 1);
        _mm_storel_epi64((__m128i *)(dst + 2 * k * stride), a);
        _mm_storel_epi64((__m128i *)(dst + (2 * k + 1) * stride), _mm_unpackhi_epi64(a, a));
        _mm_storel_epi64((__m128i *)(dst2 + 2 * k * stride), b);
        _mm_storel_epi64((__m128i *)(dst2 + (2 * k + 1) * stride), _mm_unpackhi_epi64(b, b));
    }
    return 1;
}

/* One block row (bw blocks) with block pairs on AVX2 (the int32 path for what does not fit);
 * `q`: the table rows as int16, see idct_tables. */
__attribute__((target("avx2"))) static void idct_row_avx2(const int16_t *row, const int32_t *qtable, const __m256i *q,
                                                          uint8_t *dst_row, Py_ssize_t stride, Py_ssize_t bw) {
    Py_ssize_t bx = 0;
    for (; bx + 2 <= bw; bx += 2) {
        const int16_t *p = row + bx * 64;
        uint8_t *dst = dst_row + bx * 8;
        if (dc_only(p) && dc_only(p + 64)) {
            dc_block(p, qtable, dst, stride);
            dc_block(p + 64, qtable, dst + 8, stride);
        } else if (!idct_pair_avx2(p, p + 64, q, dst, dst + 8, stride)) {
            idct_row_int32(row, qtable, dst_row, stride, bx, bx + 2);
        }
    }
    if (bx < bw) idct_row_int32(row, qtable, dst_row, stride, bx, bw);
}

/* The table rows as int16 in both 128-bit halves; 0 when a value does not fit (then the
 * int32 path runs). */
__attribute__((target("avx2"))) static int idct_tables(const int32_t *qtable, __m256i *q) {
    for (int i = 0; i < 64; i++)
        if (qtable[i] > 32767) return 0;
    for (int v = 0; v < 8; v++) {
        __m128i r = _mm_packs_epi32(_mm_loadu_si128((const __m128i *)(qtable + 8 * v)),
                                    _mm_loadu_si128((const __m128i *)(qtable + 8 * v + 4)));
        q[v] = _mm256_broadcastsi128_si256(r);
    }
    return 1;
}
#endif

#ifdef HAVE_AVX2
/* The hand-written AVX2 paths run when the CPU has AVX2 and set_simd() has not turned them off
 * (the tests run both). */
static int avx2_allowed = 1;

static int use_avx2(void) { return avx2_allowed && __builtin_cpu_supports("avx2"); }
#endif

/* The IDCT of one component's block rows, set up once: AVX2 block pairs where the CPU has
 * them and the table fits 16 bits, else the int32 vector path. */
typedef struct {
    const int32_t *qtable;
    int simd;
#ifdef HAVE_AVX2
    __m256i q[8];
#endif
} Idct;

static void idct_init(Idct *t, const int32_t *qtable) {
    t->qtable = qtable;
    t->simd = 0;
#ifdef HAVE_AVX2
    t->simd = use_avx2() && idct_tables(qtable, t->q);
#endif
}

static void idct_row(const Idct *t, const int16_t *row, uint8_t *dst_row, Py_ssize_t stride, Py_ssize_t bw) {
#ifdef HAVE_AVX2
    if (t->simd) {
        idct_row_avx2(row, t->qtable, t->q, dst_row, stride, bw);
        return;
    }
#endif
    idct_row_int32(row, t->qtable, dst_row, stride, 0, bw);
}

/* ---- upsampling (jdsample.c, libjpeg-turbo) and colour (jdcolor.c) ---------------------------- */

typedef struct {
    const uint8_t *plane; /* uint8 samples, row stride `stride`, real size ch x cw */
    Py_ssize_t stride, ch, cw;
    int hf, vf;           /* upsampling factors */
    int mode;             /* 0 replicate, 1 fancy h2v1, 2 fancy h1v2, 3 fancy h2v2 */
    uint8_t *row;         /* output row buffer, >= hf * cw samples */
    int16_t *sums;        /* cw + 2 samples: a row of the fancy filters' input, edges replicated */
    /* When decoding from blocks (else blocks is NULL): the plane is filled block row by block
     * row as the output rows need them, so each strip is still in cache when it is upsampled.
     * Block row `by` is at blocks + by * (row_blocks or bw) * 64. */
    const int16_t *blocks;
    Idct idct;
    Py_ssize_t bh, bw;
    Py_ssize_t row_blocks; /* blocks a block row spans in memory: 0 for bw; more while the blocks
                              are still in a decoder's MCU-padded rows (a progressive file's) */
    Py_ssize_t done, stop; /* block rows [done, stop) are this thread's to transform, in order */
    /* Streaming (see RowFeed): the blocks arrive while this decodes; `avail` block rows are
     * known to be final. NULL feed: every block row is final from the start. */
    struct RowFeed *feed;
    int index;             /* this component's slot in feed->ready */
    Py_ssize_t avail;
} Comp;

/* Block rows handed over by an entropy decoder running on another thread (kdecode._jpegnative
 * decodes a single-scan file and its pixels side by side): ready[k] block rows of component k
 * are final; `failed` says no more will come. Both are read and written atomically; a waiter
 * that finds too few rows spins a little (the next block row is microseconds away), then sleeps
 * on `cond`, counted in `sleepers` so that the decoder wakes it only when someone sleeps. */
typedef struct RowFeed {
#ifdef HAVE_THREADS
    pthread_mutex_t lock;
    pthread_cond_t cond;
#endif
    Py_ssize_t ready[4];
    int failed, sleepers;
    /* Output rows below `claimed` are the pixel thread's; it stops at `end`, where the decoder's
     * thread, done with its own work, took the rest (feed_help). Guarded by `lock`. */
    Py_ssize_t claimed, end;
} RowFeed;

#define FEED_SPINS 4000 /* some tens of microseconds of polling before sleeping */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

MAYBE_UNUSED static void feed_init(RowFeed *f) {
    memset(f, 0, sizeof *f);
    f->end = PY_SSIZE_T_MAX;
#ifdef HAVE_THREADS
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
#endif
}

MAYBE_UNUSED static void feed_destroy(RowFeed *f) {
#ifdef HAVE_THREADS
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
#endif
}

/* The decoder's side: `rows` block rows of component `k` are final, or (k < 0) none will come.
 * Only the decoder's thread calls this. */
MAYBE_UNUSED static void feed_publish(RowFeed *f, int k, Py_ssize_t rows) {
    if (k < 0)
        __atomic_store_n(&f->failed, 1, __ATOMIC_SEQ_CST);
    else if (rows > f->ready[k])
        __atomic_store_n(&f->ready[k], rows, __ATOMIC_SEQ_CST);
    else
        return;
#ifdef HAVE_THREADS
    if (__atomic_load_n(&f->sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&f->lock);
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
    }
#endif
}

#define FEED_CLAIM_ROWS 8 /* output rows the pixel thread claims at a time */

/* The pixel thread's side, at output row r: it may decode the rows below the returned one (at
 * most FEED_CLAIM_ROWS from r; none when the decoder's thread took the rest, feed_help). */
static Py_ssize_t feed_claim(RowFeed *f, Py_ssize_t r) {
#ifdef HAVE_THREADS
    pthread_mutex_lock(&f->lock);
    Py_ssize_t upto = r + FEED_CLAIM_ROWS < f->end ? r + FEED_CLAIM_ROWS : f->end;
    if (upto > f->claimed) f->claimed = upto;
    pthread_mutex_unlock(&f->lock);
    return upto;
#else
    (void)f;
    return r + FEED_CLAIM_ROWS;
#endif
}

/* Wait until block rows [0, by) of `c` are final; 0 when the decoder failed first. */
static int feed_wait(Comp *c, Py_ssize_t by) {
    RowFeed *f = c->feed;
    for (int spin = 0; spin < FEED_SPINS; spin++) {
        Py_ssize_t ready = __atomic_load_n(&f->ready[c->index], __ATOMIC_SEQ_CST);
        if (ready >= by) {
            c->avail = ready;
            return 1;
        }
        if (__atomic_load_n(&f->failed, __ATOMIC_SEQ_CST)) return 0;
        cpu_relax();
    }
#ifdef HAVE_THREADS
    pthread_mutex_lock(&f->lock);
    __atomic_add_fetch(&f->sleepers, 1, __ATOMIC_SEQ_CST);
    /* The decoder stores, then reads `sleepers`; this adds to `sleepers`, then reads: one of the
     * two sees the other's write, so a waiter never sleeps through the last wake-up. */
    while (__atomic_load_n(&f->ready[c->index], __ATOMIC_SEQ_CST) < by && !__atomic_load_n(&f->failed, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&f->cond, &f->lock);
    __atomic_sub_fetch(&f->sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&f->lock);
#endif
    c->avail = __atomic_load_n(&f->ready[c->index], __ATOMIC_SEQ_CST);
    return !__atomic_load_n(&f->failed, __ATOMIC_SEQ_CST);
}

static inline const uint8_t *src_row(const Comp *c, Py_ssize_t i) {
    if (i < 0) i = 0;
    if (i >= c->ch) i = c->ch - 1;
    return c->plane + i * c->stride;
}

/* Block row `by` of the component's blocks into its plane. */
static inline void transform_block_row(Comp *c, Py_ssize_t by) {
    idct_row(&c->idct, c->blocks + by * (c->row_blocks ? c->row_blocks : c->bw) * 64,
             (uint8_t *)c->plane + by * 8 * c->stride, c->stride, c->bw);
}

/* Make sure plane rows up to `i` (clipped to the plane) hold samples; 0 when they never will
 * (the streaming decoder failed). */
static inline int need_row(Comp *c, Py_ssize_t i) {
    if (!c->blocks) return 1;
    Py_ssize_t by = (i < c->ch ? i : c->ch - 1) / 8 + 1;
    if (by > c->stop) by = c->stop; /* the rows beyond were transformed before the bands started */
    if (by > c->avail && c->feed && !feed_wait(c, by)) return 0;
    for (; c->done < by; c->done++) transform_block_row(c, c->done);
    return 1;
}

/* The 3:1 triangle filter of the fancy upsamplers along a row: s[-1..n] (edges replicated by
 * the caller) -> out[2j] = (3 s[j] + s[j-1] + b0) >> shift, out[2j+1] = (3 s[j] + s[j+1] + b1)
 * >> shift. Plain loops over int16: both vectorize (the second with interleaving stores). */
static inline void triangle_h2(const int16_t *s, Py_ssize_t n, int b0, int b1, int shift, uint8_t *out) {
    for (Py_ssize_t j = 0; j < n; j++) {
        int16_t m = (int16_t)(3 * s[j]);
        out[2 * j] = (uint8_t)((m + s[j - 1] + b0) >> shift);
        out[2 * j + 1] = (uint8_t)((m + s[j + 1] + b1) >> shift);
    }
}

/* Row r of component c upsampled to full resolution (at least `width` samples valid). */
HOT static const uint8_t *upsampled_row(Comp *c, Py_ssize_t r, Py_ssize_t width) {
    const Py_ssize_t cw = c->cw;
    uint8_t *out = c->row;
    int16_t *s = c->sums + 1; /* s[-1] and s[cw] hold the replicated edges */
    if (c->mode == 1) { /* h2v1: 3/4 nearer + 1/4 farther sample, biases 1 and 2 */
        const uint8_t *x = src_row(c, r);
        for (Py_ssize_t j = 0; j < cw; j++) s[j] = x[j];
        s[-1] = s[0];
        s[cw] = s[cw - 1];
        triangle_h2(s, cw, 1, 2, 2, out);
        return out;
    }
    if (c->mode == 2) { /* h1v2: the same filter along rows */
        const uint8_t *x = src_row(c, r >> 1);
        const uint8_t *y = src_row(c, (r & 1) ? (r >> 1) + 1 : (r >> 1) - 1);
        const int32_t bias = (r & 1) ? 2 : 1;
        for (Py_ssize_t j = 0; j < cw; j++) out[j] = (uint8_t)((3 * x[j] + y[j] + bias) >> 2);
        return out;
    }
    if (c->mode == 3) { /* h2v2: vertical 3:1 column sums (no rounding), then horizontal 3:1, biases 8 and 7, >> 4 */
        const uint8_t *x = src_row(c, r >> 1);
        const uint8_t *y = src_row(c, (r & 1) ? (r >> 1) + 1 : (r >> 1) - 1);
        for (Py_ssize_t j = 0; j < cw; j++) s[j] = (int16_t)(3 * x[j] + y[j]);
        s[-1] = s[0];
        s[cw] = s[cw - 1];
        triangle_h2(s, cw, 8, 7, 4, out);
        return out;
    }
    /* Replication (and factors 1x1). */
    const uint8_t *x = src_row(c, r / c->vf);
    if (c->hf == 1) return x;
    for (Py_ssize_t j = 0; j < width; j++) out[j] = x[j / c->hf];
    return out;
}

/* jdcolor.c fixed point: FIX(x) = round(x * 2^16), ONE_HALF = 2^15. */
HOT static void ycc_to_rgb_row(const uint8_t *y, const uint8_t *cb, const uint8_t *cr, uint8_t *out,
                               Py_ssize_t width, int pb) {
    for (Py_ssize_t j = 0; j < width; j++) {
        int32_t Y = y[j], Cb = (int32_t)cb[j] - 128, Cr = (int32_t)cr[j] - 128;
        int32_t r = Y + ((91881 * Cr + 32768) >> 16);
        int32_t g = Y + ((-22554 * Cb - 46802 * Cr + 32768) >> 16);
        int32_t b = Y + ((116130 * Cb + 32768) >> 16);
        out[pb * j] = (uint8_t)(r < 0 ? 0 : (r > 255 ? 255 : r));
        out[pb * j + 1] = (uint8_t)(g < 0 ? 0 : (g > 255 ? 255 : g));
        out[pb * j + 2] = (uint8_t)(b < 0 ? 0 : (b > 255 ? 255 : b));
        if (pb == 4) out[pb * j + 3] = 255;
    }
}

#ifdef HAVE_AVX2

/* pshufb masks spreading 16 samples of channel c over the 48 bytes of 16 interleaved pixels:
 * rgb_spread[k][c][i] is the sample of output byte 16 k + i when that byte is channel c, else
 * 0x80 (pshufb writes 0). Filled once at module init. */
static uint8_t rgb_spread[3][3][16];

static void init_rgb_spread(void) {
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 16; i++)
                rgb_spread[k][c][i] = (16 * k + i) % 3 == c ? (uint8_t)((16 * k + i) / 3) : 0x80;
}

/* ycc_to_rgb_row, 16 pixels per step in 16-bit lanes. jdcolor.c's offsets floor((FIX(x) C +
 * 2^15) / 2^16) are rewritten exactly in 16 bits: with FIX(x) = m 2^16 + r, the offset is
 * m C + floor((r C + 2^15) / 2^16); for blue (r = -14942, even) the second term is pmulhrsw(C,
 * r / 2), for red pmulhrsw(C, 13172) gives the same value for every C in -128..127 (found by
 * search), and green, a sum of two products before one rounding, is one pmaddwd of the pair
 * (Cb, Cr). tests/test_exact_cpu.py checks every (Cb, Cr) against the int32 formula. */
__attribute__((target("avx2"))) static void ycc_to_rgb_row_avx2(const uint8_t *y, const uint8_t *cb,
                                                               const uint8_t *cr, uint8_t *out, Py_ssize_t width,
                                                               int pb) {
    const __m256i center = _mm256_set1_epi16(128), half = _mm256_set1_epi32(1 << 15);
    const __m256i k_r = _mm256_set1_epi16(13172);                             /* 91881 = 2^16 + 26345 */
    const __m256i k_b = _mm256_set1_epi16(-7471);                             /* 116130 = 2 * 2^16 - 14942 */
    const __m256i k_g = _mm256_set1_epi32((18734 << 16) | (uint16_t)-22554);  /* -46802 = -2^16 + 18734 */
    const __m128i *spread = (const __m128i *)rgb_spread, ones = _mm_set1_epi8(-1);
    Py_ssize_t j = 0;
    for (; j + 16 <= width; j += 16) {
        __m256i Y = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(y + j)));
        __m256i Cb = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(cb + j))), center);
        __m256i Cr = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(cr + j))), center);
        /* unpack lo/hi then packs: both work within 128-bit lanes, so pixel order is kept. */
        __m256i g = _mm256_packs_epi32(
            _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(_mm256_unpacklo_epi16(Cb, Cr), k_g), half), 16),
            _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(_mm256_unpackhi_epi16(Cb, Cr), k_g), half), 16));
        __m256i r = _mm256_add_epi16(_mm256_add_epi16(Y, Cr), _mm256_mulhrs_epi16(Cr, k_r));
        __m256i b = _mm256_add_epi16(_mm256_add_epi16(Y, _mm256_add_epi16(Cb, Cb)), _mm256_mulhrs_epi16(Cb, k_b));
        g = _mm256_sub_epi16(_mm256_add_epi16(Y, g), Cr);
        /* Saturating packs are the range limit; then r, g, b as 16 bytes each. */
        __m256i rg = _mm256_permute4x64_epi64(_mm256_packus_epi16(r, g), 0xD8);
        __m256i bb = _mm256_permute4x64_epi64(_mm256_packus_epi16(b, b), 0xD8);
        __m128i R = _mm256_castsi256_si128(rg), G = _mm256_extracti128_si256(rg, 1), B = _mm256_castsi256_si128(bb);
        if (pb == 4) { /* Pillow's RGB storage: R, G, B, 255 */
            __m128i rg_lo = _mm_unpacklo_epi8(R, G), rg_hi = _mm_unpackhi_epi8(R, G);
            __m128i bx_lo = _mm_unpacklo_epi8(B, ones), bx_hi = _mm_unpackhi_epi8(B, ones);
            __m128i *o = (__m128i *)(out + 4 * j);
            _mm_storeu_si128(o, _mm_unpacklo_epi16(rg_lo, bx_lo));
            _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(rg_lo, bx_lo));
            _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(rg_hi, bx_hi));
            _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(rg_hi, bx_hi));
            continue;
        }
        for (int k = 0; k < 3; k++) {
            __m128i o = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(R, _mm_loadu_si128(spread + 3 * k)),
                                                  _mm_shuffle_epi8(G, _mm_loadu_si128(spread + 3 * k + 1))),
                                     _mm_shuffle_epi8(B, _mm_loadu_si128(spread + 3 * k + 2)));
            _mm_storeu_si128((__m128i *)(out + 3 * j + 16 * k), o);
        }
    }
    ycc_to_rgb_row(y + j, cb + j, cr + j, out + pb * j, width - j, pb); /* the last < 16 pixels */
}
#endif

/* The output image: `pb` bytes per pixel, n (the components: 1, 3 or 4) or 4 (3 components
 * written as Pillow stores RGB: R, G, B, 255). Streaming (a feed), it stops early when the
 * decoder fails (rows left unwritten) or takes the rest of the rows (feed_help). */
static void upsample_color_rows(Comp *comps, int n, uint8_t *out, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t width,
                                int convert, int pb) {
#ifdef HAVE_AVX2
    const int avx2 = use_avx2();
#endif
    RowFeed *feed = comps[0].feed;
    Py_ssize_t granted = feed ? r0 : r1; /* streaming: rows below it are this thread's */
    for (Py_ssize_t r = r0; r < r1; r++) {
        const uint8_t *rows[4];
        if (r >= granted && (granted = feed_claim(feed, r)) <= r) return;
        for (int k = 0; k < n; k++) {
            if (!need_row(&comps[k], r / comps[k].vf + 1)) return; /* + 1: the fancy filters' next row */
            rows[k] = upsampled_row(&comps[k], r, width);
        }
        uint8_t *dst = out + r * width * pb;
        if (n == 3 && convert) {
#ifdef HAVE_AVX2
            if (avx2) {
                ycc_to_rgb_row_avx2(rows[0], rows[1], rows[2], dst, width, pb);
                continue;
            }
#endif
            ycc_to_rgb_row(rows[0], rows[1], rows[2], dst, width, pb);
        } else if (n == 1) {
            memcpy(dst, rows[0], (size_t)width);
        } else {
            for (Py_ssize_t j = 0; j < width; j++) {
                for (int k = 0; k < n; k++) dst[j * pb + k] = rows[k][j];
                if (n == 3 && pb == 4) dst[j * pb + 3] = 255;
            }
        }
    }
}

/* ---- One image on several threads ------------------------------------------------------------- */

#define MAX_BANDS 16

/* A band of output rows [r0, r1) with its own copy of the components: its row buffers and the
 * block rows it transforms. */
typedef struct {
    Comp comps[4];
    int n, convert, pb;
    uint8_t *out;
    Py_ssize_t r0, r1, width;
} Band;

static void *run_band(void *arg) {
    Band *b = (Band *)arg;
    upsample_color_rows(b->comps, b->n, b->out, b->r0, b->r1, b->width, b->convert, b->pb);
    return NULL;
}

/* A component's own buffers: its row buffers and, with `plane` (decoding from blocks), its
 * plane. 0, or -1 when out of memory (what was allocated is left for comp_free). No Python:
 * the threads call it too. */
static int comp_alloc(Comp *c, int plane) {
    if (plane) c->plane = (const uint8_t *)malloc((size_t)(c->bh * 8 * c->stride));
    c->row = (uint8_t *)malloc((size_t)(c->hf * c->cw + 8));
    c->sums = (int16_t *)malloc((size_t)(c->cw + 2) * sizeof(int16_t));
    return (plane && !c->plane) || !c->row || !c->sums ? -1 : 0;
}

/* Free what comp_alloc() allocated (any of it; a zeroed Comp has nothing). */
static void comp_free(Comp *c, int plane) {
    free(c->row);
    free(c->sums);
    c->row = NULL, c->sums = NULL;
    if (plane) {
        free((void *)c->plane);
        c->plane = NULL;
    }
}

/* Streaming, the decoder's thread once it has published every block row: it takes the bottom
 * half of the rows the pixel thread has not claimed yet and decodes them here, with planes of
 * its own (so the two threads never write the same memory; the block rows at the split are
 * transformed by both). `comps`: the pixel thread's components as they were before it started
 * (not its live ones, which it is changing). Returns 0, or -1 when out of memory (then the pixel
 * thread does all the rows). */
#define FEED_HELP_MIN_ROWS 32 /* fewer rows left: not worth a split */

MAYBE_UNUSED static int feed_help(RowFeed *f, const Comp *comps, int n, uint8_t *out, Py_ssize_t height,
                                  Py_ssize_t width, int convert, int pb) {
#ifdef HAVE_THREADS
    Comp mine[4];
    int ok = 1;
    memset(mine, 0, sizeof mine);
    for (int k = 0; k < n; k++) {
        Comp *c = &mine[k];
        *c = comps[k];
        c->feed = NULL;
        if (comp_alloc(c, 1) < 0) ok = 0;
    }
    Py_ssize_t split = height;
    if (ok) {
        pthread_mutex_lock(&f->lock);
        split = f->claimed + (height - f->claimed) / 2;
        if (height - split >= FEED_HELP_MIN_ROWS) f->end = split;
        else split = height;
        pthread_mutex_unlock(&f->lock);
    }
    if (split < height) {
        for (int k = 0; k < n; k++) { /* from the block row of the first sample row the filters read */
            Py_ssize_t first = split / mine[k].vf - 1;
            mine[k].done = (first > 0 ? first : 0) / 8;
            mine[k].stop = mine[k].bh;
        }
        upsample_color_rows(mine, n, out, split, height, width, convert, pb);
    }
    for (int k = 0; k < n; k++) comp_free(&mine[k], 1);
    return ok ? 0 : -1;
#else
    (void)f, (void)comps, (void)n, (void)out, (void)height, (void)width, (void)convert, (void)pb;
    return 0;
#endif
}

/* The output rows in `bands` bands of about equal height, each on its own thread (the calling
 * one runs the first). Band edges are multiples of 8 x the largest vertical factor, so at each
 * edge every component is at a block-row edge: the two block rows around it, which the bands on
 * both sides read (the fancy filters look one row up and down), are transformed here first, and
 * each band transforms the block rows strictly between its edges. So no block row is written
 * twice or read before it is written. Returns 0, or -1 when out of memory. */
static int upsample_color_image(Comp *comps, int n, uint8_t *out, Py_ssize_t height, Py_ssize_t width, int convert,
                                int pb, int bands) {
    int vmax = 1;
    for (int k = 0; k < n; k++)
        if (comps[k].vf > vmax) vmax = comps[k].vf;
    const Py_ssize_t align = 8 * (Py_ssize_t)vmax;
#ifndef HAVE_THREADS
    bands = 1;
#endif
    if (bands > MAX_BANDS) bands = MAX_BANDS;
    if (bands > height / (2 * align)) bands = (int)(height / (2 * align)); /* each band >= 2 block rows a component */
    if (bands <= 1) {
        upsample_color_rows(comps, n, out, 0, height, width, convert, pb);
        return 0;
    }
    Band b[MAX_BANDS];
    memset(b, 0, sizeof b);
    int ok = 1;
    for (int t = 0; t < bands; t++) {
        b[t] = (Band){.n = n, .convert = convert, .pb = pb, .out = out, .width = width,
                      .r0 = (height * t / bands) / align * align, .r1 = height};
        if (t > 0) b[t - 1].r1 = b[t].r0;
        for (int k = 0; k < n; k++) {
            Comp *c = &b[t].comps[k];
            *c = comps[k];
            if (t > 0 && comp_alloc(c, 0) < 0) ok = 0; /* the first band uses the caller's buffers */
        }
    }
    for (int t = 1; t < bands && ok; t++)
        for (int k = 0; k < n; k++) {
            Comp *c = &b[t].comps[k];
            if (!c->blocks) continue;
            Py_ssize_t edge = b[t].r0 / c->vf / 8, lo = edge - 1, hi = edge + 1 < c->bh ? edge + 1 : c->bh;
            for (Py_ssize_t by = lo; by < hi; by++) transform_block_row(c, by);
            b[t - 1].comps[k].stop = lo;
            c->done = hi;
        }
#ifdef HAVE_THREADS
    pthread_t threads[MAX_BANDS];
    int started[MAX_BANDS] = {0};
    for (int t = 1; t < bands && ok; t++)
        started[t] = pthread_create(&threads[t], NULL, run_band, &b[t]) == 0;
    if (ok) run_band(&b[0]);
    for (int t = 1; t < bands && ok; t++) {
        if (started[t]) pthread_join(threads[t], NULL);
        else run_band(&b[t]); /* no thread to be had: this one does the band */
    }
#endif
    for (int t = 1; t < bands; t++)
        for (int k = 0; k < n; k++) comp_free(&b[t].comps[k], 0);
    return ok ? 0 : -1;
}

/* ---- Components from their geometry ---------------------------------------------------------- */

/* Check a component's geometry (set by the caller: ch, cw, hf, vf, mode, stride, and bh, bw
 * when decoding from blocks) against the output size, and give it its buffers (comp_alloc;
 * comp_free frees them). 0, or -1 with a Python exception set (needs the GIL). */
static int comp_setup(Comp *c, Py_ssize_t height, Py_ssize_t width, int from_blocks) {
    if (c->ch < 1 || c->cw < 1 || c->hf < 1 || c->vf < 1 || c->stride < c->cw || c->mode < 0 || c->mode > 3
        || c->cw * c->hf < width || c->ch * c->vf < height || (from_blocks && c->bh * 8 < c->ch)) {
        PyErr_SetString(PyExc_ValueError, "invalid component geometry");
        return -1;
    }
    if (from_blocks) c->stop = c->bh;
    if (comp_alloc(c, from_blocks) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The output layouts: 1, 3 or 4 components, `pb` bytes a pixel (as many, or 4 for 3: R, G, B,
 * 255), YCbCr conversion only for 3. 0, or -1 with a Python exception set. */
static int check_layout(Py_ssize_t n, int pb, int convert) {
    if ((n != 1 && n != 3 && n != 4) || (pb != n && !(n == 3 && pb == 4)) || (convert && n != 3)) {
        PyErr_Format(PyExc_ValueError, "expected 1, 3 or 4 components, as many (or 4) bytes a pixel and YCbCr "
                     "conversion only for 3, got %zd, %d, %d", n, pb, convert);
        return -1;
    }
    return 0;
}

/* Once, at module init, in every module that compiles this file. */
static void pixel_stage_init(void) {
#ifdef HAVE_AVX2
    init_rgb_spread();
#endif
}

#define SET_SIMD_DOC "set_simd(on) -> bool: allow the hand-written AVX2 paths (where the CPU has AVX2) or force the " \
                     "portable ones; returns whether they were in use"

static PyObject *py_set_simd(PyObject *self, PyObject *arg) {
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
#ifdef HAVE_AVX2
    int was = avx2_allowed && __builtin_cpu_supports("avx2");
    avx2_allowed = on;
    return PyBool_FromLong(was);
#else
    Py_RETURN_FALSE;
#endif
}

#ifndef KDECODE_PIXEL_STAGE_ONLY /* kdecode._jpegnative compiles this file in for the stage alone */

/* ---- Python bindings ------------------------------------------------------------------------- */

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd", what, view->len, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_idct_islow(PyObject *self, PyObject *args) {
    PyObject *bo, *qo, *oo;
    Py_ssize_t bh, bw;
    if (!PyArg_ParseTuple(args, "OOOnn", &bo, &qo, &oo, &bh, &bw)) return NULL;
    if (bh < 0 || bw < 0) return PyErr_Format(PyExc_ValueError, "negative block grid");
    Py_buffer b, q, o;
    if (get_buffer(bo, &b, 0, bh * bw * 64 * 2, "blocks") < 0) return NULL;
    if (get_buffer(qo, &q, 0, 64 * 4, "qtable") < 0) { PyBuffer_Release(&b); return NULL; }
    if (get_buffer(oo, &o, 1, bh * bw * 64, "plane") < 0) { PyBuffer_Release(&b); PyBuffer_Release(&q); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    Idct t;
    idct_init(&t, (const int32_t *)q.buf);
    for (Py_ssize_t by = 0; by < bh; by++)
        idct_row(&t, (const int16_t *)b.buf + by * bw * 64, (uint8_t *)o.buf + by * 8 * bw * 8, bw * 8, bw);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    PyBuffer_Release(&q);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* The shared body of upsample_color and decode: components is a sequence of
 * (plane, stride, ch, cw, hf, vf, mode) when planes are given, of
 * (blocks, qtable, bh, bw, ch, cw, hf, vf, mode) when decoding from blocks; out receives uint8
 * [height, width, n] (interleaved). */
static PyObject *pixel_stage(PyObject *args, int from_blocks) {
    PyObject *oo, *seq;
    Py_ssize_t height, width;
    int convert, pb = 0, bands = 1;
    if (!PyArg_ParseTuple(args, "OnnpO|ii", &oo, &height, &width, &convert, &seq, &pb, &bands)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "components must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (pb == 0) pb = (int)n;
    if (check_layout(n, pb, convert) < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    Comp comps[4];
    Py_buffer views[4][2], o;
    int got = 0, ok = 1;
    memset(comps, 0, sizeof comps);
    for (Py_ssize_t k = 0; k < n && ok; k++) {
        PyObject *po, *qo = NULL, *item = PySequence_Fast_GET_ITEM(fast, k);
        Comp *c = &comps[k];
        if (from_blocks ? !PyArg_ParseTuple(item, "OOnnnnnni", &po, &qo, &c->bh, &c->bw, &c->ch, &c->cw, &c->hf,
                                            &c->vf, &c->mode)
                        : !PyArg_ParseTuple(item, "Onnnnni", &po, &c->stride, &c->ch, &c->cw, &c->hf, &c->vf,
                                            &c->mode)) { ok = 0; break; }
        if (from_blocks) {
            c->stride = c->bw * 8;
            if (get_buffer(po, &views[k][0], 0, c->bh * c->bw * 64 * 2, "blocks") < 0) { ok = 0; break; }
            if (get_buffer(qo, &views[k][1], 0, 64 * 4, "qtable") < 0) { PyBuffer_Release(&views[k][0]); ok = 0; break; }
            c->blocks = (const int16_t *)views[k][0].buf;
            idct_init(&c->idct, (const int32_t *)views[k][1].buf);
        } else {
            if (get_buffer(po, &views[k][0], 0, (c->ch - 1) * c->stride + c->cw, "plane") < 0) { ok = 0; break; }
            c->plane = (const uint8_t *)views[k][0].buf;
        }
        got++;
        if (comp_setup(c, height, width, from_blocks) < 0) ok = 0;
    }
    if (ok && get_buffer(oo, &o, 1, height * width * pb, "out") < 0) ok = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        if (upsample_color_image(comps, (int)n, (uint8_t *)o.buf, height, width, convert, pb, bands) < 0) ok = 0;
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_NoMemory();
        PyBuffer_Release(&o);
    }
    for (int k = 0; k < 4; k++) comp_free(&comps[k], from_blocks);
    for (int k = 0; k < got; k++) {
        PyBuffer_Release(&views[k][0]);
        if (from_blocks) PyBuffer_Release(&views[k][1]);
    }
    Py_DECREF(fast);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_upsample_color(PyObject *self, PyObject *args) { return pixel_stage(args, 0); }

static PyObject *py_decode(PyObject *self, PyObject *args) { return pixel_stage(args, 1); }

static PyMethodDef methods[] = {
    {"set_simd", py_set_simd, METH_O, SET_SIMD_DOC},
    {"idct_islow", py_idct_islow, METH_VARARGS,
     "idct_islow(blocks int16 [bh,bw,8,8], qtable int32 [64], out uint8 [bh*8, bw*8], bh, bw)"},
    {"upsample_color", py_upsample_color, METH_VARARGS,
     "upsample_color(out uint8 [H,W,n or 4], H, W, convert, [(plane, stride, ch, cw, hf, vf, mode), ...][, "
     "pixel_bytes[, bands]])"},
    {"decode", py_decode, METH_VARARGS,
     "decode(out uint8 [H,W,n or 4], H, W, convert, [(blocks int16 [bh,bw,8,8], qtable int32 [64], bh, bw, ch, cw, "
     "hf, vf, mode), ...][, pixel_bytes[, bands]]): the whole pixel stage, block rows transformed as the output rows "
     "need them; pixel_bytes 4 writes 3 components as R, G, B, 255 (Pillow's RGB storage); bands > 1 splits the "
     "rows into that many bands on as many threads"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_exactcpu",
                                    "Exact pixel stage on CPU (islow IDCT, fancy upsampling, colour).", -1, methods};

PyMODINIT_FUNC PyInit__exactcpu(void) {
    pixel_stage_init();
    return PyModule_Create(&module);
}

#endif /* KDECODE_PIXEL_STAGE_ONLY */
