// Fused chroma upsampling + YCbCr->RGB for kdecode, as libjpeg-turbo does them (jdsample.c,
// jdcolor.c): one pass from the component planes at their real sizes to the interleaved-by-plane
// output [N, C, H, W]. The uint8 version is bit-identical to kdecode.ops.upsample followed by
// kdecode.ops.ycbcr_to_rgb; the float version is the same filter without rounding or clamping.
//
// Component c: plane p_c (rows `row_stride_c` apart, images `image_stride_c` apart: crops of the
// block-padded planes are read in place), real size h_c x w_c, upsampling factors hf_c x vf_c
// and mode_c (kdecode.ops.upsample.fancy_mode: 0 replication, 1 fancy h2v1, 2 fancy h1v2,
// 3 fancy h2v2). Fancy filters weight the nearer sample 3/4 and the farther 1/4 and replicate
// edge samples at the real size. One thread makes 4 consecutive pixels of one output row.

#include "common.cuh"

__device__ __forceinline__ int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

struct Comp {
    long long image_stride;
    int row_stride, h, w, hf, vf, mode;
};

// Where a component's uint8 samples are: a plane with rows `stride` apart ...
struct PlaneRows {
    const unsigned char* p;
    long long stride;
    __device__ __forceinline__ int at(int y, int x) const { return p[(long long)y * stride + x]; }
};

// ... or 8x8 blocks of samples in row order ([.., 64], what idct_islow_ragged_s16_u8 writes),
// `per_row` blocks to a row of blocks.
struct BlockRows {
    const unsigned char* p;
    int per_row;
    __device__ __forceinline__ int at(int y, int x) const {
        return p[((long long)(y >> 3) * per_row + (x >> 3)) * 64 + ((y & 7) << 3) + (x & 7)];
    }
};

// uint8 samples: libjpeg's integer filters with their rounding biases.
template <class S>
__device__ __forceinline__ int upsampled_u8(const S& s, const Comp& c, int y, int x) {
    if (c.mode == 1) {  // h2v1: (3 * nearer + farther + 1 or 2) >> 2
        const int j = x >> 1, jn = clamp_index(j + ((x & 1) ? 1 : -1), c.w);
        return (3 * s.at(y, j) + s.at(y, jn) + ((x & 1) ? 2 : 1)) >> 2;
    }
    if (c.mode == 2) {  // h1v2
        const int i = y >> 1, in = clamp_index(i + ((y & 1) ? 1 : -1), c.h);
        return (3 * s.at(i, x) + s.at(in, x) + ((y & 1) ? 2 : 1)) >> 2;
    }
    if (c.mode == 3) {  // h2v2: vertical 3:1 sums, then horizontal 3:1 with biases 8 / 7, >> 4
        const int i = y >> 1, in = clamp_index(i + ((y & 1) ? 1 : -1), c.h);
        const int j = x >> 1, jn = clamp_index(j + ((x & 1) ? 1 : -1), c.w);
        const int v = 3 * s.at(i, j) + s.at(in, j), vn = 3 * s.at(i, jn) + s.at(in, jn);
        return (3 * v + vn + ((x & 1) ? 7 : 8)) >> 4;
    }
    return s.at(clamp_index(y / c.vf, c.h), clamp_index(x / c.hf, c.w));
}

__device__ __forceinline__ int upsampled(const unsigned char* p, const Comp& c, int y, int x) {
    return upsampled_u8(PlaneRows{p, c.row_stride}, c, y, x);
}

// float planes: the same filters without rounding.
__device__ __forceinline__ float upsampled(const float* p, const Comp& c, int y, int x) {
    if (c.mode == 1) {
        const int j = x >> 1, jn = clamp_index(j + ((x & 1) ? 1 : -1), c.w);
        const float* row = p + (long long)y * c.row_stride;
        return (3.f * row[j] + row[jn]) / 4.f;
    }
    if (c.mode == 2) {
        const int i = y >> 1, in = clamp_index(i + ((y & 1) ? 1 : -1), c.h);
        return (3.f * p[(long long)i * c.row_stride + x] + p[(long long)in * c.row_stride + x]) / 4.f;
    }
    if (c.mode == 3) {
        const int i = y >> 1, in = clamp_index(i + ((y & 1) ? 1 : -1), c.h);
        const int j = x >> 1, jn = clamp_index(j + ((x & 1) ? 1 : -1), c.w);
        const float* near = p + (long long)i * c.row_stride;
        const float* far = p + (long long)in * c.row_stride;
        const float s = 3.f * near[j] + far[j], sn = 3.f * near[jn] + far[jn];
        return (3.f * s + sn) / 16.f;
    }
    return p[(long long)clamp_index(y / c.vf, c.h) * c.row_stride + clamp_index(x / c.hf, c.w)];
}

// jdcolor.c's 16-bit fixed point: FIX(x) = round(x * 2^16), ONE_HALF = 2^15; then saturation.
__device__ __forceinline__ void ycc_to_rgb(int y, int cb, int cr, int rgb[3]) {
    cb -= 128;
    cr -= 128;
    rgb[0] = y + ((91881 * cr + 32768) >> 16);                   // 1.40200
    rgb[1] = y + ((-22554 * cb - 46802 * cr + 32768) >> 16);     // 0.34414, 0.71414
    rgb[2] = y + ((116130 * cb + 32768) >> 16);                  // 1.77200
    KD_UNROLL for (int i = 0; i < 3; ++i) rgb[i] = rgb[i] < 0 ? 0 : (rgb[i] > 255 ? 255 : rgb[i]);
}

__device__ __forceinline__ void ycc_to_rgb(float y, float cb, float cr, float rgb[3]) {
    cb -= 128.f;
    cr -= 128.f;
    rgb[0] = y + 1.402f * cr;
    rgb[1] = y - 0.344136286f * cb - 0.714136286f * cr;
    rgb[2] = y + 1.772f * cb;
}

__device__ __forceinline__ void store4(unsigned char* p, const int v[4], bool vector) {
    if (vector) {
        const kd_u8x4 a = {(unsigned char)v[0], (unsigned char)v[1], (unsigned char)v[2], (unsigned char)v[3]};
        *reinterpret_cast<kd_u8x4*>(p) = a;
    } else {
        KD_UNROLL for (int i = 0; i < 4; ++i) p[i] = (unsigned char)v[i];
    }
}

__device__ __forceinline__ void store4(float* p, const float v[4], bool vector) {
    if (vector) {
        const kd_f32x4 a = {v[0], v[1], v[2], v[3]};
        *reinterpret_cast<kd_f32x4*>(p) = a;
    } else {
        KD_UNROLL for (int i = 0; i < 4; ++i) p[i] = v[i];
    }
}

#define KD_PLANE_ARGS(T, c)                                                                   \
    const T* __restrict__ p##c, long long image_stride##c, int row_stride##c, int h##c, int w##c, \
    int hf##c, int vf##c, int mode##c

// `vector`: W % 4 == 0 and a 16-byte aligned output, so every 4-pixel group is one store.
template <class T, class V>
__device__ __forceinline__ void upsample_color(KD_PLANE_ARGS(T, 0), KD_PLANE_ARGS(T, 1), KD_PLANE_ARGS(T, 2),
                                               T* __restrict__ out, int n_images, int n_comp, int height, int width,
                                               int convert, int vector) {
    const Comp comp[3] = {{image_stride0, row_stride0, h0, w0, hf0, vf0, mode0},
                          {image_stride1, row_stride1, h1, w1, hf1, vf1, mode1},
                          {image_stride2, row_stride2, h2, w2, hf2, vf2, mode2}};
    const T* planes[3] = {p0, p1, p2};
    const int groups = (width + 3) / 4;
    const long long plane_size = (long long)height * width;
    KD_GRID_LOOP(t, (long long)n_images * height * groups) {
        const long long row = t / groups;  // n * height + y
        const int x0 = (int)(t - row * groups) * 4;
        const long long n = row / height;
        const int y = (int)(row - n * height);
        const int count = width - x0 < 4 ? width - x0 : 4;
        V value[3][4];
        KD_UNROLL for (int c = 0; c < 3; ++c) {
            if (c < n_comp) {
                const T* p = planes[c] + n * comp[c].image_stride;
                KD_UNROLL for (int i = 0; i < 4; ++i) value[c][i] = upsampled(p, comp[c], y, x0 + (i < count ? i : 0));
            }
        }
        if (convert) {
            KD_UNROLL for (int i = 0; i < 4; ++i) {
                V rgb[3];
                ycc_to_rgb(value[0][i], value[1][i], value[2][i], rgb);
                KD_UNROLL for (int c = 0; c < 3; ++c) value[c][i] = rgb[c];
            }
        }
        T* dst = out + n * n_comp * plane_size + (long long)y * width + x0;
        KD_UNROLL for (int c = 0; c < 3; ++c) {
            if (c >= n_comp) break;
            if (count == 4) {
                store4(dst + c * plane_size, value[c], vector);
            } else {
                for (int i = 0; i < count; ++i) dst[c * plane_size + i] = (T)value[c][i];
            }
        }
    }
}

#define KD_PLANE_PASS(c) p##c, image_stride##c, row_stride##c, h##c, w##c, hf##c, vf##c, mode##c

extern "C" __global__ void __launch_bounds__(256) upsample_color_u8(
        KD_PLANE_ARGS(unsigned char, 0), KD_PLANE_ARGS(unsigned char, 1), KD_PLANE_ARGS(unsigned char, 2),
        unsigned char* out, int n_images, int n_comp, int height, int width, int convert, int vector) {
    upsample_color<unsigned char, int>(KD_PLANE_PASS(0), KD_PLANE_PASS(1), KD_PLANE_PASS(2), out, n_images, n_comp,
                                       height, width, convert, vector);
}

extern "C" __global__ void __launch_bounds__(256) upsample_color_f32(
        KD_PLANE_ARGS(float, 0), KD_PLANE_ARGS(float, 1), KD_PLANE_ARGS(float, 2),
        float* out, int n_images, int n_comp, int height, int width, int convert, int vector) {
    upsample_color<float, float>(KD_PLANE_PASS(0), KD_PLANE_PASS(1), KD_PLANE_PASS(2), out, n_images, n_comp,
                                 height, width, convert, vector);
}

// ---- a ragged batch: images of any sizes and samplings (1 or 3 components) in one launch --------
// `samples`: the uint8 8x8 blocks of every component of every image ([B, 64], row order, as
// idct_islow_ragged_s16_u8 writes them). `desc`: KD_IMAGE_FIELDS int64 per image (the layout of
// kdecode/ops/cuda.py: RAGGED_FIELDS), images in order of their work items (one a 4-pixel group
// of an output row). Output: each image's [C, H, W] at its own offset of `out`.
#define KD_IMAGE_FIELDS 28
enum { kItemEnd, kOutOffset, kHeight, kWidth, kComps, kConvert, kVector, kComp0 };
enum { kBlockOffset, kPerRow, kH, kW, kHf, kVf, kMode, kCompFields };

extern "C" __global__ void __launch_bounds__(256) upsample_color_blocks_u8(
        const unsigned char* __restrict__ samples, const long long* __restrict__ desc, int n_images,
        unsigned char* __restrict__ out) {
    const long long total = desc[(long long)(n_images - 1) * KD_IMAGE_FIELDS + kItemEnd];
    KD_GRID_LOOP(t, total) {
        int lo = 0, hi = n_images - 1;  // the first image whose items end past t
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (desc[(long long)mid * KD_IMAGE_FIELDS + kItemEnd] > t) hi = mid; else lo = mid + 1;
        }
        const long long* d = desc + (long long)lo * KD_IMAGE_FIELDS;
        const long long local = t - (lo ? d[kItemEnd - KD_IMAGE_FIELDS] : 0);
        const int height = (int)d[kHeight], width = (int)d[kWidth], n_comp = (int)d[kComps];
        const int groups = (width + 3) / 4;
        const int y = (int)(local / groups);
        const int x0 = (int)(local - (long long)y * groups) * 4;
        const int count = width - x0 < 4 ? width - x0 : 4;
        int value[3][4];
        KD_UNROLL for (int c = 0; c < 3; ++c) {
            if (c < n_comp) {
                const long long* k = d + kComp0 + c * kCompFields;
                const BlockRows s = {samples + k[kBlockOffset] * 64, (int)k[kPerRow]};
                const Comp comp = {0, 0, (int)k[kH], (int)k[kW], (int)k[kHf], (int)k[kVf], (int)k[kMode]};
                KD_UNROLL for (int i = 0; i < 4; ++i) value[c][i] = upsampled_u8(s, comp, y, x0 + (i < count ? i : 0));
            }
        }
        if (d[kConvert]) {
            KD_UNROLL for (int i = 0; i < 4; ++i) {
                int rgb[3];
                ycc_to_rgb(value[0][i], value[1][i], value[2][i], rgb);
                KD_UNROLL for (int c = 0; c < 3; ++c) value[c][i] = rgb[c];
            }
        }
        const long long plane_size = (long long)height * width;
        unsigned char* dst = out + d[kOutOffset] + (long long)y * width + x0;
        KD_UNROLL for (int c = 0; c < 3; ++c) {
            if (c >= n_comp) break;
            if (count == 4) {
                store4(dst + c * plane_size, value[c], d[kVector] != 0);
            } else {
                for (int i = 0; i < count; ++i) dst[c * plane_size + i] = (unsigned char)value[c][i];
            }
        }
    }
}
