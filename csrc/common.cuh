// Shared by kdecode's CUDA sources: block-row vector loads/stores, component selection, and
// the layout of a multi-component launch. Included textually (kdecode/ops/cuda.py inlines it
// before NVRTC sees the source, so CuPy's kernel cache keys on its text too).
//
// Layout. Blocks are [N, bh, bw, 8, 8] in natural order ([v, u], v = vertical frequency);
// planes are [N, bh*8, bw*8]. One launch handles up to 4 components (the components of a JPEG
// batch): component c owns the global block indices [end[c-1], end[c]); unused components get
// empty ranges. Quantization tables are [Q, C, 64] with Q = 1 (shared) or N (one set per image):
// `q_image_stride` is 0 or C*64.
#pragma once

// Our own 8- and 16-byte vectors (not CUDA's uint4 & co., which need headers outside NVRTC's
// guaranteed set): alignas makes every load or store of one a single wide access.
struct alignas(16) kd_u32x4 { unsigned x, y, z, w; };
struct alignas(8) kd_u32x2 { unsigned x, y; };
struct alignas(16) kd_f32x4 { float x, y, z, w; };
struct alignas(16) kd_f64x2 { double x, y; };
struct alignas(4) kd_u8x4 { unsigned char x, y, z, w; };

#define KD_UNROLL _Pragma("unroll")

// ---- vector loads and stores of 8 consecutive values (one block row) -------------------------

__device__ __forceinline__ void load8(const short* p, int v[8]) {
    const kd_u32x4 r = *reinterpret_cast<const kd_u32x4*>(p);
    const unsigned w[4] = {r.x, r.y, r.z, r.w};
    KD_UNROLL for (int i = 0; i < 4; ++i) {
        v[2 * i] = (short)(w[i] & 0xffffu);   // little endian: element 2i is the low half
        v[2 * i + 1] = (short)(w[i] >> 16);
    }
}

__device__ __forceinline__ void load8(const float* p, float v[8]) {
    const kd_f32x4 a = reinterpret_cast<const kd_f32x4*>(p)[0];
    const kd_f32x4 b = reinterpret_cast<const kd_f32x4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ void load8(const double* p, double v[8]) {
    KD_UNROLL for (int i = 0; i < 4; ++i) {
        const kd_f64x2 a = reinterpret_cast<const kd_f64x2*>(p)[i];
        v[2 * i] = a.x; v[2 * i + 1] = a.y;
    }
}

__device__ __forceinline__ void store8(float* p, const float v[8]) {
    const kd_f32x4 a = {v[0], v[1], v[2], v[3]}, b = {v[4], v[5], v[6], v[7]};
    reinterpret_cast<kd_f32x4*>(p)[0] = a;
    reinterpret_cast<kd_f32x4*>(p)[1] = b;
}

__device__ __forceinline__ void store8(double* p, const double v[8]) {
    KD_UNROLL for (int i = 0; i < 4; ++i) {
        const kd_f64x2 a = {v[2 * i], v[2 * i + 1]};
        reinterpret_cast<kd_f64x2*>(p)[i] = a;
    }
}

__device__ __forceinline__ void store8(short* p, const int v[8]) {
    unsigned w[4];
    KD_UNROLL for (int i = 0; i < 4; ++i)
        w[i] = (unsigned)(v[2 * i] & 0xffff) | ((unsigned)(v[2 * i + 1] & 0xffff) << 16);
    const kd_u32x4 a = {w[0], w[1], w[2], w[3]};
    *reinterpret_cast<kd_u32x4*>(p) = a;
}

__device__ __forceinline__ void store8(unsigned char* p, const int v[8]) {
    unsigned w[2] = {0u, 0u};
    KD_UNROLL for (int i = 0; i < 8; ++i) w[i / 4] |= (unsigned)v[i] << (8 * (i % 4));
    const kd_u32x2 a = {w[0], w[1]};
    *reinterpret_cast<kd_u32x2*>(p) = a;
}

// Register type of a loaded value: int16 coefficients widen to int.
template <class T> struct Reg { typedef T type; };
template <> struct Reg<short> { typedef int type; };

// ---- which component, image and grid position a global block index is --------------------

template <class P> __device__ __forceinline__ P pick(int c, P p0, P p1, P p2, P p3) {
    return c == 0 ? p0 : c == 1 ? p1 : c == 2 ? p2 : p3;
}

struct Where {
    int comp;          // component 0..3
    long long local;   // block index inside the component's [N, bh, bw] grid
    long long plane;   // element offset of the block's top-left sample in the component's planes
    int width;         // plane row length bw*8
    long long image;   // n
};

// Selects instead of indexing small arrays with c: a run-time index would put them in local memory.
__device__ __forceinline__ Where locate(long long g, long long end0, long long end1, long long end2,
                                        int bh0, int bh1, int bh2, int bh3, int bw0, int bw1, int bw2, int bw3) {
    const int c = (g >= end0) + (g >= end1) + (g >= end2);  // ends are non-decreasing
    const long long start = pick(c, 0LL, end0, end1, end2);
    const int bh = pick(c, bh0, bh1, bh2, bh3), bw = pick(c, bw0, bw1, bw2, bw3);
    Where w;
    w.comp = c;
    w.local = g - start;
    const long long per_image = (long long)bh * bw;
    w.image = w.local / per_image;
    const long long r = w.local - w.image * per_image;
    const int by = (int)(r / bw), bx = (int)(r - (long long)by * bw);
    w.width = bw * 8;
    w.plane = (w.image * bh * 8 + by * 8) * (long long)w.width + bx * 8;
    return w;
}

#define KD_COMPONENT_ARGS(TIN, TOUT)                                                          \
    const TIN* __restrict__ in0, const TIN* __restrict__ in1, const TIN* __restrict__ in2,    \
    const TIN* __restrict__ in3, TOUT* __restrict__ out0, TOUT* __restrict__ out1,            \
    TOUT* __restrict__ out2, TOUT* __restrict__ out3, int bh0, int bh1, int bh2, int bh3,      \
    int bw0, int bw1, int bw2, int bw3, long long end0, long long end1, long long end2,       \
    long long end3

#define KD_GRID_LOOP(g, total)                                                                 \
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < (total);           \
         g += (long long)blockDim.x * gridDim.x)

