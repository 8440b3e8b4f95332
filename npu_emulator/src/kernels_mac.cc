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

void MicroIntGeneric(const int16_t* const* a, const int64_t* tap_off, int64_t taps, int64_t pairs,
                     const int16_t* w, int32_t (*acc)[kNB]) {
  uint32_t s[kP][kNB] = {};
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t k = 0; k < pairs; ++k) {
      const int16_t* wk = w + (t * pairs + k) * 2 * kNB;
      for (int p = 0; p < kP; ++p) {
        int32_t a0 = a[p][tap_off[t] + 2 * k], a1 = a[p][tap_off[t] + 2 * k + 1];
        for (int j = 0; j < kNB; ++j) s[p][j] += uint32_t(a0 * wk[2 * j] + a1 * wk[2 * j + 1]);
      }
    }
  }
  for (int p = 0; p < kP; ++p)
    for (int j = 0; j < kNB; ++j) acc[p][j] = int32_t(s[p][j]);
}

__attribute__((target("avx2"))) void MicroIntAvx2(const int16_t* const* a, const int64_t* tap_off, int64_t taps,
                                                  int64_t pairs, const int16_t* w, int32_t (*acc)[kNB]) {
  __m256i s[kP][2];
  for (int p = 0; p < kP; ++p) s[p][0] = s[p][1] = _mm256_setzero_si256();
  for (int64_t t = 0; t < taps; ++t) {
    const int16_t* ap[kP];
    for (int p = 0; p < kP; ++p) ap[p] = a[p] + tap_off[t];
    const int16_t* wk = w + t * pairs * 2 * kNB;
    for (int64_t k = 0; k < pairs; ++k, wk += 2 * kNB) {
      __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk));
      __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + kNB));
      for (int p = 0; p < kP; ++p) {
        int32_t pair;
        std::memcpy(&pair, ap[p] + 2 * k, 4);
        __m256i av = _mm256_set1_epi32(pair);
        s[p][0] = _mm256_add_epi32(s[p][0], _mm256_madd_epi16(av, w0));
        s[p][1] = _mm256_add_epi32(s[p][1], _mm256_madd_epi16(av, w1));
      }
    }
  }
  for (int p = 0; p < kP; ++p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[p]), s[p][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[p] + 8), s[p][1]);
  }
}

// ---- float micro-kernels: acc[p][j] += a_p[t][ci] * w[t][ci][j] in (t, ci) order ------------------

void MicroFloatGeneric(const float* const* a, const int64_t* tap_off, int64_t taps, int64_t cin, const float* w,
                       float (*acc)[kNB]) {
  for (int64_t t = 0; t < taps; ++t) {
    for (int64_t ci = 0; ci < cin; ++ci) {
      const float* wk = w + (t * cin + ci) * kNB;
      for (int p = 0; p < kP; ++p) {
        float av = a[p][tap_off[t] + ci];
        for (int j = 0; j < kNB; ++j) acc[p][j] = acc[p][j] + av * wk[j];
      }
    }
  }
}

__attribute__((target("avx2"))) void MicroFloatAvx2(const float* const* a, const int64_t* tap_off, int64_t taps,
                                                    int64_t cin, const float* w, float (*acc)[kNB]) {
  __m256 s[kP][2];
  for (int p = 0; p < kP; ++p) s[p][0] = _mm256_loadu_ps(acc[p]), s[p][1] = _mm256_loadu_ps(acc[p] + 8);
  for (int64_t t = 0; t < taps; ++t) {
    const float* ap[kP];
    for (int p = 0; p < kP; ++p) ap[p] = a[p] + tap_off[t];
    const float* wk = w + t * cin * kNB;
    for (int64_t ci = 0; ci < cin; ++ci, wk += kNB) {
      __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
      for (int p = 0; p < kP; ++p) {
        __m256 av = _mm256_set1_ps(ap[p][ci]);
        // Separate multiply and add: exactly one rounding each, as the generic version.
        s[p][0] = _mm256_add_ps(s[p][0], _mm256_mul_ps(av, w0));
        s[p][1] = _mm256_add_ps(s[p][1], _mm256_mul_ps(av, w1));
      }
    }
  }
  for (int p = 0; p < kP; ++p) _mm256_storeu_ps(acc[p], s[p][0]), _mm256_storeu_ps(acc[p] + 8, s[p][1]);
}

int32_t ReadI32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
float ReadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

// The convolution with operands repacked for the micro-kernels. Per group g: Cg input channels
// (padded to `cin_pad`), Ng output channels in `blocks` blocks of kNB.
template <class T>
struct Packed {
  int64_t groups, cg, ng, taps, cin_pad, blocks;
  std::vector<T> a;  // [input row][group][cin_pad]
  std::vector<T> w;  // [group][block][tap][cin_pad][kNB] (ints: the pair-interleaved order below)
  std::vector<int64_t> tap_off;

  Packed(const ConvArgs& g, const Geometry& geo, int64_t pad_to) {
    groups = g.groups, cg = g.a.c / groups, ng = g.o.c / groups, taps = g.kh * g.kw;
    cin_pad = (cg + pad_to - 1) / pad_to * pad_to;
    blocks = (ng + kNB - 1) / kNB;
    for (int64_t r : geo.tap_row) tap_off.push_back(r * groups * cin_pad);
  }
  int64_t WIndex(int64_t co, int64_t t, int64_t ci) const {  // where weight (t, ci, co) goes
    int64_t grp = co / ng, j = co % ng, blk = j / kNB, jj = j % kNB;
    int64_t panel = ((grp * blocks + blk) * taps + t) * cin_pad * kNB;
    if (sizeof(T) == 2) return panel + (ci / 2) * 2 * kNB + jj * 2 + ci % 2;  // int16 pairs for pmaddwd
    return panel + ci * kNB + jj;
  }
  const T* Panel(int64_t grp, int64_t blk) const { return w.data() + (grp * blocks + blk) * taps * cin_pad * kNB; }
  const T* Row(int64_t input_row, int64_t grp) const { return a.data() + (input_row * groups + grp) * cin_pad; }
};

// Runs the micro-kernel over blocks of kP output pixels; a short last block repeats its last
// pixel and discards the copies.
template <class T, class Fn>
void ForEachBlock(const Packed<T>& pk, const Geometry& geo, Fn fn) {
  const int64_t pixels = int64_t(geo.pixel_row.size());
  for (int64_t p0 = 0; p0 < pixels; p0 += kP) {
    int valid = int(std::min<int64_t>(kP, pixels - p0));
    for (int64_t grp = 0; grp < pk.groups; ++grp) {
      const T* rows[kP];
      for (int p = 0; p < kP; ++p) rows[p] = pk.Row(geo.pixel_row[size_t(p0 + std::min(p, valid - 1))], grp);
      for (int64_t blk = 0; blk < pk.blocks; ++blk) {
        int cols = int(std::min<int64_t>(kNB, pk.ng - blk * kNB));
        fn(rows, p0, valid, grp * pk.ng + blk * kNB, cols, pk.Panel(grp, blk));
      }
    }
  }
}

void ConvInt(const ConvArgs& g, const Geometry& geo) {
  Packed<int16_t> pk(g, geo, 2);
  const View &a = g.a, &w = g.w, &o = g.o;
  std::vector<int32_t> row(size_t(std::max(a.c, w.c)));
  pk.a.assign(size_t(a.rows() * pk.groups * pk.cin_pad), 0);
  for (int64_t r = 0; r < a.rows(); ++r) {
    LoadRowInt(a, r, row.data());
    for (int64_t grp = 0; grp < pk.groups; ++grp)
      for (int64_t ci = 0; ci < pk.cg; ++ci) pk.a[size_t((r * pk.groups + grp) * pk.cin_pad + ci)] = int16_t(row[grp * pk.cg + ci]);
  }
  pk.w.assign(size_t(pk.groups * pk.blocks * pk.taps * pk.cin_pad * kNB), 0);
  std::vector<uint32_t> colsum(size_t(o.c), 0);
  for (int64_t t = 0; t < pk.taps; ++t)
    for (int64_t ci = 0; ci < pk.cg; ++ci) {
      LoadRowInt(w, t * pk.cg + ci, row.data());
      for (int64_t co = 0; co < o.c; ++co) {
        pk.w[size_t(pk.WIndex(co, t, ci))] = int16_t(row[co]);
        colsum[size_t(co)] += uint32_t(row[co]);
      }
    }
  const auto micro = HasAvx2() ? MicroIntAvx2 : MicroIntGeneric;
  const uint32_t off = uint32_t(g.a_offset);
  int32_t acc[kP][kNB];
  ForEachBlock(pk, geo, [&](const int16_t* const* rows, int64_t p0, int valid, int64_t co0, int cols, const int16_t* panel) {
    micro(rows, pk.tap_off.data(), pk.taps, pk.cin_pad / 2, panel, acc);
    for (int p = 0; p < valid; ++p) {
      uint8_t* out = o.row(p0 + p) + co0 * 4;
      for (int j = 0; j < cols; ++j) {
        uint32_t v = uint32_t(acc[p][j]) + off * colsum[size_t(co0 + j)];
        if (g.accumulate) v += uint32_t(ReadI32(out + 4 * j));
        std::memcpy(out + 4 * j, &v, 4);
      }
    }
  });
}

void ConvFloat(const ConvArgs& g, const Geometry& geo) {
  Packed<float> pk(g, geo, 1);
  const View &a = g.a, &w = g.w, &o = g.o;
  std::vector<float> row(size_t(std::max(a.c, w.c)));
  pk.a.resize(size_t(a.rows() * a.c));  // cin_pad == cg: rows keep their natural layout
  for (int64_t r = 0; r < a.rows(); ++r) LoadRowFloat(a, r, pk.a.data() + r * a.c);
  pk.w.assign(size_t(pk.groups * pk.blocks * pk.taps * pk.cin_pad * kNB), 0.0f);
  for (int64_t t = 0; t < pk.taps; ++t)
    for (int64_t ci = 0; ci < pk.cg; ++ci) {
      LoadRowFloat(w, t * pk.cg + ci, row.data());
      for (int64_t co = 0; co < o.c; ++co) pk.w[size_t(pk.WIndex(co, t, ci))] = row[co];
    }
  const auto micro = HasAvx2() ? MicroFloatAvx2 : MicroFloatGeneric;
  float acc[kP][kNB];
  ForEachBlock(pk, geo, [&](const float* const* rows, int64_t p0, int valid, int64_t co0, int cols, const float* panel) {
    // The sum starts from the accumulator (accumulate) or +0.0, then adds in (ky, kx, ci) order.
    for (int p = 0; p < kP; ++p)
      for (int j = 0; j < kNB; ++j)
        acc[p][j] = g.accumulate && p < valid && j < cols ? ReadF32(o.row(p0 + p) + (co0 + j) * 4) : 0.0f;
    micro(rows, pk.tap_off.data(), pk.taps, pk.cin_pad, panel, acc);
    for (int p = 0; p < valid; ++p) std::memcpy(o.row(p0 + p) + co0 * 4, acc[p], size_t(cols) * 4);
  });
}

// ---- depthwise: one output pixel's taps at a time, vectorised over channels -------------------------

__attribute__((target_clones("avx2", "default"))) void DwPixelInt(uint32_t* acc, const int32_t* a0,
                                                                  const int64_t* tap_off, const int32_t* w,
                                                                  int64_t taps, int64_t c) {
  for (int64_t t = 0; t < taps; ++t) {
    const int32_t* a = a0 + tap_off[t];
    const int32_t* wt = w + t * c;
    for (int64_t i = 0; i < c; ++i) acc[i] += uint32_t(a[i]) * uint32_t(wt[i]);
  }
}

__attribute__((target_clones("avx2", "default"))) void DwPixelFloat(float* acc, const float* a0, const int64_t* tap_off,
                                                                    const float* w, int64_t taps, int64_t c) {
  for (int64_t t = 0; t < taps; ++t) {
    const float* a = a0 + tap_off[t];
    const float* wt = w + t * c;
    for (int64_t i = 0; i < c; ++i) acc[i] = acc[i] + a[i] * wt[i];
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
    std::vector<float> a, w, acc(static_cast<size_t>(c));
    Expand(g, LoadRowFloat, &a, &w);
    for (int64_t p = 0; p < g.o.rows(); ++p) {
      uint8_t* out = g.o.row(p);
      if (g.accumulate) {
        std::memcpy(acc.data(), out, size_t(c) * 4);
      } else {
        std::fill(acc.begin(), acc.end(), 0.0f);
      }
      DwPixelFloat(acc.data(), a.data() + geo.pixel_row[size_t(p)] * c, tap_off.data(), w.data(), taps, c);
      std::memcpy(out, acc.data(), size_t(c) * 4);
    }
    return;
  }
  std::vector<int32_t> a, w;
  Expand(g, LoadRowInt, &a, &w);
  std::vector<uint32_t> colsum(size_t(c), 0), acc(static_cast<size_t>(c));
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t co = 0; co < c; ++co) colsum[size_t(co)] += uint32_t(w[size_t(t * c + co)]);
  const uint32_t off = uint32_t(g.a_offset);
  for (int64_t p = 0; p < g.o.rows(); ++p) {
    uint8_t* out = g.o.row(p);
    for (int64_t co = 0; co < c; ++co) acc[size_t(co)] = off * colsum[size_t(co)];
    DwPixelInt(acc.data(), a.data() + geo.pixel_row[size_t(p)] * c, tap_off.data(), w.data(), taps, c);
    if (g.accumulate)
      for (int64_t co = 0; co < c; ++co) acc[size_t(co)] += uint32_t(ReadI32(out + co * 4));
    std::memcpy(out, acc.data(), size_t(c) * 4);
  }
}

}  // namespace npu
