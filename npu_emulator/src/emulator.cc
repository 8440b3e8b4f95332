// Decoding, validation, the cycle model and execution order of the NPU emulator (docs/ISA.md).
// The functional kernels live in kernels_*.cc.
#include "emulator.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <memory>
#include <sstream>

#include "kernels.h"

namespace npu {
namespace {

using isa::DType;
using isa::Opcode;
using isa::Queue;
using isa::Space;
using isa::Unit;

constexpr int kLoad = int(Queue::LOAD), kCompute = int(Queue::COMPUTE), kStore = int(Queue::STORE);
const char* const kQueueName[] = {"LOAD", "COMPUTE", "STORE"};
const char* const kSpaceName[] = {"act", "wgt", "acc"};
const char* const kRegionName[] = {"CONST", "IO", "SCRATCH"};
// Costs above this are refused so that sums over a program cannot overflow int64.
constexpr int64_t kMaxCycles = int64_t(1) << 56;

template <class... T>
std::string Str(const T&... v) {
  std::ostringstream os;
  (os << ... << v);
  return os.str();
}

constexpr unsigned Bit(DType d) { return 1u << unsigned(d); }
constexpr unsigned Bit(Space s) { return 1u << unsigned(s); }
constexpr unsigned kInts = Bit(DType::INT8) | Bit(DType::INT16) | Bit(DType::INT32);
constexpr unsigned kFloats = Bit(DType::FP16) | Bit(DType::FP32);
constexpr unsigned kAllDTypes = kInts | kFloats;
constexpr unsigned kMacActs = Bit(DType::INT8) | Bit(DType::INT16) | Bit(DType::FP16);
constexpr unsigned kVecSpaces = Bit(Space::ACT) | Bit(Space::ACC);

bool Is(uint8_t dtype, DType d) { return dtype == uint8_t(d); }
int64_t RowStride(const isa::Tensor& t) { return (int64_t(t.c) * isa::kDTypeSize[t.dtype] + 15) / 16 * 16; }
int64_t Rows(const isa::Tensor& t) { return int64_t(t.n) * t.h * t.w; }
int64_t Elements(const isa::Tensor& t) { return Rows(t) * t.c; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
bool SameDims(const isa::Tensor& a, const isa::Tensor& b) {
  return a.n == b.n && a.h == b.h && a.w == b.w && a.c == b.c;
}

std::string Desc(const isa::Tensor& t) {
  std::ostringstream os;
  os << kSpaceName[t.space] << ':' << isa::kDTypeName[t.dtype] << "@0x" << std::hex << t.addr << std::dec << '['
     << t.n << ',' << t.h << ',' << t.w << ',' << t.c << ']';
  return os.str();
}

std::string DTypeList(unsigned mask) {
  std::string s;
  for (int d = 0; d < isa::kNumDType; ++d)
    if (mask >> d & 1) s += std::string(s.empty() ? "" : "/") + isa::kDTypeName[d];
  return s;
}

// Directed token edges: 0 LOAD->COMPUTE, 1 COMPUTE->LOAD, 2 COMPUTE->STORE, 3 STORE->COMPUTE.
int Edge(int from, int to) { return from == kLoad ? 0 : from == kStore ? 3 : to == kLoad ? 1 : 2; }

// A decoded, validated instruction with what the scheduler and the counters need.
struct Op {
  isa::Instr in{};
  const char* mnemonic = "";
  int queue = kCompute;
  int unit = int(Unit::CONTROL);
  bool fence = false;  // barrier / end: waits for every earlier instruction of every queue
  int64_t cycles = 0;
  int64_t macs = 0;
  int dma_region = -1;  // DMA: DRAM region and bytes moved
  int64_t dma_bytes = 0;
  int out_space = -1;  // SRAM written and its highest written byte + 1
  int64_t out_end = 0;
};

// Checks one instruction at a time; every refusal names it.
class Validator {
 public:
  Validator(const isa::Config& cfg, const DramRegions& dram) : cfg_(cfg) {
    sram_[0] = cfg.act_sram_bytes, sram_[1] = cfg.wgt_sram_bytes, sram_[2] = cfg.acc_sram_bytes;
    region_[0] = int64_t(dram.const_size), region_[1] = int64_t(dram.io_size), region_[2] = int64_t(dram.scratch_size);
  }

  Op Check(const isa::Instr& in, const isa::OpcodeInfo& info) {
    op_ = Op();
    op_.in = in;
    op_.mnemonic = info.mnemonic;
    op_.queue = int(info.queue);
    op_.unit = int(info.unit);
    op_.fence = in.opcode == Opcode::BARRIER || in.opcode == Opcode::END;
    if (in.opcode == Opcode::SYNC) {
      if (in.sync.queue >= isa::kNumQueue) Reject(Str("unknown queue ", int(in.sync.queue)));
      op_.queue = in.sync.queue;
    }
    CheckDeps(in.deps);
    switch (in.opcode) {
      case Opcode::DMALOAD: DmaLoad(in.dma_load); break;
      case Opcode::DMASTORE: DmaStore(in.dma_store); break;
      case Opcode::GEMM: Gemm(in.gemm); break;
      case Opcode::CONV2D: Conv(in.conv); break;
      case Opcode::DWCONV2D: Dwconv(in.dwconv); break;
      case Opcode::VADD: case Opcode::VSUB: case Opcode::VMUL: case Opcode::VMAX: case Opcode::VMIN:
        Binary(in.opcode, in.binary);
        break;
      case Opcode::VREQUANT: Requant(in.requant); break;
      case Opcode::VCLAMP: Clamp(in.clamp); break;
      case Opcode::VLUT: Lut(in.lut); break;
      case Opcode::VFUNC: Func(in.func); break;
      case Opcode::VPOOL: Pool(in.pool); break;
      case Opcode::VREDUCE: Reduce(in.reduce); break;
      case Opcode::VCVT: Cvt(in.cvt); break;
      case Opcode::SYNC: case Opcode::BARRIER: case Opcode::END:
        op_.cycles = cfg_.control_cycles;
        break;
    }
    return op_;
  }

 private:
  [[noreturn]] void Reject(const std::string& why) const {
    throw Error(Str("instruction ", op_.in.index, " (", op_.mnemonic, "): ", why));
  }

  void CheckDeps(uint8_t deps) const {
    if (deps & 0xf0) Reject(Str("unknown dependency flag bits 0x", std::hex, std::setw(2), std::setfill('0'), int(deps)));
    if (deps && op_.fence) Reject("barrier and end take no dependency flags (they wait for every queue)");
    bool prev = deps & (isa::DEP_POP_PREV | isa::DEP_PUSH_PREV), next = deps & (isa::DEP_POP_NEXT | isa::DEP_PUSH_NEXT);
    if (prev && op_.queue == kLoad) Reject("pop_prev/push_prev on the LOAD queue, which has no previous queue");
    if (next && op_.queue == kStore) Reject("pop_next/push_next on the STORE queue, which has no next queue");
  }

  void Flag(const char* name, uint8_t v) const {
    if (v > 1) Reject(Str(name, " must be 0 or 1, got ", int(v)));
  }
  void Nonzero(const char* name, int64_t v) const {
    if (v == 0) Reject(Str(name, " must be at least 1"));
  }
  void Shift(const char* name, int v) const {
    if (v < -31 || v > 31) Reject(Str(name, " ", v, " outside [-31, 31]"));
  }
  // Integer clamp bounds must be ordered and representable in the output dtype.
  void Range(const char* lo_name, int32_t lo, const char* hi_name, int32_t hi, uint8_t dtype) const {
    int64_t dmin = Is(dtype, DType::INT8) ? -128 : Is(dtype, DType::INT16) ? -32768 : INT32_MIN;
    int64_t dmax = Is(dtype, DType::INT8) ? 127 : Is(dtype, DType::INT16) ? 32767 : INT32_MAX;
    if (lo > hi) Reject(Str(lo_name, " ", lo, " > ", hi_name, " ", hi));
    if (lo < dmin || hi > dmax)
      Reject(Str("[", lo_name, ", ", hi_name, "] = [", lo, ", ", hi, "] outside the ", isa::kDTypeName[dtype], " range"));
  }
  int64_t Cost(__int128 cycles) const {
    if (cycles > kMaxCycles) Reject(Str("cost of ", int64_t(cycles >> 32), "*2^32 cycles is too large"));
    return int64_t(cycles);
  }
  int64_t VectorCost(int64_t elements) const {
    return Cost(__int128(CeilDiv(elements, cfg_.vector_lanes)) + cfg_.vector_issue_cycles);
  }
  int64_t DmaCost(int64_t bytes) const {
    return Cost(__int128(cfg_.dma_setup_cycles) + CeilDiv(bytes, cfg_.dma_bytes_per_cycle));
  }

  // Space, dtype, dims, alignment and bounds of an SRAM operand.
  void Tensor(const char* name, const isa::Tensor& t, unsigned spaces, unsigned dtypes) const {
    if (t.space >= isa::kNumSpace) Reject(Str("operand ", name, ": unknown space ", int(t.space)));
    if (t.dtype >= isa::kNumDType) Reject(Str("operand ", name, ": unknown dtype ", int(t.dtype)));
    if (!(spaces >> t.space & 1)) {
      std::string allowed;
      for (int s = 0; s < isa::kNumSpace; ++s)
        if (spaces >> s & 1) allowed += std::string(allowed.empty() ? "" : " or ") + kSpaceName[s];
      Reject(Str("operand ", name, ": ", Desc(t), " must be in ", allowed));
    }
    if (!(dtypes >> t.dtype & 1))
      Reject(Str("operand ", name, ": dtype ", isa::kDTypeName[t.dtype], " not accepted (", DTypeList(dtypes), ")"));
    if (!t.n || !t.h || !t.w || !t.c) Reject(Str("operand ", name, ": zero dimension in ", Desc(t)));
    if (t.addr % isa::kSramAlign) Reject(Str("operand ", name, ": ", Desc(t), " is not 16-byte aligned"));
    __int128 end = __int128(t.addr) + __int128(Rows(t)) * RowStride(t);
    if (end > sram_[t.space])
      Reject(Str("operand ", name, ": ", Desc(t), " extends beyond the ", kSpaceName[t.space], " SRAM (",
                 sram_[t.space], " bytes)"));
  }

  void Writes(const isa::Tensor& t) {
    op_.out_space = t.space;
    op_.out_end = int64_t(t.addr) + (Rows(t) - 1) * RowStride(t) + int64_t(t.c) * isa::kDTypeSize[t.dtype];
  }

  // Every byte a strided DRAM access touches must lie inside its region (strides may be negative).
  void Dram(const char* name, const isa::Dram& d, const int64_t extent[4], int esize) {
    if (d.region >= isa::kNumRegion) Reject(Str("operand ", name, ": unknown region ", int(d.region)));
    const int64_t stride[4] = {d.sn, d.sh, d.sw, d.sc};
    int64_t lo = d.addr, hi = int64_t(d.addr) + esize - 1, count = 1;
    for (int i = 0; i < 4; ++i) {
      int64_t span = (extent[i] - 1) * stride[i];  // |span| < 2^16 * 2^31
      (span < 0 ? lo : hi) += span;
      count *= extent[i];
    }
    if (count > 0 && (lo < 0 || hi >= region_[d.region]))
      Reject(Str("operand ", name, ": touches bytes [", lo, ", ", hi, "] outside the ", kRegionName[d.region], " region (",
                 region_[d.region], " bytes)"));
    op_.dma_region = d.region;
    op_.dma_bytes = count * esize;
    op_.cycles = DmaCost(op_.dma_bytes);
  }

  void DmaLoad(const isa::FmtDmaLoad& f) {
    const isa::Tensor& t = f.dst;
    Tensor("dst", t, Bit(Space::ACT) | Bit(Space::WGT) | Bit(Space::ACC), kAllDTypes);
    if (f.pad_top + f.pad_bottom > t.h) Reject(Str("pad_top + pad_bottom exceeds dst h ", t.h));
    if (f.pad_left + f.pad_right > t.w) Reject(Str("pad_left + pad_right exceeds dst w ", t.w));
    const int64_t extent[4] = {t.n, t.h - f.pad_top - f.pad_bottom, t.w - f.pad_left - f.pad_right, t.c};
    Dram("src", f.src, extent, isa::kDTypeSize[t.dtype]);
    Writes(t);
  }

  void DmaStore(const isa::FmtDmaStore& f) {
    const isa::Tensor& t = f.src;
    Tensor("src", t, Bit(Space::ACT), kAllDTypes);
    const int64_t extent[4] = {t.n, t.h, t.w, t.c};
    Dram("dst", f.dst, extent, isa::kDTypeSize[t.dtype]);
  }

  // MAC operands: activations in ACT, weights in WGT, accumulators in ACC, with matching dtypes.
  bool MacOperands(const isa::Tensor& a, const isa::Tensor& w, const isa::Tensor& o, int32_t a_offset,
                   uint8_t accumulate) {
    Tensor("a", a, Bit(Space::ACT), kMacActs);
    bool fp = Is(a.dtype, DType::FP16);
    Tensor("w", w, Bit(Space::WGT), fp ? Bit(DType::FP16) : Bit(DType::INT8));
    Tensor("o", o, Bit(Space::ACC), fp ? Bit(DType::FP32) : Bit(DType::INT32));
    if (fp && a_offset != 0) Reject(Str("a_offset must be 0 for fp16, got ", a_offset));
    Flag("accumulate", accumulate);
    Writes(o);
    return fp || Is(a.dtype, DType::INT16);  // half rate
  }

  int64_t MacCost(__int128 cycles, bool half_rate) const {
    return Cost(half_rate ? cycles * cfg_.half_rate_factor : cycles);
  }

  void Gemm(const isa::FmtGemm& f) {
    bool half = MacOperands(f.a, f.w, f.o, f.a_offset, f.accumulate);
    int64_t m = Rows(f.a), k = f.a.c, n = f.w.c;
    if (Rows(f.o) != m) Reject(Str("o has ", Rows(f.o), " rows, a has ", m));
    if (Rows(f.w) != k) Reject(Str("w has ", Rows(f.w), " rows (K), a has ", k, " columns"));
    if (f.o.c != n) Reject(Str("o has ", f.o.c, " columns, w has ", n));
    op_.cycles = MacCost(__int128(CeilDiv(m, cfg_.mac_rows)) * CeilDiv(n, cfg_.mac_cols) * k, half);
    op_.macs = m * n * k;
  }

  // Valid convolution geometry: every output pixel's window lies inside the input.
  void Window(const isa::Tensor& a, const isa::Tensor& o, int kh, int kw, int sh, int sw, int dh, int dw) const {
    Nonzero("stride_h", sh), Nonzero("stride_w", sw), Nonzero("dilation_h", dh), Nonzero("dilation_w", dw);
    if (o.n != a.n) Reject(Str("o n ", o.n, " != a n ", a.n));
    int64_t need_h = int64_t(o.h - 1) * sh + int64_t(kh - 1) * dh + 1;
    int64_t need_w = int64_t(o.w - 1) * sw + int64_t(kw - 1) * dw + 1;
    if (need_h > a.h) Reject(Str("output h ", o.h, " needs ", need_h, " input rows, a has ", a.h));
    if (need_w > a.w) Reject(Str("output w ", o.w, " needs ", need_w, " input columns, a has ", a.w));
  }

  void Conv(const isa::FmtConv& f) {
    bool half = MacOperands(f.a, f.w, f.o, f.a_offset, f.accumulate);
    Nonzero("groups", f.groups);
    if (f.a.c % f.groups) Reject(Str("groups ", f.groups, " does not divide a channels ", f.a.c));
    if (f.o.c % f.groups) Reject(Str("groups ", f.groups, " does not divide o channels ", f.o.c));
    int64_t cg = f.a.c / f.groups, ng = f.o.c / f.groups;
    if (f.w.w != cg) Reject(Str("w [KH,KW,Cin/groups,Cout] has ", f.w.w, " input channels, expected ", cg));
    if (f.w.c != f.o.c) Reject(Str("w has ", f.w.c, " output channels, o has ", f.o.c));
    Window(f.a, f.o, f.w.n, f.w.h, f.stride_h, f.stride_w, f.dilation_h, f.dilation_w);
    int64_t m = Rows(f.o), taps = int64_t(f.w.n) * f.w.h;
    op_.cycles = MacCost(__int128(f.groups) * CeilDiv(m, cfg_.mac_rows) * CeilDiv(ng, cfg_.mac_cols) * taps * cg, half);
    op_.macs = m * f.o.c * taps * cg;
  }

  void Dwconv(const isa::FmtDwconv& f) {
    bool half = MacOperands(f.a, f.w, f.o, f.a_offset, f.accumulate);
    if (f.w.w != 1) Reject(Str("w [KH,KW,1,C*multiplier] has w ", f.w.w, ", expected 1"));
    if (f.w.c != f.o.c) Reject(Str("w has ", f.w.c, " channels, o has ", f.o.c));
    if (f.o.c % f.a.c) Reject(Str("o channels ", f.o.c, " are not a multiple of a channels ", f.a.c));
    Window(f.a, f.o, f.w.n, f.w.h, f.stride_h, f.stride_w, f.dilation_h, f.dilation_w);
    int64_t m = Rows(f.o), taps = int64_t(f.w.n) * f.w.h;
    op_.cycles = MacCost(__int128(m) * taps * CeilDiv(f.o.c, cfg_.mac_cols), half);
    op_.macs = m * taps * f.o.c;
  }

  void Binary(Opcode code, const isa::FmtBinary& f) {
    Tensor("o", f.o, kVecSpaces, kAllDTypes);
    Tensor("a", f.a, kVecSpaces, Bit(DType(f.o.dtype)));
    Tensor("b", f.b, kVecSpaces, Bit(DType(f.o.dtype)));
    for (auto [name, t] : {std::pair<const char*, const isa::Tensor*>{"a", &f.a}, {"b", &f.b}}) {
      if ((t->n != f.o.n && t->n != 1) || (t->h != f.o.h && t->h != 1) || (t->w != f.o.w && t->w != 1) ||
          (t->c != f.o.c && t->c != 1))
        Reject(Str("operand ", name, ": dims of ", Desc(*t), " neither equal nor 1 against o ", Desc(f.o)));
    }
    bool quant = Is(f.o.dtype, DType::INT8) || Is(f.o.dtype, DType::INT16);
    if (quant && (code == Opcode::VADD || code == Opcode::VSUB)) {
      if (f.left_shift > 31) Reject(Str("left_shift ", int(f.left_shift), " outside [0, 31]"));
      Shift("a_shift", f.a_shift), Shift("b_shift", f.b_shift);
    }
    if (quant && code != Opcode::VMAX && code != Opcode::VMIN) Shift("o_shift", f.o_shift);
    if (quant || ((code == Opcode::VMAX || code == Opcode::VMIN) && !IsFloat(f.o.dtype)))
      Range("act_min", f.act_min, "act_max", f.act_max, f.o.dtype);
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  void Requant(const isa::FmtRequant& f) {
    Tensor("a", f.a, kVecSpaces, Bit(DType::INT32) | Bit(DType::FP32));
    bool fp = Is(f.a.dtype, DType::FP32);
    Tensor("o", f.o, kVecSpaces, fp ? Bit(DType::FP16) : Bit(DType::INT8) | Bit(DType::INT16));
    if (!SameDims(f.a, f.o)) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in dims"));
    if (!fp) {  // for fp32 -> fp16 the integer fields are unused
      Flag("per_channel", f.per_channel);
      if (f.per_channel) {
        if (int64_t(f.params_addr) + 8 * int64_t(f.o.c) > cfg_.acc_sram_bytes)
          Reject(Str("per-channel table at 0x", std::hex, f.params_addr, std::dec, " (", f.o.c,
                     " pairs) extends beyond the acc SRAM"));
      } else {
        Shift("shift", f.shift);
      }
      Range("act_min", f.act_min, "act_max", f.act_max, f.o.dtype);
    }
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  void Clamp(const isa::FmtClamp& f) {
    Tensor("a", f.a, kVecSpaces, kAllDTypes);
    Tensor("o", f.o, kVecSpaces, Bit(DType(f.a.dtype)));
    if (!SameDims(f.a, f.o)) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in dims"));
    if (IsFloat(f.a.dtype)) {
      if (std::isnan(f.min_f) || std::isnan(f.max_f) || f.min_f > f.max_f)
        Reject(Str("float bounds [", f.min_f, ", ", f.max_f, "] are not an ordered pair"));
    } else {
      Range("min_i", f.min_i, "max_i", f.max_i, f.a.dtype);
    }
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  void Lut(const isa::FmtLut& f) {
    Tensor("a", f.a, kVecSpaces, Bit(DType::INT8));
    Tensor("o", f.o, kVecSpaces, Bit(DType::INT8));
    if (!SameDims(f.a, f.o)) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in dims"));
    if (int64_t(f.lut_addr) + 256 > cfg_.act_sram_bytes)
      Reject(Str("lut_addr 0x", std::hex, f.lut_addr, std::dec, ": 256 entries extend beyond the act SRAM"));
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  void Func(const isa::FmtFunc& f) {
    if (f.func >= isa::kNumFunc) Reject(Str("unknown func ", int(f.func)));
    Tensor("a", f.a, kVecSpaces, kFloats);
    Tensor("o", f.o, kVecSpaces, kFloats);
    if (!SameDims(f.a, f.o)) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in dims"));
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  void Pool(const isa::FmtPool& f) {
    if (f.mode >= isa::kNumPoolMode) Reject(Str("unknown pool mode ", int(f.mode)));
    bool max = f.mode == uint8_t(isa::PoolMode::MAX);
    // Average pooling sums in int32 only for int8/int16 (a 255x255 int16 window still fits).
    Tensor("a", f.a, kVecSpaces, max ? kAllDTypes : kAllDTypes & ~Bit(DType::INT32));
    Tensor("o", f.o, kVecSpaces, Bit(DType(f.a.dtype)));
    Nonzero("kh", f.kh), Nonzero("kw", f.kw), Nonzero("stride_h", f.stride_h), Nonzero("stride_w", f.stride_w);
    if (f.o.n != f.a.n || f.o.c != f.a.c) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in n or c"));
    // Every window must hold at least one input element (its count divides the average).
    if (f.pad_top >= f.kh || f.pad_left >= f.kw) Reject("a padding of kh/kw or more leaves empty windows");
    if (int64_t(f.o.h - 1) * f.stride_h - f.pad_top >= f.a.h)
      Reject(Str("output row ", f.o.h - 1, " has an empty window (input h ", f.a.h, ")"));
    if (int64_t(f.o.w - 1) * f.stride_w - f.pad_left >= f.a.w)
      Reject(Str("output column ", f.o.w - 1, " has an empty window (input w ", f.a.w, ")"));
    if (!IsFloat(f.a.dtype)) Range("act_min", f.act_min, "act_max", f.act_max, f.a.dtype);
    op_.cycles = VectorCost(Elements(f.o) * f.kh * f.kw);
    Writes(f.o);
  }

  void Reduce(const isa::FmtReduce& f) {
    if (f.mode >= isa::kNumReduceMode) Reject(Str("unknown reduce mode ", int(f.mode)));
    if (f.axis > 3) Reject(Str("axis ", int(f.axis), " outside [0, 3]"));
    Tensor("a", f.a, kVecSpaces, kAllDTypes);
    unsigned out = f.mode == uint8_t(isa::ReduceMode::MAX) ? Bit(DType(f.a.dtype))
                   : IsFloat(f.a.dtype)                    ? Bit(DType::FP32)
                                                           : Bit(DType::INT32);
    Tensor("o", f.o, kVecSpaces, out);
    isa::Tensor want = f.a;
    (f.axis == 0 ? want.n : f.axis == 1 ? want.h : f.axis == 2 ? want.w : want.c) = 1;
    if (!SameDims(want, f.o)) Reject(Str("o ", Desc(f.o), " must have a's dims with axis ", int(f.axis), " set to 1"));
    op_.cycles = VectorCost(Elements(f.a));
    Writes(f.o);
  }

  void Cvt(const isa::FmtCvt& f) {
    Tensor("a", f.a, kVecSpaces, kAllDTypes);
    Tensor("o", f.o, kVecSpaces, kAllDTypes);
    DType a = DType(f.a.dtype), o = DType(f.o.dtype);
    bool ok = a == o || (a == DType::FP16 && o == DType::FP32) || (a == DType::FP32 && o == DType::FP16) ||
              ((a == DType::INT8 || a == DType::INT16) && o == DType::INT32);
    if (!ok) Reject(Str("no conversion from ", isa::kDTypeName[f.a.dtype], " to ", isa::kDTypeName[f.o.dtype]));
    if (!SameDims(f.a, f.o)) Reject(Str("o ", Desc(f.o), " and a ", Desc(f.a), " differ in dims"));
    op_.cycles = VectorCost(Elements(f.o));
    Writes(f.o);
  }

  const isa::Config& cfg_;
  int64_t sram_[isa::kNumSpace];
  int64_t region_[isa::kNumRegion];
  Op op_;
};

template <class T>
T ReadLE(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::vector<Op> Decode(const isa::Config& cfg, const uint8_t* prog, size_t size, const DramRegions& dram) {
  if (size < isa::kProgramHeaderSize)
    throw Error(Str("program: truncated header (", size, " bytes)"));
  if (std::memcmp(prog, isa::kProgramMagic, 4) != 0) throw Error("program: bad magic (expected NPUP)");
  uint16_t version = ReadLE<uint16_t>(prog + 4), reserved = ReadLE<uint16_t>(prog + 6);
  uint32_t count = ReadLE<uint32_t>(prog + 8), length = ReadLE<uint32_t>(prog + 12);
  if (version != isa::kIsaVersion)
    throw Error(Str("program: ISA version ", version, ", this build supports ", isa::kIsaVersion));
  if (reserved != 0) throw Error(Str("program: reserved header field is ", reserved, ", must be 0"));
  size_t avail = size - isa::kProgramHeaderSize;
  if (avail != length)
    throw Error(Str("program: header says ", length, " bytes of instructions, ", avail, " present"));
  if (count == 0) throw Error("program: no instructions (a program ends with end)");

  Validator validator(cfg, dram);
  std::vector<Op> ops;
  ops.reserve(std::min<size_t>(count, length / 8));
  const uint8_t* p = prog + isa::kProgramHeaderSize;
  size_t left = length;
  for (uint32_t i = 0; i < count; ++i) {
    if (left < isa::kInstrHeaderSize)
      throw Error(Str("instruction ", i, ": truncated header (", left, " bytes left)"));
    const isa::OpcodeInfo* info = isa::LookupOpcode(p[0]);
    if (!info) throw Error(Str("instruction ", i, ": unknown opcode 0x", std::hex, std::setw(2), std::setfill('0'), int(p[0])));
    uint16_t len = ReadLE<uint16_t>(p + 2);
    if (len != info->size)
      throw Error(Str("instruction ", i, " (", info->mnemonic, "): length field ", len,
                      " differs from the opcode's size ", info->size));
    if (left < len)
      throw Error(Str("instruction ", i, " (", info->mnemonic, "): truncated (", left, " of ", len, " bytes)"));
    isa::Instr in;
    std::memset(&in, 0, sizeof(in));
    in.opcode = Opcode(p[0]);
    in.deps = p[1];
    in.index = i;
    isa::DecodeFields(in.opcode, p, &in);
    if (in.opcode == Opcode::END && i + 1 != count)
      throw Error(Str("instruction ", i, " (end): end must be the last instruction, ", count - i - 1, " follow"));
    ops.push_back(validator.Check(in, *info));
    p += len;
    left -= len;
  }
  if (left) throw Error(Str("program: ", left, " bytes after the ", count, " instructions the header declares"));
  if (ops.back().in.opcode != Opcode::END)
    throw Error(Str("instruction ", count - 1, " (", ops.back().mnemonic, "): the program must end with end"));
  return ops;
}

struct Timing {
  int64_t start, end;
};

// The discrete-event cycle model. Instructions of a queue run in program order; a pop waits for the
// FIFO-matching push on its edge; barrier/end wait for everything before them and gate everything
// after. Between two fences the queues advance as far as their tokens allow; if some cannot, the
// program deadlocks.
std::vector<Timing> Schedule(const std::vector<Op>& ops, Counters* c) {
  std::vector<Timing> tm(ops.size());
  std::vector<int64_t> pushes[4];  // signal times per edge, in push order
  size_t popped[4] = {};
  int64_t queue_end[isa::kNumQueue] = {};
  int64_t fence_end = 0;
  auto edges = [](const Op& op, bool pop, int out[2]) {
    int n = 0, q = op.queue;
    if (op.in.deps & (pop ? isa::DEP_POP_PREV : isa::DEP_PUSH_PREV)) out[n++] = pop ? Edge(q - 1, q) : Edge(q, q - 1);
    if (op.in.deps & (pop ? isa::DEP_POP_NEXT : isa::DEP_PUSH_NEXT)) out[n++] = pop ? Edge(q + 1, q) : Edge(q, q + 1);
    return n;
  };
  auto finish = [&](uint32_t i, int64_t start, int queue) {
    const Op& op = ops[i];
    int64_t end = start + op.cycles;  // both < 2^62: costs are capped and the sum is checked below
    if (end > kMaxCycles * 16) throw Error(Str("instruction ", i, " (", op.mnemonic, "): the cycle count overflows"));
    tm[i] = {start, end};
    c->queue_stall[queue] += start - queue_end[queue];
    c->queue_busy[queue] += op.cycles;
    c->unit_busy[op.unit] += op.cycles;
    queue_end[queue] = end;
  };

  size_t seg = 0;
  while (seg < ops.size()) {
    size_t fence = seg;
    while (!ops[fence].fence) ++fence;  // terminates: the last instruction is end
    std::vector<uint32_t> lists[isa::kNumQueue];
    for (size_t i = seg; i < fence; ++i) lists[ops[i].queue].push_back(uint32_t(i));
    size_t head[isa::kNumQueue] = {};
    for (bool progress = true; progress;) {
      progress = false;
      for (int q = 0; q < isa::kNumQueue; ++q) {
        for (; head[q] < lists[q].size(); ++head[q], progress = true) {
          uint32_t i = lists[q][head[q]];
          int pe[2], np = edges(ops[i], true, pe);
          bool ready = true;
          for (int k = 0; k < np; ++k) ready &= pushes[pe[k]].size() > popped[pe[k]];
          if (!ready) break;
          int64_t start = std::max(queue_end[q], fence_end);
          for (int k = 0; k < np; ++k) start = std::max(start, pushes[pe[k]][popped[pe[k]]++]);
          finish(i, start, q);
          int out[2], nq = edges(ops[i], false, out);
          for (int k = 0; k < nq; ++k) pushes[out[k]].push_back(tm[i].end);
        }
      }
    }
    uint32_t stuck = UINT32_MAX;
    for (int q = 0; q < isa::kNumQueue; ++q)
      if (head[q] < lists[q].size()) stuck = std::min(stuck, lists[q][head[q]]);
    if (stuck != UINT32_MAX) {
      const Op& op = ops[stuck];
      int pe[2], np = edges(op, true, pe);
      std::string from;
      for (int k = 0; k < np; ++k)
        if (pushes[pe[k]].size() <= popped[pe[k]])
          from += std::string(from.empty() ? "" : " and ") + kQueueName[pe[k] == 0 ? kLoad : pe[k] == 3 ? kStore : kCompute];
      throw Error(Str("instruction ", stuck, " (", op.mnemonic, "): deadlock: waits for a token from the ", from,
                      " queue that is never signalled", fence + 1 < ops.size() ? " before the next barrier" : ""));
    }
    int64_t start = std::max({fence_end, queue_end[0], queue_end[1], queue_end[2]});
    finish(uint32_t(fence), start, ops[fence].queue);
    fence_end = tm[fence].end;
    seg = fence + 1;
  }
  c->cycles = fence_end;
  return tm;
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// calloc: zero-filled, and untouched pages of large SRAMs / scratch cost nothing.
Buffer Zeroed(size_t bytes, const char* what) {
  Buffer b(static_cast<uint8_t*>(std::calloc(std::max<size_t>(bytes, 1), 1)));
  if (!b) throw Error(Str("program: cannot allocate ", bytes, " bytes for ", what));
  return b;
}

View MakeView(uint8_t* const sram[], const isa::Tensor& t) {
  View v;
  v.base = sram[t.space] + t.addr;
  v.dtype = t.dtype;
  v.n = t.n, v.h = t.h, v.w = t.w, v.c = t.c;
  v.es = isa::kDTypeSize[t.dtype];
  v.rs = RowStride(t);
  return v;
}

// A GEMM operand seen as [1, 1, rows, c] so that the convolution kernel runs it as a 1x1 conv.
View Flat(uint8_t* const sram[], const isa::Tensor& t) {
  View v = MakeView(sram, t);
  v.w = v.rows(), v.n = v.h = 1;
  return v;
}

class Machine {
 public:
  Machine(const isa::Config& cfg, const DramRegions& dram, bool const_written)
      : act_(Zeroed(size_t(cfg.act_sram_bytes), "the act SRAM")),
        wgt_(Zeroed(size_t(cfg.wgt_sram_bytes), "the wgt SRAM")),
        acc_(Zeroed(size_t(cfg.acc_sram_bytes), "the acc SRAM")),
        scratch_(Zeroed(dram.scratch_size, "SCRATCH")) {
    sram_[0] = act_.get(), sram_[1] = wgt_.get(), sram_[2] = acc_.get();
    region_[1] = dram.io, region_[2] = scratch_.get();
    if (const_written) {  // the caller's constants stay untouched
      const_copy_ = Zeroed(dram.const_size, "a writable copy of CONST");
      if (dram.const_size) std::memcpy(const_copy_.get(), dram.const_data, dram.const_size);
      region_[0] = const_copy_.get();
    } else {
      region_[0] = const_cast<uint8_t*>(dram.const_data);  // only read
    }
  }

  void Execute(const isa::Instr& in) {
    uint8_t* const* s = sram_;
    switch (in.opcode) {
      case Opcode::DMALOAD:
        DmaLoadKernel(in.dma_load, MakeView(s, in.dma_load.dst), region_[in.dma_load.src.region]);
        break;
      case Opcode::DMASTORE:
        DmaStoreKernel(in.dma_store, MakeView(s, in.dma_store.src), region_[in.dma_store.dst.region]);
        break;
      case Opcode::GEMM: {
        ConvArgs g;
        g.a = Flat(s, in.gemm.a), g.w = Flat(s, in.gemm.w), g.o = Flat(s, in.gemm.o);
        g.a_offset = in.gemm.a_offset, g.accumulate = in.gemm.accumulate;
        ConvKernel(g);
        break;
      }
      case Opcode::CONV2D: {
        const isa::FmtConv& f = in.conv;
        ConvKernel(ConvArgs{MakeView(s, f.a), MakeView(s, f.w), MakeView(s, f.o), f.w.n, f.w.h, f.stride_h,
                            f.stride_w, f.dilation_h, f.dilation_w, f.groups, f.a_offset, f.accumulate != 0});
        break;
      }
      case Opcode::DWCONV2D: {
        const isa::FmtDwconv& f = in.dwconv;
        DepthwiseKernel(ConvArgs{MakeView(s, f.a), MakeView(s, f.w), MakeView(s, f.o), f.w.n, f.w.h, f.stride_h,
                                 f.stride_w, f.dilation_h, f.dilation_w, 1, f.a_offset, f.accumulate != 0});
        break;
      }
      case Opcode::VADD: case Opcode::VSUB: case Opcode::VMUL: case Opcode::VMAX: case Opcode::VMIN:
        BinaryKernel(in.opcode, in.binary, MakeView(s, in.binary.a), MakeView(s, in.binary.b),
                     MakeView(s, in.binary.o));
        break;
      case Opcode::VREQUANT:
        RequantKernel(in.requant, MakeView(s, in.requant.a), MakeView(s, in.requant.o), acc_.get());
        break;
      case Opcode::VCLAMP: ClampKernel(in.clamp, MakeView(s, in.clamp.a), MakeView(s, in.clamp.o)); break;
      case Opcode::VLUT:
        LutKernel(MakeView(s, in.lut.a), MakeView(s, in.lut.o), act_.get() + in.lut.lut_addr);
        break;
      case Opcode::VFUNC:
        FuncKernel(isa::Func(in.func.func), MakeView(s, in.func.a), MakeView(s, in.func.o));
        break;
      case Opcode::VPOOL: PoolKernel(in.pool, MakeView(s, in.pool.a), MakeView(s, in.pool.o)); break;
      case Opcode::VREDUCE: ReduceKernel(in.reduce, MakeView(s, in.reduce.a), MakeView(s, in.reduce.o)); break;
      case Opcode::VCVT: CvtKernel(MakeView(s, in.cvt.a), MakeView(s, in.cvt.o)); break;
      case Opcode::SYNC: case Opcode::BARRIER: case Opcode::END: break;
    }
  }

 private:
  Buffer act_, wgt_, acc_, scratch_, const_copy_;
  uint8_t* sram_[isa::kNumSpace];
  uint8_t* region_[isa::kNumRegion];
};

}  // namespace

void ValidateConfig(const isa::Config& cfg) {
  isa::Config copy = cfg;
  isa::ForEachConfigField(&copy, [](const char* name, int64_t* v) {
    if (*v < 1 || *v >= (int64_t(1) << 31)) throw Error(Str("config: ", name, " must be in [1, 2^31), got ", *v));
  });
  for (int64_t bytes : {cfg.act_sram_bytes, cfg.wgt_sram_bytes, cfg.acc_sram_bytes})
    if (bytes % 16) throw Error(Str("config: SRAM sizes must be multiples of 16 bytes, got ", bytes));
}

namespace {
// Validation, timing and the counters that do not depend on data: shared by Run and Check.
Counters Plan(const isa::Config& cfg, const uint8_t* program, size_t program_size, const DramRegions& dram,
              std::vector<Op>* ops_out, std::vector<Timing>* tm_out, std::vector<int64_t>* trace) {
  ValidateConfig(cfg);
  std::vector<Op>& ops = *ops_out;
  ops = Decode(cfg, program, program_size, dram);
  Counters c;
  std::vector<Timing>& tm = *tm_out;
  tm = Schedule(ops, &c);  // throws on deadlock, before anything runs

  c.instructions = int64_t(ops.size());
  for (const Op& op : ops) {
    c.macs += op.macs;
    if (op.dma_region >= 0) {
      bool store = op.in.opcode == Opcode::DMASTORE;
      (store ? c.dma_write_bytes : c.dma_read_bytes)[op.dma_region] += op.dma_bytes;
    }
    if (op.out_space >= 0) c.sram_high_water[op.out_space] = std::max(c.sram_high_water[op.out_space], op.out_end);
  }
  if (trace) {
    trace->clear();
    trace->reserve(ops.size() * 4);
    for (size_t i = 0; i < ops.size(); ++i) trace->insert(trace->end(), {int64_t(i), ops[i].queue, tm[i].start, tm[i].end});
  }
  return c;
}
}  // namespace

Counters Check(const isa::Config& cfg, const uint8_t* program, size_t program_size, const DramRegions& dram,
               std::vector<int64_t>* trace) {
  std::vector<Op> ops;
  std::vector<Timing> tm;
  return Plan(cfg, program, program_size, dram, &ops, &tm, trace);
}

Counters Run(const isa::Config& cfg, const uint8_t* program, size_t program_size, const DramRegions& dram,
             std::vector<int64_t>* trace) {
  std::vector<Op> ops;
  std::vector<Timing> tm;
  Counters c = Plan(cfg, program, program_size, dram, &ops, &tm, trace);
  bool const_written = false;
  for (const Op& op : ops)
    const_written |= op.dma_region == int(isa::Region::CONST) && op.in.opcode == Opcode::DMASTORE;

  // Functional effects in start-time order (ties: program order), so races resolve as timing implies.
  std::vector<uint32_t> order(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) order[i] = uint32_t(i);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t x, uint32_t y) { return tm[x].start < tm[y].start; });
  Machine m(cfg, dram, const_written);
  FpEvents& ev = ThreadFpEvents();
  for (uint32_t i : order) {
    ev = FpEvents();
    try {
      m.Execute(ops[i].in);
    } catch (const KernelFault& f) {
      throw Error(Str("instruction ", i, " (", ops[i].mnemonic, "): ", f.reason));
    }
    if (ev.any()) {
      uint32_t bits;
      std::memcpy(&bits, &ev.max_abs, 4);
      c.fp_events.push_back({int64_t(i), ev.stored, ev.overflow, ev.nan, ev.underflow, int64_t(bits)});
    }
  }
  std::sort(c.fp_events.begin(), c.fp_events.end());  // program order (execution follows start times)
  return c;
}

}  // namespace npu
