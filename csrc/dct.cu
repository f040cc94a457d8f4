// Blockwise 8x8 transforms for kdecode: dequantize + IDCT + level shift (float and libjpeg's
// exact integer "islow"), and the forward DCT (+ optional quantization).
//
// Compiled at run time by NVRTC (kdecode/ops/cuda.py) and, in CI, by `nvcc -arch=sm_90 -c`.
// No system headers (NVRTC has none by default; the tests also build these files as host C++).
// Layout of blocks, planes, components and tables: see common.cuh.
//
// One thread transforms one whole block in registers: its 64 coefficients are one contiguous
// 128-byte (int16) line, read with 16-byte loads, and each output row is 8 contiguous samples,
// written with 16-byte stores. No shared memory and no barriers, so a warp never waits on
// another and every thread is independent (which is also why the host build can run it
// serially). Loops over constant ranges are unrolled so the 64-element arrays stay in
// registers (the compiler's resource report shows no stack frame).

#include "common.cuh"

// ---- orthonormal 8-point DCT-II / DCT-III (float, double) -------------------------------------
// C[k][n] = a(k) cos((2n+1) k pi / 16), a(0) = sqrt(1/8), a(k>0) = 1/2. Even/odd split: the
// even-k basis functions are symmetric about n = 3.5, the odd ones antisymmetric.

template <class T> struct Cos {
    static constexpr T c0 = T(0.35355339059327379);  // also a(4) cos(4 pi/4)
    static constexpr T c1 = T(0.49039264020161522);
    static constexpr T c2 = T(0.46193976625564337);
    static constexpr T c3 = T(0.41573480615127262);
    static constexpr T c5 = T(0.27778511650980114);
    static constexpr T c6 = T(0.19134171618254492);
    static constexpr T c7 = T(0.097545161008064166);
};

// In place: x[n] = sum_k C[k][n] X[k] (inverse).
template <class T> __device__ __forceinline__ void idct8(T* x) {
    typedef Cos<T> K;
    const T e0 = K::c0 * (x[0] + x[4]), e1 = K::c0 * (x[0] - x[4]);
    const T f0 = K::c2 * x[2] + K::c6 * x[6], f1 = K::c6 * x[2] - K::c2 * x[6];
    const T E0 = e0 + f0, E3 = e0 - f0, E1 = e1 + f1, E2 = e1 - f1;
    const T O0 = K::c1 * x[1] + K::c3 * x[3] + K::c5 * x[5] + K::c7 * x[7];
    const T O1 = K::c3 * x[1] - K::c7 * x[3] - K::c1 * x[5] - K::c5 * x[7];
    const T O2 = K::c5 * x[1] - K::c1 * x[3] + K::c7 * x[5] + K::c3 * x[7];
    const T O3 = K::c7 * x[1] - K::c5 * x[3] + K::c3 * x[5] - K::c1 * x[7];
    x[0] = E0 + O0; x[7] = E0 - O0;
    x[1] = E1 + O1; x[6] = E1 - O1;
    x[2] = E2 + O2; x[5] = E2 - O2;
    x[3] = E3 + O3; x[4] = E3 - O3;
}

// In place: X[k] = sum_n C[k][n] x[n] (forward).
template <class T> __device__ __forceinline__ void dct8(T* x) {
    typedef Cos<T> K;
    const T s0 = x[0] + x[7], s1 = x[1] + x[6], s2 = x[2] + x[5], s3 = x[3] + x[4];
    const T d0 = x[0] - x[7], d1 = x[1] - x[6], d2 = x[2] - x[5], d3 = x[3] - x[4];
    x[0] = K::c0 * (s0 + s1 + s2 + s3);
    x[4] = K::c0 * (s0 - s1 - s2 + s3);
    x[2] = K::c2 * (s0 - s3) + K::c6 * (s1 - s2);
    x[6] = K::c6 * (s0 - s3) - K::c2 * (s1 - s2);
    x[1] = K::c1 * d0 + K::c3 * d1 + K::c5 * d2 + K::c7 * d3;
    x[3] = K::c3 * d0 - K::c7 * d1 - K::c1 * d2 - K::c5 * d3;
    x[5] = K::c5 * d0 - K::c1 * d1 + K::c7 * d2 + K::c3 * d3;
    x[7] = K::c7 * d0 - K::c5 * d1 + K::c3 * d2 - K::c1 * d3;
}

// ---- libjpeg's islow 1-D pass (jidctint.c), int32 with wrap-around like its SIMD code --------
// FIX(x) = round(x * 2^13). Descale: add half, arithmetic shift right.

__device__ __forceinline__ void islow8(int* x, const int shift) {
    const int z1e = (x[2] + x[6]) * 4433;                  // FIX(0.541196100)
    const int tmp2 = z1e - x[6] * 15137;                   // FIX(1.847759065)
    const int tmp3 = z1e + x[2] * 6270;                    // FIX(0.765366865)
    const int tmp0 = (x[0] + x[4]) * 8192;                 // << CONST_BITS
    const int tmp1 = (x[0] - x[4]) * 8192;
    const int tmp10 = tmp0 + tmp3, tmp13 = tmp0 - tmp3;
    const int tmp11 = tmp1 + tmp2, tmp12 = tmp1 - tmp2;
    int t0 = x[7], t1 = x[5], t2 = x[3], t3 = x[1];
    int z1 = t0 + t3, z2 = t1 + t2, z3 = t0 + t2, z4 = t1 + t3;
    const int z5 = (z3 + z4) * 9633;                       // FIX(1.175875602)
    t0 *= 2446;                                            // FIX(0.298631336)
    t1 *= 16819;                                           // FIX(2.053119869)
    t2 *= 25172;                                           // FIX(3.072711026)
    t3 *= 12299;                                           // FIX(1.501321110)
    z1 *= -7373;                                           // FIX(0.899976223)
    z2 *= -20995;                                          // FIX(2.562915447)
    z3 = z3 * -16069 + z5;                                 // FIX(1.961570560)
    z4 = z4 * -3196 + z5;                                  // FIX(0.390180644)
    t0 += z1 + z3; t1 += z2 + z4; t2 += z2 + z3; t3 += z1 + z4;
    const int half = 1 << (shift - 1);
    x[0] = (tmp10 + t3 + half) >> shift; x[7] = (tmp10 - t3 + half) >> shift;
    x[1] = (tmp11 + t2 + half) >> shift; x[6] = (tmp11 - t2 + half) >> shift;
    x[2] = (tmp12 + t1 + half) >> shift; x[5] = (tmp12 - t1 + half) >> shift;
    x[3] = (tmp13 + t0 + half) >> shift; x[4] = (tmp13 - t0 + half) >> shift;
}

// ---- (1) dequantize + orthonormal IDCT + level shift -> float planes --------------------------

template <class TIN, class T>
__device__ __forceinline__ void idct_blocks_to_planes(KD_COMPONENT_ARGS(TIN, T), const T* __restrict__ qt,
                                                      long long q_image_stride, T offset) {
    KD_GRID_LOOP(g, end3) {
        const Where w = locate(g, end0, end1, end2, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3);
        const TIN* src = pick(w.comp, in0, in1, in2, in3) + w.local * 64;
        const T* q = qt ? qt + w.image * q_image_stride + w.comp * 64 : nullptr;
        T blk[64];
        KD_UNROLL for (int v = 0; v < 8; ++v) {
            typename Reg<TIN>::type raw[8];
            load8(src + v * 8, raw);
            KD_UNROLL for (int u = 0; u < 8; ++u) blk[v * 8 + u] = q ? T(raw[u]) * q[v * 8 + u] : T(raw[u]);
        }
        KD_UNROLL for (int u = 0; u < 8; ++u) {  // columns: inverse along v
            T col[8];
            KD_UNROLL for (int v = 0; v < 8; ++v) col[v] = blk[v * 8 + u];
            idct8(col);
            KD_UNROLL for (int y = 0; y < 8; ++y) blk[y * 8 + u] = col[y];
        }
        T* dst = pick(w.comp, out0, out1, out2, out3) + w.plane;
        KD_UNROLL for (int y = 0; y < 8; ++y) {  // rows: inverse along u, then store the row
            T row[8];
            KD_UNROLL for (int x = 0; x < 8; ++x) row[x] = blk[y * 8 + x];
            idct8(row);
            KD_UNROLL for (int x = 0; x < 8; ++x) row[x] += offset;
            store8(dst + (long long)y * w.width, row);
        }
    }
}

// int16 quantized coefficients, float32 table: what models start from.
extern "C" __global__ void __launch_bounds__(256) idct_s16_f32(KD_COMPONENT_ARGS(short, float), const float* qt,
                                                               long long q_image_stride, float offset) {
    idct_blocks_to_planes<short, float>(in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0, bw1,
                                        bw2, bw3, end0, end1, end2, end3, qt, q_image_stride, offset);
}

// Float coefficients (a model's output, or a gradient); qt may be null.
extern "C" __global__ void __launch_bounds__(256) idct_f32_f32(KD_COMPONENT_ARGS(float, float), const float* qt,
                                                               long long q_image_stride, float offset) {
    idct_blocks_to_planes<float, float>(in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0, bw1,
                                        bw2, bw3, end0, end1, end2, end3, qt, q_image_stride, offset);
}

extern "C" __global__ void __launch_bounds__(256) idct_f64_f64(KD_COMPONENT_ARGS(double, double), const double* qt,
                                                               long long q_image_stride, double offset) {
    idct_blocks_to_planes<double, double>(in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0,
                                          bw1, bw2, bw3, end0, end1, end2, end3, qt, q_image_stride, offset);
}

// ---- (4) libjpeg islow: dequantize + integer IDCT + level shift + saturation -> uint8 planes ---
// Bit-identical to kdecode.ops.idct_islow (jidctint.c with libjpeg-turbo's int32 arithmetic).

// One block: `src` int16 coefficients, `q` its table (64 int32), `dst` the top-left sample of its
// 8x8 uint8 samples, rows `row_stride` apart.
__device__ __forceinline__ void islow_block(const short* src, const int* q, unsigned char* dst, long long row_stride) {
    int blk[64];
    KD_UNROLL for (int v = 0; v < 8; ++v) {
        int raw[8];
        load8(src + v * 8, raw);
        KD_UNROLL for (int u = 0; u < 8; ++u) blk[v * 8 + u] = raw[u] * q[v * 8 + u];
    }
    // Pass 1: columns, keeping PASS1_BITS = 2 extra bits (descale by CONST_BITS - PASS1_BITS).
    KD_UNROLL for (int u = 0; u < 8; ++u) {
        int col[8];
        KD_UNROLL for (int v = 0; v < 8; ++v) col[v] = blk[v * 8 + u];
        islow8(col, 11);
        KD_UNROLL for (int v = 0; v < 8; ++v) blk[v * 8 + u] = col[v];
    }
    // Pass 2: rows, removing CONST_BITS + PASS1_BITS + 3 (the 2^3 DCT gain).
    KD_UNROLL for (int y = 0; y < 8; ++y) {
        int row[8];
        KD_UNROLL for (int x = 0; x < 8; ++x) row[x] = blk[y * 8 + x];
        islow8(row, 18);
        KD_UNROLL for (int x = 0; x < 8; ++x) {
            const int s = row[x] + 128;
            row[x] = s < 0 ? 0 : (s > 255 ? 255 : s);
        }
        store8(dst + y * row_stride, row);
    }
}

extern "C" __global__ void __launch_bounds__(256) idct_islow_s16_u8(KD_COMPONENT_ARGS(short, unsigned char),
                                                                    const int* __restrict__ qt,
                                                                    long long q_image_stride) {
    KD_GRID_LOOP(g, end3) {
        const Where w = locate(g, end0, end1, end2, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3);
        islow_block(pick(w.comp, in0, in1, in2, in3) + w.local * 64, qt + w.image * q_image_stride + w.comp * 64,
                    pick(w.comp, out0, out1, out2, out3) + w.plane, w.width);
    }
}

// ---- (4b) islow on a ragged batch: the blocks of many images of any sizes, in one launch --------
// `in`: int16 blocks [B, 64], segment s (one component of one image) owning blocks
// [seg_end[s-1], seg_end[s]) with table s of `qt` ([S, 64]); `out`: uint8 samples [B, 64], each
// block's 8x8 samples in row order (upsample_color_blocks_u8 reads them where they are).

__device__ __forceinline__ int segment_of(long long g, const long long* __restrict__ seg_end, int n_seg) {
    int lo = 0, hi = n_seg - 1;  // the first segment whose end is past g
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (seg_end[mid] > g) hi = mid; else lo = mid + 1;
    }
    return lo;
}

extern "C" __global__ void __launch_bounds__(256) idct_islow_ragged_s16_u8(
        const short* __restrict__ in, unsigned char* __restrict__ out, const long long* __restrict__ seg_end,
        int n_seg, const int* __restrict__ qt) {
    const long long total = seg_end[n_seg - 1];
    KD_GRID_LOOP(g, total) {
        islow_block(in + g * 64, qt + (long long)segment_of(g, seg_end, n_seg) * 64, out + g * 64, 8);
    }
}

// ---- (2) level shift + forward DCT (+ quantization) from planes to blocks ---------------------

template <class T>
__device__ __forceinline__ void dct_block(const T* __restrict__ src, int width, T offset, T blk[64]) {
    KD_UNROLL for (int y = 0; y < 8; ++y) {  // rows: forward along x
        T row[8];
        load8(src + (long long)y * width, row);
        KD_UNROLL for (int x = 0; x < 8; ++x) row[x] -= offset;
        dct8(row);
        KD_UNROLL for (int u = 0; u < 8; ++u) blk[y * 8 + u] = row[u];
    }
    KD_UNROLL for (int u = 0; u < 8; ++u) {  // columns: forward along y
        T col[8];
        KD_UNROLL for (int y = 0; y < 8; ++y) col[y] = blk[y * 8 + u];
        dct8(col);
        KD_UNROLL for (int v = 0; v < 8; ++v) blk[v * 8 + u] = col[v];
    }
}

// Here in*/out* swap roles: in = planes, out = blocks.
template <class T>
__device__ __forceinline__ void dct_planes_to_blocks(KD_COMPONENT_ARGS(T, T), T offset) {
    KD_GRID_LOOP(g, end3) {
        const Where w = locate(g, end0, end1, end2, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3);
        T blk[64];
        dct_block(pick(w.comp, in0, in1, in2, in3) + w.plane, w.width, offset, blk);
        T* dst = pick(w.comp, out0, out1, out2, out3) + w.local * 64;
        KD_UNROLL for (int v = 0; v < 8; ++v) store8(dst + v * 8, blk + v * 8);
    }
}

extern "C" __global__ void __launch_bounds__(256) dct_f32_f32(KD_COMPONENT_ARGS(float, float), float offset) {
    dct_planes_to_blocks<float>(in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3,
                                end0, end1, end2, end3, offset);
}

extern "C" __global__ void __launch_bounds__(256) dct_f64_f64(KD_COMPONENT_ARGS(double, double), double offset) {
    dct_planes_to_blocks<double>(in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0, bw1, bw2,
                                 bw3, end0, end1, end2, end3, offset);
}

// Quantized output, as kdecode.ops.quantize: sign(x) * floor(|x| / q + 1/2) (half away from
// zero, jcdctmgr.c), saturated to int16.
extern "C" __global__ void __launch_bounds__(256) dct_quantize_f32_s16(KD_COMPONENT_ARGS(float, short),
                                                                       const float* __restrict__ qt,
                                                                       long long q_image_stride, float offset) {
    KD_GRID_LOOP(g, end3) {
        const Where w = locate(g, end0, end1, end2, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3);
        float blk[64];
        dct_block(pick(w.comp, in0, in1, in2, in3) + w.plane, w.width, offset, blk);
        const float* q = qt + w.image * q_image_stride + w.comp * 64;
        short* dst = pick(w.comp, out0, out1, out2, out3) + w.local * 64;
        KD_UNROLL for (int v = 0; v < 8; ++v) {
            int row[8];
            KD_UNROLL for (int u = 0; u < 8; ++u) {
                const float x = blk[v * 8 + u];
                float a = floorf(fabsf(x) / q[v * 8 + u] + 0.5f);
                a = a > 32767.f ? 32767.f : a;
                row[u] = x < 0.f ? -(int)a : (int)a;
            }
            store8(dst + v * 8, row);
        }
    }
}
