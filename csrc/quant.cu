// The quantization-interval ("box") constraint for kdecode: clamp float coefficients into
// [(c - 1/2) q, (c + 1/2) q], where c is the quantized value the file stores and q the file's
// real table entry of that component (and image), and the gradient of that clamp.
//
// Layout as in common.cuh (up to 4 components of [N, bh, bw, 8, 8] blocks in one launch, tables
// [Q, C, 64]). One thread handles one block row: 8 values, 16-byte accesses. Compiled by NVRTC
// at run time and by `nvcc -c` in CI.
//
// Gradient: that of the clamp itself, d out / d x = 1 where (c - 1/2) q <= x <= (c + 1/2) q
// (bounds included, like torch.clamp) and 0 outside. A coefficient pushed out of its interval
// gets no gradient, so a model is trained on what the constraint lets through.

#include "common.cuh"

#define KD_CLAMP_ARGS(T)                                                                      \
    KD_COMPONENT_ARGS(T, T), const short* __restrict__ k0, const short* __restrict__ k1,       \
    const short* __restrict__ k2, const short* __restrict__ k3, const T* __restrict__ qt,      \
    long long q_image_stride

#define KD_CLAMP_PASS                                                                         \
    in0, in1, in2, in3, out0, out1, out2, out3, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3, end0,  \
    end1, end2, end3, k0, k1, k2, k3, qt, q_image_stride

// in* = coefficients x, k* = quantized c, out* = result. `grad0..3` null: forward clamp of x;
// otherwise backward: the incoming gradient where x is inside its interval, 0 elsewhere.
template <class T>
__device__ __forceinline__ void clamp_rows(KD_CLAMP_ARGS(T), const T* __restrict__ grad0, const T* __restrict__ grad1,
                                           const T* __restrict__ grad2, const T* __restrict__ grad3) {
    KD_GRID_LOOP(r, end3 * 8) {  // r: global block row
        const Where w = locate(r >> 3, end0, end1, end2, bh0, bh1, bh2, bh3, bw0, bw1, bw2, bw3);
        const int v = (int)(r & 7);
        const long long offset = w.local * 64 + v * 8;
        const T* q = qt + w.image * q_image_stride + w.comp * 64 + v * 8;
        T x[8], y[8];
        int k[8];
        load8(pick(w.comp, in0, in1, in2, in3) + offset, x);
        load8(pick(w.comp, k0, k1, k2, k3) + offset, k);
        if (grad0) load8(pick(w.comp, grad0, grad1, grad2, grad3) + offset, y);
        KD_UNROLL for (int u = 0; u < 8; ++u) {
            const T lo = (T(k[u]) - T(0.5)) * q[u], hi = (T(k[u]) + T(0.5)) * q[u];
            if (grad0)
                y[u] = (x[u] >= lo && x[u] <= hi) ? y[u] : T(0);
            else  // comparisons, not fmin/fmax, so that NaN stays NaN as in torch.clamp
                y[u] = x[u] < lo ? lo : (x[u] > hi ? hi : x[u]);
        }
        store8(pick(w.comp, out0, out1, out2, out3) + offset, y);
    }
}

extern "C" __global__ void __launch_bounds__(256) clamp_f32(KD_CLAMP_ARGS(float)) {
    clamp_rows<float>(KD_CLAMP_PASS, nullptr, nullptr, nullptr, nullptr);
}

extern "C" __global__ void __launch_bounds__(256) clamp_f64(KD_CLAMP_ARGS(double)) {
    clamp_rows<double>(KD_CLAMP_PASS, nullptr, nullptr, nullptr, nullptr);
}

extern "C" __global__ void __launch_bounds__(256) clamp_backward_f32(KD_CLAMP_ARGS(float), const float* grad0,
                                                                     const float* grad1, const float* grad2,
                                                                     const float* grad3) {
    clamp_rows<float>(KD_CLAMP_PASS, grad0, grad1, grad2, grad3);
}

extern "C" __global__ void __launch_bounds__(256) clamp_backward_f64(KD_CLAMP_ARGS(double), const double* grad0,
                                                                     const double* grad1, const double* grad2,
                                                                     const double* grad3) {
    clamp_rows<double>(KD_CLAMP_PASS, grad0, grad1, grad2, grad3);
}
