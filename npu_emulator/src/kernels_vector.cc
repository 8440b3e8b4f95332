// DMA and vector-unit kernels (docs/ISA.md, "Instructions"). Integer elements are widened to
// int32 and floats to fp32 (exact), computed, then narrowed: integers by truncation after the
// clamp the instruction defines, floats rounded to nearest-even.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace npu {

using isa::DType;
using isa::Opcode;

void LoadRowInt(const View& v, int64_t r, int32_t* out) {
  const uint8_t* p = v.row(r);
  switch (DType(v.dtype)) {
    case DType::INT8:
      for (int64_t i = 0; i < v.c; ++i) out[i] = int8_t(p[i]);
      break;
    case DType::INT16:
      for (int64_t i = 0; i < v.c; ++i) {
        int16_t x;
        std::memcpy(&x, p + 2 * i, 2);
        out[i] = x;
      }
      break;
    default:
      std::memcpy(out, p, size_t(v.c) * 4);
      break;
  }
}

// Every binary16 value as a float: bulk conversion is a table lookup instead of a branchy decode.
static const float* HalfTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = HalfToFloat(uint16_t(h));
    return t;
  }();
  return table.data();
}

void LoadRowFloat(const View& v, int64_t r, float* out) {
  const uint8_t* p = v.row(r);
  if (v.dtype == uint8_t(DType::FP16)) {
    const float* table = HalfTable();
    for (int64_t i = 0; i < v.c; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = table[h];
    }
  } else {
    std::memcpy(out, p, size_t(v.c) * 4);
  }
}

void StoreRowInt(const View& v, int64_t r, const int32_t* in) {
  uint8_t* p = v.row(r);
  switch (DType(v.dtype)) {
    case DType::INT8:
      for (int64_t i = 0; i < v.c; ++i) p[i] = uint8_t(in[i]);
      break;
    case DType::INT16:
      for (int64_t i = 0; i < v.c; ++i) {
        int16_t x = int16_t(in[i]);
        std::memcpy(p + 2 * i, &x, 2);
      }
      break;
    default:
      std::memcpy(p, in, size_t(v.c) * 4);
      break;
  }
}

void StoreRowFloat(const View& v, int64_t r, const float* in) {
  uint8_t* p = v.row(r);
  FpEvents& ev = ThreadFpEvents();
  ev.stored += v.c;
  if (v.dtype == uint8_t(DType::FP16)) {
    for (int64_t i = 0; i < v.c; ++i) {
      uint16_t h = CountedHalf(double(in[i]), ev);
      std::memcpy(p + 2 * i, &h, 2);
    }
  } else {
    for (int64_t i = 0; i < v.c; ++i) CountFloat(in[i], ev);
    std::memcpy(p, in, size_t(v.c) * 4);
  }
}

// ---- DMA --------------------------------------------------------------------------------------------

namespace {

// Copies w x c elements of ES bytes (a constant, so each copy is one move); the element (x, i) is at
// x * d_w + i * d_c in d and x * s_w + i * s_c in s. Order (x, i): the last write wins on collisions.
template <int ES>
void CopyElements(uint8_t* d, int64_t d_w, int64_t d_c, const uint8_t* s, int64_t s_w, int64_t s_c, int64_t w,
                  int64_t c) {
  for (int64_t x = 0; x < w; ++x) {
    uint8_t* dr = d + x * d_w;
    const uint8_t* sr = s + x * s_w;
    for (int64_t i = 0; i < c; ++i) std::memcpy(dr + i * d_c, sr + i * s_c, ES);
  }
}

// One (n, h) slice of a DMA: w rows of c elements between SRAM rows and strided DRAM, in element
// order (x, i). One memcpy for the whole slice when it is contiguous on both sides, else one per row
// when rows are (and not tiny), else element by element.
void CopySlice(uint8_t* d, int64_t d_w, int64_t d_c, const uint8_t* s, int64_t s_w, int64_t s_c, int64_t w,
               int64_t c, int es) {
  const int64_t row = c * es;
  const bool rows_contiguous = d_c == es && s_c == es;
  if (rows_contiguous && d_w == row && s_w == row) {
    std::memcpy(d, s, size_t(w * row));
    return;
  }
  if (rows_contiguous && row >= 16) {  // shorter rows: the element loop beats a memcpy call
    for (int64_t x = 0; x < w; ++x) std::memcpy(d + x * d_w, s + x * s_w, size_t(row));
    return;
  }
  const auto copy = es == 1 ? CopyElements<1> : es == 2 ? CopyElements<2> : CopyElements<4>;
  copy(d, d_w, d_c, s, s_w, s_c, w, c);
}

// Fills `rows` SRAM rows (row stride rs, row_bytes used each) with the es-byte `value`, touching no
// row padding: the first run is filled by doubling, and when rows are padded it is copied to the rest.
void FillRows(uint8_t* d, int64_t rows, int64_t rs, int64_t row_bytes, const uint8_t* value, int es) {
  if (rows <= 0) return;
  const int64_t run = rs == row_bytes ? rows * row_bytes : row_bytes;
  std::memcpy(d, value, size_t(es));
  for (int64_t k = es; k < run; k *= 2) std::memcpy(d + k, d, size_t(std::min(k, run - k)));
  if (rs != row_bytes)
    for (int64_t r = 1; r < rows; ++r) std::memcpy(d + r * rs, d, size_t(row_bytes));
}

}  // namespace

void DmaLoadKernel(const isa::FmtDmaLoad& f, const View& dst, const uint8_t* region) {
  const int64_t es = dst.es, rs = dst.rs, row_bytes = dst.c * es;
  const int64_t top = f.pad_top, left = f.pad_left, right = f.pad_right;
  const int64_t inner_h = dst.h - top - f.pad_bottom, inner_w = dst.w - left - right;
  uint8_t value[4];  // pad_value's low bytes, little-endian
  for (int i = 0; i < 4; ++i) value[i] = uint8_t(uint32_t(f.pad_value) >> (8 * i));
  const isa::Dram& s = f.src;
  for (int64_t n = 0; n < dst.n; ++n)
    for (int64_t y = 0; y < dst.h; ++y) {
      uint8_t* d = dst.row(dst.row_index(n, y, 0));
      if (y < top || y >= top + inner_h) {
        FillRows(d, dst.w, rs, row_bytes, value, int(es));
        continue;
      }
      FillRows(d, left, rs, row_bytes, value, int(es));
      FillRows(d + (left + inner_w) * rs, right, rs, row_bytes, value, int(es));
      if (inner_w == 0) continue;  // nothing read: the source address may be anywhere
      const uint8_t* src = region + (int64_t(s.addr) + n * s.sn + (y - top) * s.sh);
      CopySlice(d + left * rs, rs, es, src, s.sw, s.sc, inner_w, dst.c, int(es));
    }
}

void DmaStoreKernel(const isa::FmtDmaStore& f, const View& src, uint8_t* region) {
  const isa::Dram& d = f.dst;
  // Element order (n, h, w, c): where strides make elements collide, the last one written stays.
  for (int64_t n = 0; n < src.n; ++n)
    for (int64_t y = 0; y < src.h; ++y)
      CopySlice(region + (int64_t(d.addr) + n * d.sn + y * d.sh), d.sw, d.sc, src.row(src.row_index(n, y, 0)),
                src.rs, src.es, src.w, src.c, src.es);
}

// ---- elementwise ------------------------------------------------------------------------------------

namespace {

int32_t Clamp(int32_t x, int32_t lo, int32_t hi) { return std::min(hi, std::max(lo, x)); }

// clamp(MBQM(...) + zero point): the sum is exact (64-bit) so that the clamp, not a 32-bit wrap,
// decides results beyond int32; TFLite's int32 add would be undefined there.
int32_t AddZeroPointClamp(int32_t v, int32_t zero_point, int32_t lo, int32_t hi) {
  return int32_t(std::min<int64_t>(hi, std::max<int64_t>(lo, int64_t(v) + zero_point)));
}

// y = clamp(MBQM(x, mult, shift) + zero_point) over a row: the same bits as MultiplyByQuantizedMultiplier
// (kernels.h) then AddZeroPointClamp, written branch-free so that the compiler vectorises it.
__attribute__((target_clones("avx2", "default"))) void RequantRow(const int32_t* x, const int32_t* mult,
                                                                  const int32_t* shift, int64_t c, int32_t zero_point,
                                                                  int32_t lo, int32_t hi, int32_t* y) {
  for (int64_t i = 0; i < c; ++i) {
    const int32_t m = mult[i], left = shift[i] > 0 ? shift[i] : 0, right = shift[i] > 0 ? 0 : -shift[i];
    const int64_t wide = int64_t(uint64_t(int64_t(x[i])) << left);  // x * 2^left, saturated below
    const int32_t v = int32_t(wide < INT32_MIN ? INT32_MIN : wide > INT32_MAX ? INT32_MAX : wide);
    // SaturatingRoundingDoublingHighMul: the division by 2^31 truncates toward zero.
    const int64_t ab = int64_t(v) * m, t = ab + (ab >= 0 ? (1 << 30) : 1 - (1 << 30));
    int32_t high = int32_t((t + (t < 0 ? (int64_t(1) << 31) - 1 : 0)) >> 31);
    high = v == INT32_MIN && m == INT32_MIN ? INT32_MAX : high;
    // RoundingDivideByPOT
    const int32_t mask = int32_t((uint32_t(1) << right) - 1);
    const int32_t q = (high >> right) + ((high & mask) > (mask >> 1) + (high < 0 ? 1 : 0) ? 1 : 0);
    const int64_t z = int64_t(q) + zero_point;
    y[i] = int32_t(z < lo ? lo : z > hi ? hi : z);
  }
}

// Calls fn(input row, output row) for every row of o; a row of `in` broadcasts along dims of size 1.
template <class Fn>
void ForEachRow(const View& o, const View& in, Fn fn) {
  for (int64_t n = 0; n < o.n; ++n)
    for (int64_t h = 0; h < o.h; ++h)
      for (int64_t w = 0; w < o.w; ++w)
        fn(in.row_index(in.n == 1 ? 0 : n, in.h == 1 ? 0 : h, in.w == 1 ? 0 : w), o.row_index(n, h, w));
}

// TFLite reference quantised add/sub/mul for int8/int16 (all intermediate arithmetic in int32).
int32_t QuantBinary(Opcode op, const isa::FmtBinary& f, int32_t x, int32_t y) {
  int32_t raw;
  if (op == Opcode::VMUL) {
    int32_t prod = WrapMul(WrapAdd(x, f.a_offset), WrapAdd(y, f.b_offset));
    raw = MultiplyByQuantizedMultiplier(prod, f.o_mult, f.o_shift);
  } else {
    int32_t xs = SaturatingShiftLeft(int64_t(x) + f.a_offset, f.left_shift);
    int32_t ys = SaturatingShiftLeft(int64_t(y) + f.b_offset, f.left_shift);
    int32_t xq = MultiplyByQuantizedMultiplier(xs, f.a_mult, f.a_shift);
    int32_t yq = MultiplyByQuantizedMultiplier(ys, f.b_mult, f.b_shift);
    raw = MultiplyByQuantizedMultiplier(op == Opcode::VADD ? WrapAdd(xq, yq) : WrapSub(xq, yq), f.o_mult, f.o_shift);
  }
  return AddZeroPointClamp(raw, f.o_offset, f.act_min, f.act_max);
}

int32_t IntBinary(Opcode op, const isa::FmtBinary& f, uint8_t dtype, int32_t x, int32_t y) {
  switch (op) {
    case Opcode::VMAX: return Clamp(std::max(x, y), f.act_min, f.act_max);
    case Opcode::VMIN: return Clamp(std::min(x, y), f.act_min, f.act_max);
    default: break;
  }
  if (dtype != uint8_t(DType::INT32)) return QuantBinary(op, f, x, y);
  return op == Opcode::VADD ? WrapAdd(x, y) : op == Opcode::VSUB ? WrapSub(x, y) : WrapMul(x, y);
}

float FloatBinary(Opcode op, float x, float y) {
  switch (op) {
    case Opcode::VADD: return x + y;
    case Opcode::VSUB: return x - y;
    case Opcode::VMUL: return x * y;
    case Opcode::VMAX: return MaxF(x, y);
    default: return MinF(x, y);
  }
}

}  // namespace

void BinaryKernel(Opcode op, const isa::FmtBinary& f, const View& a, const View& b, const View& o) {
  OutImage out(o);
  const View& ov = out.view();
  // Row index pairs of a and b for each output row.
  std::vector<int64_t> ra, rb;
  ForEachRow(o, a, [&](int64_t ri, int64_t) { ra.push_back(ri); });
  ForEachRow(o, b, [&](int64_t ri, int64_t) { rb.push_back(ri); });
  const int64_t sa = a.c == 1 ? 0 : 1, sb = b.c == 1 ? 0 : 1;
  if (IsFloat(o.dtype)) {
    std::vector<float> x(size_t(a.c)), y(size_t(b.c)), z(size_t(o.c));
    for (int64_t r = 0; r < o.rows(); ++r) {
      LoadRowFloat(a, ra[size_t(r)], x.data());
      LoadRowFloat(b, rb[size_t(r)], y.data());
      for (int64_t c = 0; c < o.c; ++c) z[size_t(c)] = FloatBinary(op, x[size_t(c * sa)], y[size_t(c * sb)]);
      StoreRowFloat(ov, r, z.data());
    }
  } else {
    std::vector<int32_t> x(size_t(a.c)), y(size_t(b.c)), z(size_t(o.c));
    for (int64_t r = 0; r < o.rows(); ++r) {
      LoadRowInt(a, ra[size_t(r)], x.data());
      LoadRowInt(b, rb[size_t(r)], y.data());
      for (int64_t c = 0; c < o.c; ++c) z[size_t(c)] = IntBinary(op, f, o.dtype, x[size_t(c * sa)], y[size_t(c * sb)]);
      StoreRowInt(ov, r, z.data());
    }
  }
  out.Commit();
}

void RequantKernel(const isa::FmtRequant& f, const View& a, const View& o, const uint8_t* acc_sram) {
  OutImage out(o);
  if (IsFloat(a.dtype)) {  // fp32 -> fp16: one rounding
    std::vector<float> x(size_t(a.c));
    for (int64_t r = 0; r < a.rows(); ++r) LoadRowFloat(a, r, x.data()), StoreRowFloat(out.view(), r, x.data());
    out.Commit();
    return;
  }
  std::vector<int32_t> mult(size_t(o.c), f.mult), shift(size_t(o.c), f.shift);
  if (f.per_channel) {
    for (int64_t c = 0; c < o.c; ++c) {
      std::memcpy(&mult[size_t(c)], acc_sram + f.params_addr + 8 * c, 4);
      std::memcpy(&shift[size_t(c)], acc_sram + f.params_addr + 8 * c + 4, 4);
      if (shift[size_t(c)] < -31 || shift[size_t(c)] > 31)
        throw KernelFault{"per-channel shift " + std::to_string(shift[size_t(c)]) + " of channel " +
                          std::to_string(c) + " outside [-31, 31]"};
    }
  }
  std::vector<int32_t> x(size_t(a.c)), y(size_t(a.c));
  for (int64_t r = 0; r < a.rows(); ++r) {
    LoadRowInt(a, r, x.data());
    RequantRow(x.data(), mult.data(), shift.data(), a.c, f.o_offset, f.act_min, f.act_max, y.data());
    StoreRowInt(out.view(), r, y.data());
  }
  out.Commit();
}

void ClampKernel(const isa::FmtClamp& f, const View& a, const View& o) {
  OutImage out(o);
  if (IsFloat(a.dtype)) {
    std::vector<float> x(size_t(a.c));
    for (int64_t r = 0; r < a.rows(); ++r) {
      LoadRowFloat(a, r, x.data());
      for (float& v : x) v = v < f.min_f ? f.min_f : v > f.max_f ? f.max_f : v;  // NaN compares false: stays
      StoreRowFloat(out.view(), r, x.data());
    }
  } else {
    std::vector<int32_t> x(size_t(a.c));
    for (int64_t r = 0; r < a.rows(); ++r) {
      LoadRowInt(a, r, x.data());
      for (int32_t& v : x) v = Clamp(v, f.min_i, f.max_i);
      StoreRowInt(out.view(), r, x.data());
    }
  }
  out.Commit();
}

void LutKernel(const View& a, const View& o, const uint8_t* lut) {
  uint8_t table[256];
  std::memcpy(table, lut, 256);  // read before any output is written
  OutImage out(o);
  for (int64_t r = 0; r < a.rows(); ++r) {
    const uint8_t* x = a.row(r);
    uint8_t* y = out.view().row(r);
    for (int64_t c = 0; c < a.c; ++c) y[c] = table[uint8_t(int8_t(x[c]) + 128)];
  }
  out.Commit();
}

namespace {
double Apply(isa::Func func, double x) {
  switch (func) {
    case isa::Func::EXP: return std::exp(x);
    case isa::Func::TANH: return std::tanh(x);
    case isa::Func::SIGMOID: return 1.0 / (1.0 + std::exp(-x));
    case isa::Func::GELU: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case isa::Func::RSQRT: return 1.0 / std::sqrt(x);
    case isa::Func::RECIPROCAL: return 1.0 / x;
    case isa::Func::GELU_TANH:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  return x;
}
}  // namespace

void FuncKernel(isa::Func func, const View& a, const View& o) {
  OutImage out(o);
  std::vector<float> x(size_t(a.c));
  FpEvents& ev = ThreadFpEvents();
  for (int64_t r = 0; r < a.rows(); ++r) {
    LoadRowFloat(a, r, x.data());
    uint8_t* y = out.view().row(r);
    ev.stored += a.c;
    for (int64_t c = 0; c < a.c; ++c) {
      double v = Apply(func, double(x[size_t(c)]));  // double, then one rounding to the output type
      if (o.dtype == uint8_t(DType::FP16)) {
        uint16_t h = CountedHalf(v, ev);
        std::memcpy(y + 2 * c, &h, 2);
      } else {
        float s = float(v);
        CountFloat(s, ev);
        std::memcpy(y + 4 * c, &s, 4);
      }
    }
  }
  out.Commit();
}

// ---- pooling and reductions -------------------------------------------------------------------------

void PoolKernel(const isa::FmtPool& f, const View& a, const View& o) {
  OutImage out(o);
  const bool max = f.mode == uint8_t(isa::PoolMode::MAX), fp = IsFloat(a.dtype);
  const size_t c = size_t(a.c);
  std::vector<int32_t> xi(c), si(c);
  std::vector<float> xf(c), sf(c);
  for (int64_t n = 0; n < o.n; ++n)
    for (int64_t oy = 0; oy < o.h; ++oy)
      for (int64_t ox = 0; ox < o.w; ++ox) {
        // The window clipped to the input: padding never counts (validated non-empty).
        int64_t y0 = oy * f.stride_h - f.pad_top, x0 = ox * f.stride_w - f.pad_left;
        int64_t y1 = std::min<int64_t>(a.h, y0 + f.kh), x1 = std::min<int64_t>(a.w, x0 + f.kw);
        y0 = std::max<int64_t>(y0, 0), x0 = std::max<int64_t>(x0, 0);
        const int32_t count = int32_t((y1 - y0) * (x1 - x0));
        bool first = true;
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x, first = false) {  // row-major window order
            int64_t r = a.row_index(n, y, x);
            if (fp) {
              LoadRowFloat(a, r, xf.data());
              for (size_t i = 0; i < c; ++i)
                sf[i] = max ? (first ? xf[i] : MaxF(sf[i], xf[i])) : (first ? 0.0f : sf[i]) + xf[i];
            } else {
              LoadRowInt(a, r, xi.data());
              for (size_t i = 0; i < c; ++i)
                si[i] = max ? (first ? xi[i] : std::max(si[i], xi[i])) : (first ? 0 : si[i]) + xi[i];
            }
          }
        int64_t ro = o.row_index(n, oy, ox);
        if (fp) {
          if (!max)
            for (float& v : sf) v = v / float(count);
          StoreRowFloat(out.view(), ro, sf.data());
        } else {
          for (int32_t& v : si) {
            if (!max) v = v >= 0 ? (v + count / 2) / count : (v - count / 2) / count;  // TFLite rounding
            v = Clamp(v, f.act_min, f.act_max);
          }
          StoreRowInt(out.view(), ro, si.data());
        }
      }
  out.Commit();
}

void ReduceKernel(const isa::FmtReduce& f, const View& a, const View& o) {
  OutImage out(o);
  const bool max = f.mode == uint8_t(isa::ReduceMode::MAX), fp = IsFloat(a.dtype);
  const int64_t dims[4] = {a.n, a.h, a.w, a.c};
  const int64_t len = dims[f.axis];
  // Element (row r, channel c) of a, widened.
  std::vector<int32_t> xi(size_t(a.c)), si(size_t(o.c));
  std::vector<float> xf(size_t(a.c)), sf(size_t(o.c));
  auto fold = [&](size_t i, bool first, int32_t vi, float vf) {
    if (fp) {
      sf[i] = max ? (first ? vf : MaxF(sf[i], vf)) : (first ? 0.0f : sf[i]) + vf;
    } else {
      si[i] = max ? (first ? vi : std::max(si[i], vi)) : WrapAdd(first ? 0 : si[i], vi);
    }
  };
  for (int64_t n = 0; n < o.n; ++n)
    for (int64_t h = 0; h < o.h; ++h)
      for (int64_t w = 0; w < o.w; ++w) {
        for (int64_t k = 0; k < (f.axis == 3 ? 1 : len); ++k) {  // index order along the axis
          int64_t r = a.row_index(f.axis == 0 ? k : n, f.axis == 1 ? k : h, f.axis == 2 ? k : w);
          fp ? LoadRowFloat(a, r, xf.data()) : LoadRowInt(a, r, xi.data());
          for (int64_t c = 0; c < a.c; ++c) {
            size_t i = f.axis == 3 ? 0 : size_t(c);
            bool first = f.axis == 3 ? c == 0 : k == 0;
            fold(i, first, fp ? 0 : xi[size_t(c)], fp ? xf[size_t(c)] : 0.0f);
          }
        }
        int64_t ro = o.row_index(n, h, w);
        fp ? StoreRowFloat(out.view(), ro, sf.data()) : StoreRowInt(out.view(), ro, si.data());
      }
  out.Commit();
}

void CvtKernel(const View& a, const View& o) {
  OutImage out(o);
  std::vector<float> xf(IsFloat(a.dtype) ? size_t(a.c) : 0);
  std::vector<int32_t> xi(IsFloat(a.dtype) ? 0 : size_t(a.c));
  for (int64_t r = 0; r < a.rows(); ++r) {
    if (a.dtype == o.dtype) {  // plain copy: keeps every bit, NaN payloads included
      std::memcpy(out.view().row(r), a.row(r), size_t(a.c * a.es));
    } else if (IsFloat(a.dtype)) {
      LoadRowFloat(a, r, xf.data());
      StoreRowFloat(out.view(), r, xf.data());
    } else {
      LoadRowInt(a, r, xi.data());
      StoreRowInt(out.view(), r, xi.data());
    }
  }
  out.Commit();
}

}  // namespace npu
