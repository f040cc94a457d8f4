/* kdecode._exactcpu: the exact (bit-exact with libjpeg-turbo) pixel stage on CPU, fed from
 * coefficients: islow IDCT, fancy chroma upsampling and YCbCr->RGB.
 *
 * The torch ops of kdecode/ops are the reference; this is their CPU fast path and computes the
 * same integer arithmetic step for step (int32, wrapping like torch: built with -fwrapv), so
 * tests/test_exact_cpu.py can demand identical output. Both functions release the GIL, so a
 * thread pool decodes images in parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Vector-friendly loops: an AVX2 clone next to the baseline one, picked at load time. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

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

/* One 8-point islow pass on 8 lanes at once: in[k * 8 + lane] -> out[k * 8 + lane], descaled by
 * `shift` with libjpeg's rounding. The lane loop vectorizes (8 int32 lanes with AVX2). */
static inline void islow_pass(const int32_t *in, int32_t *out, int shift) {
    const int32_t half = 1 << (shift - 1);
    for (int l = 0; l < 8; l++) {
        int32_t z1, z2, z3, z4, z5, tmp0, tmp1, tmp2, tmp3, tmp10, tmp11, tmp12, tmp13, t0, t1, t2, t3;
        /* Even part. */
        z2 = in[2 * 8 + l];
        z3 = in[6 * 8 + l];
        z1 = (z2 + z3) * F0_541196100;
        tmp2 = z1 - z3 * F1_847759065;
        tmp3 = z1 + z2 * F0_765366865;
        z2 = in[0 * 8 + l];
        z3 = in[4 * 8 + l];
        tmp0 = (int32_t)((uint32_t)(z2 + z3) << CONST_BITS);
        tmp1 = (int32_t)((uint32_t)(z2 - z3) << CONST_BITS);
        tmp10 = tmp0 + tmp3;
        tmp13 = tmp0 - tmp3;
        tmp11 = tmp1 + tmp2;
        tmp12 = tmp1 - tmp2;
        /* Odd part. */
        t0 = in[7 * 8 + l];
        t1 = in[5 * 8 + l];
        t2 = in[3 * 8 + l];
        t3 = in[1 * 8 + l];
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
        out[0 * 8 + l] = (tmp10 + t3 + half) >> shift;
        out[7 * 8 + l] = (tmp10 - t3 + half) >> shift;
        out[1 * 8 + l] = (tmp11 + t2 + half) >> shift;
        out[6 * 8 + l] = (tmp11 - t2 + half) >> shift;
        out[2 * 8 + l] = (tmp12 + t1 + half) >> shift;
        out[5 * 8 + l] = (tmp12 - t1 + half) >> shift;
        out[3 * 8 + l] = (tmp13 + t0 + half) >> shift;
        out[4 * 8 + l] = (tmp13 - t0 + half) >> shift;
    }
}

static inline void transpose8(const int32_t *in, int32_t *out) {
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) out[j * 8 + i] = in[i * 8 + j];
}

/* Every block of a component, dequantized and inverse transformed into its place in the plane
 * (row stride bw * 8): blocks [bh, bw, 8, 8] int16, natural order [v, u]. */
HOT static void idct_islow_plane(const int16_t *blocks, const int32_t *qtable, uint8_t *plane,
                                 Py_ssize_t bh, Py_ssize_t bw) {
    const Py_ssize_t stride = bw * 8;
    int32_t x[64], ws[64], t[64];
    for (Py_ssize_t by = 0; by < bh; by++) {
        for (Py_ssize_t bx = 0; bx < bw; bx++) {
            const int16_t *b = blocks + (by * bw + bx) * 64;
            for (int i = 0; i < 64; i++) x[i] = (int32_t)b[i] * qtable[i];
            /* Pass 1: columns (along v), lanes are u; keeps PASS1_BITS of extra precision. */
            islow_pass(x, ws, CONST_BITS - PASS1_BITS);
            /* Pass 2: rows (along u), lanes are v; removes the 2^3 DCT gain and the pass-1 scale. */
            transpose8(ws, x);
            islow_pass(x, t, CONST_BITS + PASS1_BITS + 3);
            uint8_t *dst = plane + by * 8 * stride + bx * 8;
            for (int v = 0; v < 8; v++) {
                for (int u = 0; u < 8; u++) {
                    int32_t s = t[u * 8 + v] + 128;
                    dst[v * stride + u] = (uint8_t)(s < 0 ? 0 : (s > 255 ? 255 : s));
                }
            }
        }
    }
}

/* ---- upsampling (jdsample.c, libjpeg-turbo) and colour (jdcolor.c) ---------------------------- */

typedef struct {
    const uint8_t *plane; /* uint8 samples, row stride `stride`, real size ch x cw */
    Py_ssize_t stride, ch, cw;
    int hf, vf;           /* upsampling factors */
    int mode;             /* 0 replicate, 1 fancy h2v1, 2 fancy h1v2, 3 fancy h2v2 */
    uint8_t *row;         /* output row buffer, >= hf * cw samples */
} Comp;

static inline const uint8_t *src_row(const Comp *c, Py_ssize_t i) {
    if (i < 0) i = 0;
    if (i >= c->ch) i = c->ch - 1;
    return c->plane + i * c->stride;
}

/* Row r of component c upsampled to full resolution (at least `width` samples valid). */
HOT static const uint8_t *upsampled_row(Comp *c, Py_ssize_t r, Py_ssize_t width) {
    const Py_ssize_t cw = c->cw;
    uint8_t *out = c->row;
    if (c->mode == 1) { /* h2v1: 3/4 nearer + 1/4 farther sample, biases 1 and 2 */
        const uint8_t *x = src_row(c, r);
        for (Py_ssize_t j = 0; j < cw; j++) {
            int32_t p = x[j > 0 ? j - 1 : 0], n = x[j + 1 < cw ? j + 1 : cw - 1], m = 3 * x[j];
            out[2 * j] = (uint8_t)((m + p + 1) >> 2);
            out[2 * j + 1] = (uint8_t)((m + n + 2) >> 2);
        }
        return out;
    }
    if (c->mode == 2) { /* h1v2: the same filter along rows */
        const uint8_t *x = src_row(c, r >> 1);
        const uint8_t *y = src_row(c, (r & 1) ? (r >> 1) + 1 : (r >> 1) - 1);
        const int32_t bias = (r & 1) ? 2 : 1;
        for (Py_ssize_t j = 0; j < cw; j++) out[j] = (uint8_t)((3 * x[j] + y[j] + bias) >> 2);
        return out;
    }
    if (c->mode == 3) { /* h2v2: vertical 3:1 column sums, then horizontal 3:1, biases 8 and 7, >> 4 */
        const uint8_t *x = src_row(c, r >> 1);
        const uint8_t *y = src_row(c, (r & 1) ? (r >> 1) + 1 : (r >> 1) - 1);
        int32_t prev = 3 * x[0] + y[0], cur = prev;
        for (Py_ssize_t j = 0; j < cw; j++) {
            int32_t next = j + 1 < cw ? 3 * x[j + 1] + y[j + 1] : cur;
            out[2 * j] = (uint8_t)((3 * cur + prev + 8) >> 4);
            out[2 * j + 1] = (uint8_t)((3 * cur + next + 7) >> 4);
            prev = cur;
            cur = next;
        }
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
                               Py_ssize_t width) {
    for (Py_ssize_t j = 0; j < width; j++) {
        int32_t Y = y[j], Cb = (int32_t)cb[j] - 128, Cr = (int32_t)cr[j] - 128;
        int32_t r = Y + ((91881 * Cr + 32768) >> 16);
        int32_t g = Y + ((-22554 * Cb - 46802 * Cr + 32768) >> 16);
        int32_t b = Y + ((116130 * Cb + 32768) >> 16);
        out[3 * j] = (uint8_t)(r < 0 ? 0 : (r > 255 ? 255 : r));
        out[3 * j + 1] = (uint8_t)(g < 0 ? 0 : (g > 255 ? 255 : g));
        out[3 * j + 2] = (uint8_t)(b < 0 ? 0 : (b > 255 ? 255 : b));
    }
}

static void upsample_color_image(Comp *comps, int n, uint8_t *out, Py_ssize_t height, Py_ssize_t width,
                                 int convert) {
    for (Py_ssize_t r = 0; r < height; r++) {
        const uint8_t *rows[4];
        for (int k = 0; k < n; k++) rows[k] = upsampled_row(&comps[k], r, width);
        uint8_t *dst = out + r * width * n;
        if (n == 3 && convert) {
            ycc_to_rgb_row(rows[0], rows[1], rows[2], dst, width);
        } else if (n == 1) {
            memcpy(dst, rows[0], (size_t)width);
        } else {
            for (Py_ssize_t j = 0; j < width; j++)
                for (int k = 0; k < n; k++) dst[j * n + k] = rows[k][j];
        }
    }
}

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
    idct_islow_plane((const int16_t *)b.buf, (const int32_t *)q.buf, (uint8_t *)o.buf, bh, bw);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    PyBuffer_Release(&q);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* upsample_color(out, height, width, convert, components): components is a sequence of
 * (plane, stride, ch, cw, hf, vf, mode); out receives uint8 [height, width, n] (interleaved). */
static PyObject *py_upsample_color(PyObject *self, PyObject *args) {
    PyObject *oo, *seq;
    Py_ssize_t height, width;
    int convert;
    if (!PyArg_ParseTuple(args, "OnnpO", &oo, &height, &width, &convert, &seq)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "components must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n != 1 && n != 3) {
        Py_DECREF(fast);
        return PyErr_Format(PyExc_ValueError, "expected 1 or 3 components, got %zd", n);
    }
    Comp comps[3];
    Py_buffer views[3], o;
    int got = 0, ok = 1;
    memset(comps, 0, sizeof comps);
    for (Py_ssize_t k = 0; k < n && ok; k++) {
        PyObject *po;
        Comp *c = &comps[k];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, k), "Onnnnii", &po, &c->stride, &c->ch, &c->cw,
                              &c->hf, &c->vf, &c->mode)) { ok = 0; break; }
        if (c->ch < 1 || c->cw < 1 || c->hf < 1 || c->vf < 1 || c->stride < c->cw || c->mode < 0 || c->mode > 3
            || c->cw * c->hf < width || c->ch * c->vf < height) {
            PyErr_SetString(PyExc_ValueError, "invalid component geometry");
            ok = 0;
            break;
        }
        if (get_buffer(po, &views[k], 0, (c->ch - 1) * c->stride + c->cw, "plane") < 0) { ok = 0; break; }
        got++;
        c->plane = (const uint8_t *)views[k].buf;
        c->row = (uint8_t *)malloc((size_t)(c->hf * c->cw + 8));
        if (!c->row) { PyErr_NoMemory(); ok = 0; }
    }
    if (ok && get_buffer(oo, &o, 1, height * width * n, "out") < 0) ok = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        upsample_color_image(comps, (int)n, (uint8_t *)o.buf, height, width, convert);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&o);
    }
    for (int k = 0; k < 3; k++) free(comps[k].row);
    for (int k = 0; k < got; k++) PyBuffer_Release(&views[k]);
    Py_DECREF(fast);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"idct_islow", py_idct_islow, METH_VARARGS,
     "idct_islow(blocks int16 [bh,bw,8,8], qtable int32 [64], out uint8 [bh*8, bw*8], bh, bw)"},
    {"upsample_color", py_upsample_color, METH_VARARGS,
     "upsample_color(out uint8 [H,W,n], H, W, convert, [(plane, stride, ch, cw, hf, vf, mode), ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_exactcpu",
                                    "Exact pixel stage on CPU (islow IDCT, fancy upsampling, colour).", -1, methods};

PyMODINIT_FUNC PyInit__exactcpu(void) { return PyModule_Create(&module); }
