// MAC-array kernels: convolution (GEMM is its 1x1 case) and depthwise convolution.
//
// Integer results are exact modulo 2^32, so the order of the sums is free and a_offset is folded
// into a per-output-channel correction: sum (a + off) * w = sum a * w + off * sum w (mod 2^32).
// Float results must add in (ky, kx, ci) order with one fp32 rounding per add: the kernels
// vectorise over output channels only, never over the reduction.
//
// Hot loops have a generic C++ version and an AVX2 version chosen at run time (the library must
// run on any x86-64); both give identical bits.
#include <immintrin.h>

#include <algorithm>

#include "kernels.h"

namespace npu {
namespace {

constexpr int kP = 4;    // output pixels per micro-kernel call: they share every weight load
constexpr int kNB = 16;  // output channels per micro-kernel call: two AVX2 registers of int32/float

// Building with -DNPU_EMULATOR_NO_AVX2 (e.g. NPU_CXXFLAGS) tests the generic kernels on any machine.
bool HasAvx2() {
#ifdef NPU_EMULATOR_NO_AVX2
  return false;
#else
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#endif
}

// Input row of each output pixel at tap (0, 0), and the row offset of each tap (ky, kx).
struct Geometry {
  std::vector<int64_t> pixel_row, tap_row;
  explicit Geometry(const ConvArgs& g) {
    pixel_row.reserve(size_t(g.o.rows()));
    for (int64_t n = 0; n < g.o.n; ++n)
      for (int64_t y = 0; y < g.o.h; ++y)
        for (int64_t x = 0; x < g.o.w; ++x) pixel_row.push_back(g.a.row_index(n, y * g.sh, x * g.sw));
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) tap_row.push_back(ky * g.dh * g.a.w + kx * g.dw);
  }
};

// ---- integer micro-kernels: acc[p][j] = sum_t sum_k a_p[t][2k..2k+1] . w[t][k][j][0..1] ------------
// a[p] is pixel p's int16 row at tap 0 (tap t adds tap_off[t]); channels come in zero-padded pairs
// so that AVX2's pmaddwd does two MACs per lane. Products fit: |int16 * int8| < 2^22.
// P (1..kP) is the number of distinct pixels: a short last block computes only those.

template <int P>
void MicroIntGeneric(const int16_t* const* a, const int64_t* tap_off, int64_t taps, int64_t pairs,
                     const int16_t* w, int32_t (*acc)[kNB]) {
  uint32_t s[P][kNB] = {};
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t k = 0; k < pairs; ++k) {
      const int16_t* wk = w + (t * pairs + k) * 2 * kNB;
      for (int p = 0; p < P; ++p) {
        int32_t a0 = a[p][tap_off[t] + 2 * k], a1 = a[p][tap_off[t] + 2 * k + 1];
        for (int j = 0; j < kNB; ++j) s[p][j] += uint32_t(a0 * wk[2 * j] + a1 * wk[2 * j + 1]);
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < kNB; ++j) acc[p][j] = int32_t(s[p][j]);
}

template <int P>
__attribute__((target("avx2"))) void MicroIntAvx2(const int16_t* const* a, const int64_t* tap_off, int64_t taps,
                                                  int64_t pairs, const int16_t* w, int32_t (*acc)[kNB]) {
  __m256i s[P][2];
  for (int p = 0; p < P; ++p) s[p][0] = s[p][1] = _mm256_setzero_si256();
  for (int64_t t = 0; t < taps; ++t) {
    const int16_t* ap[P];
    for (int p = 0; p < P; ++p) ap[p] = a[p] + tap_off[t];
    const int16_t* wk = w + t * pairs * 2 * kNB;
    for (int64_t k = 0; k < pairs; ++k, wk += 2 * kNB) {
      __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk));
      __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + kNB));
      for (int p = 0; p < P; ++p) {
        int32_t pair;
        std::memcpy(&pair, ap[p] + 2 * k, 4);
        __m256i av = _mm256_set1_epi32(pair);
        s[p][0] = _mm256_add_epi32(s[p][0], _mm256_madd_epi16(av, w0));
        s[p][1] = _mm256_add_epi32(s[p][1], _mm256_madd_epi16(av, w1));
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[p]), s[p][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[p] + 8), s[p][1]);
  }
}

// ---- float micro-kernels: acc[p][j] += a_p[t][ci] * w[t*cin + ci][j] in (t, ci) order --------------
// w is a row-major [taps*cin][ldw] matrix already offset to the block's first column.

template <int P>
void MicroFloatGeneric(const float* const* a, const int64_t* tap_off, int64_t taps, int64_t cin, const float* w,
                       int64_t ldw, float (*acc)[kNB]) {
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t ci = 0; ci < cin; ++ci) {
      const float* wk = w + (t * cin + ci) * ldw;
      for (int p = 0; p < P; ++p) {
        float av = a[p][tap_off[t] + ci];
        for (int j = 0; j < kNB; ++j) acc[p][j] = acc[p][j] + av * wk[j];
      }
    }
  }
}

template <int P>
__attribute__((target("avx2"))) void MicroFloatAvx2(const float* const* a, const int64_t* tap_off, int64_t taps,
                                                    int64_t cin, const float* w, int64_t ldw, float (*acc)[kNB]) {
  __m256 s[P][2];
  for (int p = 0; p < P; ++p) s[p][0] = _mm256_loadu_ps(acc[p]), s[p][1] = _mm256_loadu_ps(acc[p] + 8);
  for (int64_t t = 0; t < taps; ++t) {
    const float* ap[P];
    for (int p = 0; p < P; ++p) ap[p] = a[p] + tap_off[t];
    const float* wk = w + t * cin * ldw;
    for (int64_t ci = 0; ci < cin; ++ci, wk += ldw) {
      __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
      for (int p = 0; p < P; ++p) {
        __m256 av = _mm256_set1_ps(ap[p][ci]);
        // Separate multiply and add: exactly one rounding each, as the generic version.
        s[p][0] = _mm256_add_ps(s[p][0], _mm256_mul_ps(av, w0));
        s[p][1] = _mm256_add_ps(s[p][1], _mm256_mul_ps(av, w1));
      }
    }
  }
  for (int p = 0; p < P; ++p) _mm256_storeu_ps(acc[p], s[p][0]), _mm256_storeu_ps(acc[p] + 8, s[p][1]);
}

using MicroIntFn = void (*)(const int16_t* const*, const int64_t*, int64_t, int64_t, const int16_t*, int32_t (*)[kNB]);
using MicroFloatFn = void (*)(const float* const*, const int64_t*, int64_t, int64_t, const float*, int64_t,
                              float (*)[kNB]);

// Micro-kernels indexed by the number of valid pixels minus one.
const MicroIntFn* MicroInts() {
  static const MicroIntFn avx2[kP] = {MicroIntAvx2<1>, MicroIntAvx2<2>, MicroIntAvx2<3>, MicroIntAvx2<4>};
  static const MicroIntFn generic[kP] = {MicroIntGeneric<1>, MicroIntGeneric<2>, MicroIntGeneric<3>,
                                         MicroIntGeneric<4>};
  return HasAvx2() ? avx2 : generic;
}
const MicroFloatFn* MicroFloats() {
  static const MicroFloatFn avx2[kP] = {MicroFloatAvx2<1>, MicroFloatAvx2<2>, MicroFloatAvx2<3>, MicroFloatAvx2<4>};
  static const MicroFloatFn generic[kP] = {MicroFloatGeneric<1>, MicroFloatGeneric<2>, MicroFloatGeneric<3>,
                                           MicroFloatGeneric<4>};
  return HasAvx2() ? avx2 : generic;
}

int32_t ReadI32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A per-thread scratch buffer reused across instructions (no allocation or page faults per call),
// its data aligned to 64 bytes. Contents are not preserved and not initialised.
template <class T>
T* Scratch(std::vector<T>* buf, int64_t n) {
  size_t need = size_t(n) + 64 / sizeof(T);
  if (buf->size() < need) buf->resize(need);
  uintptr_t p = reinterpret_cast<uintptr_t>(buf->data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

// Runs fn(rows, p0, valid, grp) over blocks of up to kP output pixels; rows[p] is pixel p's
// activation row for group grp at tap 0 (a short last block repeats its last pixel).
template <class T, class Fn>
void ForEachPixelBlock(const Geometry& geo, int64_t groups, const T* a, int64_t row_elems, int64_t grp_elems, Fn fn) {
  const int64_t pixels = int64_t(geo.pixel_row.size());
  for (int64_t p0 = 0; p0 < pixels; p0 += kP) {
    int valid = int(std::min<int64_t>(kP, pixels - p0));
    for (int64_t grp = 0; grp < groups; ++grp) {
      const T* rows[kP];
      for (int p = 0; p < kP; ++p)
        rows[p] = a + geo.pixel_row[size_t(p0 + std::min(p, valid - 1))] * row_elems + grp * grp_elems;
      fn(rows, p0, valid, grp);
    }
  }
}

// Integer convolution: activations as int16 rows [input row][group][cin_pad] (cin_pad = Cg rounded
// up to a pair), weights packed per (group, block of kNB output channels) as
// [tap][cin_pad / 2][kNB][2] int16 panels for pmaddwd; padding slots are zero.
void ConvInt(const ConvArgs& g, const Geometry& geo) {
  const View &a = g.a, &w = g.w, &o = g.o;
  const int64_t groups = g.groups, cg = a.c / groups, ng = o.c / groups, taps = g.kh * g.kw;
  const int64_t cin_pad = (cg + 1) / 2 * 2, blocks = (ng + kNB - 1) / kNB;
  const int64_t panel_elems = taps * cin_pad * kNB, row_elems = groups * cin_pad;
  thread_local std::vector<int32_t> row_buf;
  thread_local std::vector<int16_t> a_buf, w_buf;
  thread_local std::vector<uint32_t> colsum_buf;
  int32_t* row = Scratch(&row_buf, std::max(a.c, w.c));
  int16_t* pa = Scratch(&a_buf, a.rows() * row_elems);
  for (int64_t r = 0; r < a.rows(); ++r) {
    LoadRowInt(a, r, row);
    int16_t* dst = pa + r * row_elems;
    for (int64_t grp = 0; grp < groups; ++grp, dst += cin_pad) {
      const int32_t* src = row + grp * cg;
      for (int64_t ci = 0; ci < cg; ++ci) dst[ci] = int16_t(src[ci]);
      if (cin_pad != cg) dst[cg] = 0;
    }
  }
  int16_t* pw = Scratch(&w_buf, groups * blocks * panel_elems);
  const uint32_t off = uint32_t(g.a_offset);
  uint32_t* colsum = Scratch(&colsum_buf, o.c);
  std::fill(colsum, colsum + o.c, 0u);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t ci = 0; ci < cin_pad; ++ci) {
      const bool pad = ci >= cg;
      if (!pad) {
        LoadRowInt(w, t * cg + ci, row);
        if (off != 0)
          for (int64_t co = 0; co < o.c; ++co) colsum[co] += uint32_t(row[co]);
      }
      for (int64_t grp = 0; grp < groups; ++grp)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          int16_t* dst = pw + (grp * blocks + blk) * panel_elems + t * cin_pad * kNB + (ci / 2) * 2 * kNB + ci % 2;
          const int32_t* src = row + grp * ng + blk * kNB;
          int cols = pad ? 0 : int(std::min<int64_t>(kNB, ng - blk * kNB));
          for (int j = 0; j < cols; ++j) dst[2 * j] = int16_t(src[j]);
          for (int j = cols; j < kNB; ++j) dst[2 * j] = 0;
        }
    }
  std::vector<int64_t> tap_off;
  for (int64_t r : geo.tap_row) tap_off.push_back(r * row_elems);
  const MicroIntFn* micro = MicroInts();
  int32_t acc[kP][kNB];
  ForEachPixelBlock(geo, groups, pa, row_elems, cin_pad, [&](const int16_t* const* rows, int64_t p0, int valid, int64_t grp) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t co0 = grp * ng + blk * kNB;
      const int cols = int(std::min<int64_t>(kNB, ng - blk * kNB));
      micro[valid - 1](rows, tap_off.data(), taps, cin_pad / 2, pw + (grp * blocks + blk) * panel_elems, acc);
      for (int p = 0; p < valid; ++p) {
        uint8_t* out = o.row(p0 + p) + co0 * 4;
        for (int j = 0; j < cols; ++j) {
          uint32_t v = uint32_t(acc[p][j]) + off * colsum[co0 + j];
          if (g.accumulate) v += uint32_t(ReadI32(out + 4 * j));
          std::memcpy(out + 4 * j, &v, 4);
        }
      }
    }
  });
}

// Float convolution: activations as fp32 rows in their natural layout, weights converted once to a
// row-major fp32 [taps*Cg][ldw] matrix that the micro-kernel reads in place, kNB columns at a time.
void ConvFloat(const ConvArgs& g, const Geometry& geo) {
  const View &a = g.a, &w = g.w, &o = g.o;
  const int64_t groups = g.groups, cg = a.c / groups, ng = o.c / groups, taps = g.kh * g.kw;
  const int64_t blocks = (ng + kNB - 1) / kNB, k_rows = taps * cg;
  // A block may run up to kNB - 1 columns past its group (discarded): keep those reads in the row
  // or, for the last row, in the slack after it.
  const int64_t ldw = (o.c + kNB - 1) / kNB * kNB;
  thread_local std::vector<float> a_buf, w_buf;
  float* pa = Scratch(&a_buf, a.rows() * a.c);
  for (int64_t r = 0; r < a.rows(); ++r) LoadRowFloat(a, r, pa + r * a.c);
  float* pw = Scratch(&w_buf, k_rows * ldw + kNB);
  for (int64_t k = 0; k < k_rows; ++k) {
    float* dst = pw + k * ldw;
    LoadRowFloat(w, k, dst);
    std::fill(dst + o.c, dst + ldw, 0.0f);
  }
  std::fill(pw + k_rows * ldw, pw + k_rows * ldw + kNB, 0.0f);
  std::vector<int64_t> tap_off;
  for (int64_t r : geo.tap_row) tap_off.push_back(r * a.c);
  const MicroFloatFn* micro = MicroFloats();
  float acc[kP][kNB];
  ForEachPixelBlock(geo, groups, pa, a.c, cg, [&](const float* const* rows, int64_t p0, int valid, int64_t grp) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t co0 = grp * ng + blk * kNB;
      const int cols = int(std::min<int64_t>(kNB, ng - blk * kNB));
      // The sum starts from the accumulator (accumulate) or +0.0, then adds in (ky, kx, ci) order.
      for (int p = 0; p < valid; ++p) {
        if (g.accumulate) {
          std::memcpy(acc[p], o.row(p0 + p) + co0 * 4, size_t(cols) * 4);
          std::fill(acc[p] + cols, acc[p] + kNB, 0.0f);
        } else {
          std::fill(acc[p], acc[p] + kNB, 0.0f);
        }
      }
      micro[valid - 1](rows, tap_off.data(), taps, cg, pw + co0, ldw, acc);
      for (int p = 0; p < valid; ++p) std::memcpy(o.row(p0 + p) + co0 * 4, acc[p], size_t(cols) * 4);
    }
  });
}

// ---- depthwise: one output pixel's taps at a time, vectorised over channels -------------------------

void DwPixelIntGeneric(uint32_t* acc, const int32_t* a0, const int64_t* tap_off, const int32_t* w, int64_t taps,
                       int64_t c) {
  for (int64_t t = 0; t < taps; ++t) {
    const int32_t* a = a0 + tap_off[t];
    const int32_t* wt = w + t * c;
    for (int64_t i = 0; i < c; ++i) acc[i] += uint32_t(a[i]) * uint32_t(wt[i]);
  }
}

void DwPixelFloatGeneric(float* acc, const float* a0, const int64_t* tap_off, const float* w, int64_t taps,
                         int64_t c) {
  for (int64_t t = 0; t < taps; ++t) {
    const float* a = a0 + tap_off[t];
    const float* wt = w + t * c;
    for (int64_t i = 0; i < c; ++i) acc[i] = acc[i] + a[i] * wt[i];
  }
}

// AVX2: the accumulators of 32 channels stay in registers across all taps (same per-channel order).
__attribute__((target("avx2"))) void DwPixelIntAvx2(uint32_t* acc, const int32_t* a0, const int64_t* tap_off,
                                                    const int32_t* w, int64_t taps, int64_t c) {
  int64_t i = 0;
  for (; i + 32 <= c; i += 32) {
    __m256i s[4];
    for (int q = 0; q < 4; ++q) s[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i + 8 * q));
    for (int64_t t = 0; t < taps; ++t) {
      const int32_t* a = a0 + tap_off[t] + i;
      const int32_t* wt = w + t * c + i;
      for (int q = 0; q < 4; ++q)
        s[q] = _mm256_add_epi32(s[q], _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 8 * q)),
                                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + 8 * q))));
    }
    for (int q = 0; q < 4; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + i + 8 * q), s[q]);
  }
  for (; i + 8 <= c; i += 8) {
    __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i));
    for (int64_t t = 0; t < taps; ++t)
      s = _mm256_add_epi32(s, _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0 + tap_off[t] + i)),
                                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + t * c + i))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + i), s);
  }
  for (; i < c; ++i) {
    uint32_t s = acc[i];
    for (int64_t t = 0; t < taps; ++t) s += uint32_t(a0[tap_off[t] + i]) * uint32_t(w[t * c + i]);
    acc[i] = s;
  }
}

__attribute__((target("avx2"))) void DwPixelFloatAvx2(float* acc, const float* a0, const int64_t* tap_off,
                                                      const float* w, int64_t taps, int64_t c) {
  int64_t i = 0;
  for (; i + 32 <= c; i += 32) {
    __m256 s[4];
    for (int q = 0; q < 4; ++q) s[q] = _mm256_loadu_ps(acc + i + 8 * q);
    for (int64_t t = 0; t < taps; ++t) {
      const float* a = a0 + tap_off[t] + i;
      const float* wt = w + t * c + i;
      for (int q = 0; q < 4; ++q)
        s[q] = _mm256_add_ps(s[q], _mm256_mul_ps(_mm256_loadu_ps(a + 8 * q), _mm256_loadu_ps(wt + 8 * q)));
    }
    for (int q = 0; q < 4; ++q) _mm256_storeu_ps(acc + i + 8 * q, s[q]);
  }
  for (; i + 8 <= c; i += 8) {
    __m256 s = _mm256_loadu_ps(acc + i);
    for (int64_t t = 0; t < taps; ++t)
      s = _mm256_add_ps(s, _mm256_mul_ps(_mm256_loadu_ps(a0 + tap_off[t] + i), _mm256_loadu_ps(w + t * c + i)));
    _mm256_storeu_ps(acc + i, s);
  }
  for (; i < c; ++i) {
    float s = acc[i];
    for (int64_t t = 0; t < taps; ++t) s = s + a0[tap_off[t] + i] * w[t * c + i];
    acc[i] = s;
  }
}

// Input channels repeated `mult` times (output channel co reads input channel co / mult), and the
// weights [tap][co], in the element type of the accumulation.
template <class T, class Load>
void Expand(const ConvArgs& g, Load load, std::vector<T>* a, std::vector<T>* w) {
  const int64_t c = g.o.c, mult = g.o.c / g.a.c;
  std::vector<T> row(size_t(g.a.c));
  a->resize(size_t(g.a.rows() * c));
  for (int64_t r = 0; r < g.a.rows(); ++r) {
    T* dst = a->data() + r * c;
    if (mult == 1) {
      load(g.a, r, dst);
      continue;
    }
    load(g.a, r, row.data());
    for (int64_t ci = 0; ci < g.a.c; ++ci)
      for (int64_t m = 0; m < mult; ++m) dst[ci * mult + m] = row[size_t(ci)];
  }
  w->resize(size_t(g.w.rows() * c));
  for (int64_t t = 0; t < g.w.rows(); ++t) load(g.w, t, w->data() + t * c);
}

}  // namespace

void ConvKernel(const ConvArgs& g) {
  Geometry geo(g);
  if (IsFloat(g.a.dtype)) {
    ConvFloat(g, geo);
  } else {
    ConvInt(g, geo);
  }
}

void DepthwiseKernel(const ConvArgs& g) {
  Geometry geo(g);
  const int64_t c = g.o.c, taps = g.kh * g.kw;
  std::vector<int64_t> tap_off;
  for (int64_t r : geo.tap_row) tap_off.push_back(r * c);
  if (IsFloat(g.a.dtype)) {
    thread_local std::vector<float> a, w, acc;
    acc.resize(size_t(c));
    Expand(g, LoadRowFloat, &a, &w);
    const auto pixel = HasAvx2() ? DwPixelFloatAvx2 : DwPixelFloatGeneric;
    for (int64_t p = 0; p < g.o.rows(); ++p) {
      uint8_t* out = g.o.row(p);
      if (g.accumulate) {
        std::memcpy(acc.data(), out, size_t(c) * 4);
      } else {
        std::fill(acc.begin(), acc.end(), 0.0f);
      }
      pixel(acc.data(), a.data() + geo.pixel_row[size_t(p)] * c, tap_off.data(), w.data(), taps, c);
      std::memcpy(out, acc.data(), size_t(c) * 4);
    }
    return;
  }
  thread_local std::vector<int32_t> a, w;
  Expand(g, LoadRowInt, &a, &w);
  std::vector<uint32_t> colsum(size_t(c), 0), acc(static_cast<size_t>(c));
  const auto pixel = HasAvx2() ? DwPixelIntAvx2 : DwPixelIntGeneric;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t co = 0; co < c; ++co) colsum[size_t(co)] += uint32_t(w[size_t(t * c + co)]);
  const uint32_t off = uint32_t(g.a_offset);
  for (int64_t p = 0; p < g.o.rows(); ++p) {
    uint8_t* out = g.o.row(p);
    for (int64_t co = 0; co < c; ++co) acc[size_t(co)] = off * colsum[size_t(co)];
    pixel(acc.data(), a.data() + geo.pixel_row[size_t(p)] * c, tap_off.data(), w.data(), taps, c);
    if (g.accumulate)
      for (int64_t co = 0; co < c; ++co) acc[size_t(co)] += uint32_t(ReadI32(out + co * 4));
    std::memcpy(out, acc.data(), size_t(c) * 4);
  }
}

}  // namespace npu
