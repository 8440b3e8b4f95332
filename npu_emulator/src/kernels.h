// Internal to the emulator: bit-exact numerics (IEEE binary16, TFLite fixed point) and the functional
// kernels. Kernels trust their operands: emulator.cc validates every field, shape and address first.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "isa_gen.h"

namespace npu {

// ---- IEEE binary16 --------------------------------------------------------------------------------

inline float HalfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24, exactly representable as a normal float
    float f = float(mant) * 5.9604644775390625e-08f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Rounds a double to binary16, nearest-even, including subnormals, overflow to inf and NaN (quieted,
// top payload bits kept). A float argument promotes exactly, so this also is float -> half; taking
// the double directly lets vfunc round its double result once.
inline uint16_t DoubleToHalf(double d) {
  uint64_t b;
  std::memcpy(&b, &d, 8);
  uint16_t sign = uint16_t((b >> 48) & 0x8000);
  int exp = int((b >> 52) & 0x7ff);
  uint64_t mant = b & ((uint64_t(1) << 52) - 1);
  if (exp == 0x7ff) return mant ? uint16_t(sign | 0x7e00 | (mant >> 42)) : uint16_t(sign | 0x7c00);
  if (exp == 0) return sign;  // zero or a double subnormal: far below half's smallest subnormal
  int e = exp - 1023;
  if (e > 15) return uint16_t(sign | 0x7c00);
  uint64_t m = mant | (uint64_t(1) << 52);  // 53 significant bits
  // Half keeps 11 significant bits when normal (e >= -14); below that its unit is 2^-24.
  int shift = e >= -14 ? 42 : 28 - e;
  if (shift > 60) return sign;  // less than 2^-26: rounds to zero
  uint64_t q = m >> shift, rem = m & ((uint64_t(1) << shift) - 1), half = uint64_t(1) << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) ++q;
  // A carry out of the significand moves into the exponent field (up to inf), as it should.
  uint32_t bits = e >= -14 ? (uint32_t(e + 15) << 10) + uint32_t(q - 1024) : uint32_t(q);
  return uint16_t(sign | bits);
}

inline uint16_t FloatToHalf(float f) { return DoubleToHalf(double(f)); }

// ---- numeric events ---------------------------------------------------------------------------------

// What the float results of one instruction did (the machine resets and collects it per instruction):
// `stored` float values written, `overflow` values that became +-inf from a finite value (an fp16
// result beyond 65504, or an fp32 result beyond float's range; every inf stored into fp32 counts),
// `nan` NaNs written, `underflow` nonzero finite values that rounded to zero in fp16, `max_abs` the
// largest finite magnitude written. Counting changes no result.
struct FpEvents {
  int64_t stored = 0, overflow = 0, nan = 0, underflow = 0;
  float max_abs = 0.0f;  // the largest finite |value| written
  bool any() const { return overflow != 0 || nan != 0 || underflow != 0; }
};

inline FpEvents& ThreadFpEvents() {
  thread_local FpEvents events;
  return events;
}

// Rounds x to binary16 and counts what the rounding did.
inline uint16_t CountedHalf(double x, FpEvents& ev) {
  uint16_t h = DoubleToHalf(x);
  if (std::isfinite(x)) ev.max_abs = std::max(ev.max_abs, float(std::fabs(x)));
  if ((h & 0x7c00) == 0x7c00) {
    if (h & 0x3ff) {
      ++ev.nan;
    } else if (std::isfinite(x)) {
      ++ev.overflow;
    }
  } else if ((h & 0x7fff) == 0 && x != 0.0) {
    ++ev.underflow;
  }
  return h;
}

inline void CountFloat(float x, FpEvents& ev) {
  if (std::isfinite(x)) ev.max_abs = std::max(ev.max_abs, std::fabs(x));
  if (std::isnan(x)) {
    ++ev.nan;
  } else if (std::isinf(x)) {
    ++ev.overflow;
  }
}

// ---- TFLite / gemmlowp fixed point (reference, non-single-rounding variant) -------------------------

inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  int64_t ab = int64_t(a) * int64_t(b);
  int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return int32_t((ab + nudge) / (int64_t(1) << 31));  // C division truncates toward zero, as gemmlowp
}

inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {  // exponent in [0, 31]
  int32_t mask = int32_t((int64_t(1) << exponent) - 1);
  int32_t remainder = x & mask;
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^s for s in [0, 31], saturated to int32. TFLite's `x * (1 << s)` is undefined on overflow;
// saturating keeps an identity multiplier (2^30, shift 1) an identity at the int32 extremes.
// |x| < 2^32 here, so the 64-bit shift cannot overflow.
inline int32_t SaturatingShiftLeft(int64_t x, int s) {
  int64_t v = x * (int64_t(1) << s);
  return int32_t(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
}

// shift in [-31, 31] (checked by the validator, or at run time for per-channel tables).
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t mult, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(SaturatingShiftLeft(x, left), mult), right);
}

// Wrapping 32-bit arithmetic without signed-overflow UB.
inline int32_t WrapAdd(int32_t a, int32_t b) { return int32_t(uint32_t(a) + uint32_t(b)); }
inline int32_t WrapSub(int32_t a, int32_t b) { return int32_t(uint32_t(a) - uint32_t(b)); }
inline int32_t WrapMul(int32_t a, int32_t b) { return int32_t(uint32_t(a) * uint32_t(b)); }

// numpy.maximum / minimum semantics: NaN propagates, ties keep the first operand.
inline float MaxF(float a, float b) { return (a >= b || std::isnan(a)) ? a : b; }
inline float MinF(float a, float b) { return (a <= b || std::isnan(a)) ? a : b; }

// ---- SRAM tensors -----------------------------------------------------------------------------------

inline bool IsFloat(uint8_t dtype) {
  return dtype == uint8_t(isa::DType::FP16) || dtype == uint8_t(isa::DType::FP32);
}

// An SRAM tensor resolved to host memory. Dims are 64-bit so a GEMM can view n*h*w rows as one dim.
struct View {
  uint8_t* base = nullptr;
  uint8_t dtype = 0;
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t rs = 0;  // row stride in bytes
  int es = 0;      // element size in bytes

  int64_t rows() const { return n * h * w; }
  int64_t elements() const { return rows() * c; }
  uint8_t* row(int64_t r) const { return base + r * rs; }
  int64_t row_index(int64_t in, int64_t ih, int64_t iw) const { return (in * h + ih) * w + iw; }
};

// Element access widened to int32 (integer dtypes) or float (fp16/fp32, exact).
void LoadRowInt(const View& v, int64_t r, int32_t* out);
void LoadRowFloat(const View& v, int64_t r, float* out);
// Stores narrow integers by truncation (callers clamp first) and round floats to nearest-even.
void StoreRowInt(const View& v, int64_t r, const int32_t* in);
void StoreRowFloat(const View& v, int64_t r, const float* in);

// Vector instructions read all their inputs before writing: results go to a private image of the
// output tensor and are committed element by element (row padding untouched) at the end.
class OutImage {
 public:
  explicit OutImage(const View& o) : dst_(o), buf_(size_t(o.rows() * o.rs)) {
    view_ = o;
    view_.base = buf_.data();
  }
  const View& view() const { return view_; }
  void Commit() const {
    for (int64_t r = 0; r < dst_.rows(); ++r) std::memcpy(dst_.row(r), view_.row(r), size_t(dst_.c * dst_.es));
  }

 private:
  View dst_, view_;
  std::vector<uint8_t> buf_;
};

// Thrown by a kernel for a fault that only data can reveal (a per-channel shift out of range);
// the caller prefixes the instruction.
struct KernelFault {
  std::string reason;
};

// ---- kernels (kernels_mac.cc, kernels_vector.cc) ----------------------------------------------------

// A convolution (a GEMM is the 1x1 case over a [1, 1, rows, K] view). The output pixel
// (n, y, x) reads input rows (n, y*sh + ky*dh, x*sw + kx*dw).
struct ConvArgs {
  View a, w, o;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, groups = 1;
  int32_t a_offset = 0;
  bool accumulate = false;
};
void ConvKernel(const ConvArgs& args);
void DepthwiseKernel(const ConvArgs& args);  // groups unused; multiplier = o.c / a.c

void DmaLoadKernel(const isa::FmtDmaLoad& f, const View& dst, const uint8_t* region);
void DmaStoreKernel(const isa::FmtDmaStore& f, const View& src, uint8_t* region);

void BinaryKernel(isa::Opcode op, const isa::FmtBinary& f, const View& a, const View& b, const View& o);
void RequantKernel(const isa::FmtRequant& f, const View& a, const View& o, const uint8_t* acc_sram);
void ClampKernel(const isa::FmtClamp& f, const View& a, const View& o);
void LutKernel(const View& a, const View& o, const uint8_t* lut);
void FuncKernel(isa::Func func, const View& a, const View& o);
void PoolKernel(const isa::FmtPool& f, const View& a, const View& o);
void ReduceKernel(const isa::FmtReduce& f, const View& a, const View& o);
void CvtKernel(const View& a, const View& o);

}  // namespace npu
