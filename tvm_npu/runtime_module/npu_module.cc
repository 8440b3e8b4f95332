// The TVM runtime module of kind "npu": one validated artifact per external symbol, run on the
// emulator core in this same library. Serialises itself (SaveToBytes / load_from_bytes.npu) so an
// exported library carries the artifacts. docs/design/tvm_integration.md section 3 has the contract.
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "artifact_reader.h"
#include "counters_map.h"
#include "emulator.h"

namespace tvm_npu {
namespace {

namespace ffi = tvm::ffi;

// ---- fp16 <-> fp32 (bit exact; the NPU's fp16 is IEEE binary16) ----------------------------------

uint16_t FloatToHalf(float f) {  // round to nearest, ties to even; overflow -> inf; NaN stays NaN
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t exp = (x >> 23) & 0xFF, mant = x & 0x7FFFFF;
  if (exp == 0xFF) return sign | 0x7C00 | (mant ? 0x200 | (mant >> 13) : 0);  // inf, or a quiet NaN
  const int e = int(exp) - 127 + 15;  // the fp16 biased exponent
  if (e >= 0x1F) return sign | 0x7C00;
  uint32_t m = mant, shift = 13, h;
  if (e <= 0) {  // fp16 subnormal (or zero): shift the full significand further right
    if (e < -10) return sign;  // below half the smallest subnormal: rounds to zero
    m |= 0x800000;
    shift = 14 - e;
    h = m >> shift;
  } else {
    h = uint32_t(e) << 10 | (m >> shift);
  }
  const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1))) ++h;  // a carry may roll into the exponent: still correct
  return sign | uint16_t(h);
}

// What rounding float32 inputs to float16 did at the NPU boundary: finite values that became inf,
// nonzero values that became zero (NaNs the CPU part computed are its own, not counted).
struct Rounding {
  int64_t stored = 0, overflow = 0, underflow = 0;
  float max_abs = 0.0f;  // the largest finite |input|
  void Count(float f, uint16_t h) {
    if (std::isfinite(f)) max_abs = std::max(max_abs, std::fabs(f));
    if ((h & 0x7FFF) == 0x7C00 && std::isfinite(f)) ++overflow;
    if ((h & 0x7FFF) == 0 && f != 0.0f) ++underflow;
  }
};

float HalfToFloat(uint16_t h) {  // exact
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, x;
  if (exp == 0x1F) {
    x = sign | 0x7F800000 | mant << 13;
  } else if (exp != 0) {
    x = sign | (exp + 112) << 23 | mant << 13;
  } else if (mant == 0) {
    x = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --exp;
    }
    x = sign | exp << 23 | (mant & 0x3FF) << 13;
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// ---- module -----------------------------------------------------------------------------------

bool SameDType(DLDataType a, DLDataType b) { return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes; }
constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr DLDataType kF16{kDLFloat, 16, 1};

std::string ShapeStr(const int64_t* d, size_t n) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < n; ++i) os << (i ? ", " : "") << d[i];
  os << "]";
  return os.str();
}

Artifact ParseForSymbol(const std::string& sym, std::string bytes) {
  if (sym.empty()) TVM_FFI_THROW(ValueError) << "npu module: empty symbol name";
  try {
    return ParseArtifact(std::move(bytes));
  } catch (const ffi::Error& e) {  // add the symbol; keep the reader's message
    TVM_FFI_THROW(ValueError) << "npu module: symbol '" << sym << "': " << e.message();
  }
  TVM_FFI_UNREACHABLE();
}

struct Symbol {
  Artifact art;
  std::vector<size_t> arg_order;  // IO table indices: inputs in order, then outputs in order
  bool has_run = false;
  int64_t runs = 0;
  npu::Counters counters;
  std::vector<int64_t> trace;  // flat (index, queue, start, end) of the last traced run
};

class NPUModuleObj : public ffi::ModuleObj {
 public:
  explicit NPUModuleObj(std::map<std::string, Artifact> arts) {
    for (auto& [name, art] : arts) {
      Symbol s;
      s.art = std::move(art);
      for (int want_input = 1; want_input >= 0; --want_input)
        for (size_t i = 0; i < s.art.io.size(); ++i)
          if (s.art.io[i].is_input == bool(want_input)) s.arg_order.push_back(i);
      syms_.emplace(name, std::move(s));
    }
  }

  const char* kind() const final { return "npu"; }
  int GetPropertyMask() const final { return ffi::Module::kBinarySerializable | ffi::Module::kRunnable; }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    ffi::ObjectRef self = ffi::GetRef<ffi::ObjectRef>(this);  // closures keep the module alive
    if (name == "npu_symbols") return ffi::Function::FromTyped([this, self]() {
        ffi::Array<ffi::String> r;
        for (const auto& kv : syms_) r.push_back(kv.first);
        return r;
      });
    if (name == "npu_artifact") return ffi::Function::FromTyped([this, self](ffi::String sym) {
        const std::string& b = Get(sym).art.bytes;
        return ffi::Bytes(b.data(), b.size());
      });
    if (name == "npu_last_counters") return ffi::Function::FromTyped([this, self](ffi::String sym) {
        std::lock_guard<std::mutex> lock(mu_);
        const Symbol& s = Get(sym);
        if (!s.has_run) TVM_FFI_THROW(ValueError) << "npu function '" << sym << "' has not run yet";
        return npu::CountersToMap(s.counters);
      });
    if (name == "npu_last_trace") return ffi::Function::FromTyped([this, self](ffi::String sym) {
        std::lock_guard<std::mutex> lock(mu_);
        const std::vector<int64_t>& t = Get(sym).trace;
        return ffi::Array<int64_t>(t.begin(), t.end());
      });
    if (name == "npu_set_trace") return ffi::Function::FromTyped([this, self](bool on) {
        std::lock_guard<std::mutex> lock(mu_);
        trace_ = on;
      });
    if (name == "npu_run_count") return ffi::Function::FromTyped([this, self](ffi::String sym) {
        std::lock_guard<std::mutex> lock(mu_);
        return Get(sym).runs;
      });
    auto it = syms_.find(std::string(name));
    if (it == syms_.end()) return std::nullopt;  // not ours: the VM searches the other modules
    std::string sym = it->first;
    return ffi::Function([this, self, sym](ffi::PackedArgs args, ffi::Any*) {
      Run(sym, args);
      Warn();
    });
  }

  // "NPUM", u32 version, u64 count, then per symbol (u64 length, name)(u64 length, artifact), sorted
  // by name, so the same artifacts always give the same bytes.
  ffi::Bytes SaveToBytes() const final {
    std::string out("NPUM", 4);
    auto put = [&out](uint64_t v, int n) {
      for (int i = 0; i < n; ++i) out.push_back(char(v >> (8 * i)));
    };
    put(kSerialVersion, 4);
    put(syms_.size(), 8);
    for (const auto& [name, s] : syms_) {
      put(name.size(), 8);
      out += name;
      put(s.art.bytes.size(), 8);
      out += s.art.bytes;
    }
    return ffi::Bytes(out.data(), out.size());
  }

  static ffi::Module FromBytes(const ffi::Bytes& bytes) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
    size_t left = bytes.size();
    auto take = [&](size_t n, const char* what) {  // every length is checked against what is left
      if (n > left) TVM_FFI_THROW(ValueError) << "npu module: truncated " << what << " (" << n << " bytes needed, " << left << " left)";
      const uint8_t* r = p;
      p += n;
      left -= n;
      return r;
    };
    auto u64 = [&](int n, const char* what) {
      const uint8_t* q = take(n, what);
      uint64_t v = 0;
      for (int i = n - 1; i >= 0; --i) v = v << 8 | q[i];
      return v;
    };
    if (std::memcmp(take(4, "magic"), "NPUM", 4) != 0) TVM_FFI_THROW(ValueError) << "npu module: bad magic";
    uint64_t version = u64(4, "version");
    if (version != kSerialVersion) TVM_FFI_THROW(ValueError) << "npu module: serialisation version " << version;
    uint64_t count = u64(8, "symbol count");
    if (count > left / 16) TVM_FFI_THROW(ValueError) << "npu module: " << count << " symbols cannot fit " << left << " bytes";
    std::map<std::string, Artifact> arts;
    for (uint64_t i = 0; i < count; ++i) {
      size_t n = u64(8, "symbol name length");
      std::string name(reinterpret_cast<const char*>(take(n, "symbol name")), n);
      size_t m = u64(8, "artifact length");
      std::string blob(reinterpret_cast<const char*>(take(m, "artifact")), m);
      if (arts.count(name)) TVM_FFI_THROW(ValueError) << "npu module: symbol '" << name << "' appears twice";
      arts.emplace(name, ParseForSymbol(name, std::move(blob)));
    }
    if (left) TVM_FFI_THROW(ValueError) << "npu module: " << left << " trailing bytes";
    return ffi::Module(ffi::make_object<NPUModuleObj>(std::move(arts)));
  }

 private:
  static constexpr uint32_t kSerialVersion = 1;

  Symbol& Get(const ffi::String& sym) {
    auto it = syms_.find(std::string(sym));
    if (it == syms_.end()) TVM_FFI_THROW(ValueError) << "npu module has no symbol '" << sym << "'";
    return it->second;
  }

  // Checks one argument against its IO entry; returns true when a float32 <-> float16 conversion is needed.
  static bool CheckArg(const std::string& sym, const IOEntry& e, size_t index, const DLTensor* t) {
    std::string what = "npu function '" + sym + "': " + (e.is_input ? "input" : "output") + " tensor '" + e.name +
                       "' (argument " + std::to_string(index) + ")";
    if (t->device.device_type != kDLCPU) TVM_FFI_THROW(ValueError) << what << " must be on the CPU";
    if (size_t(t->ndim) != e.shape.size() || !std::equal(e.shape.begin(), e.shape.end(), t->shape))
      TVM_FFI_THROW(ValueError) << what << " has shape " << ShapeStr(t->shape, size_t(std::max(t->ndim, 0)))
                                << ", expected " << ShapeStr(e.shape.data(), e.shape.size());
    bool convert = SameDType(t->dtype, kF32) && SameDType(e.dl_dtype, kF16);
    if (!SameDType(t->dtype, e.dl_dtype) && !convert)
      TVM_FFI_THROW(ValueError) << what << " has dtype " << ffi::DLDataTypeToString(t->dtype) << ", expected "
                                << e.dtype << (e.dtype == "float16" ? " (or float32, converted)" : "");
    if (!ffi::IsContiguous(*t)) TVM_FFI_THROW(ValueError) << what << " must be contiguous";
    if (e.nbytes && t->data == nullptr) TVM_FFI_THROW(ValueError) << what << " has no data";
    return convert;
  }

  void Run(const std::string& sym, ffi::PackedArgs args) {
    std::lock_guard<std::mutex> lock(mu_);  // the per-symbol results and the trace flag are shared
    Symbol& s = syms_.at(sym);
    const Artifact& a = s.art;
    if (size_t(args.size()) != s.arg_order.size()) {
      std::ostringstream names;
      for (size_t i : s.arg_order) names << (names.tellp() ? ", " : "") << a.io[i].name;
      TVM_FFI_THROW(ValueError) << "npu function '" << sym << "' takes " << s.arg_order.size()
                                << " tensors (inputs, then outputs: " << names.str() << "), got " << args.size();
    }
    std::vector<const DLTensor*> ts(args.size());
    std::vector<bool> convert(args.size());
    for (size_t k = 0; k < ts.size(); ++k) {
      const IOEntry& e = a.io[s.arg_order[k]];
      auto t = args[k].try_cast<DLTensor*>();
      if (!t.has_value())
        TVM_FFI_THROW(TypeError) << "npu function '" << sym << "': argument " << k << " (tensor '" << e.name
                                 << "') must be a tensor, got " << args[k].GetTypeKey();
      ts[k] = *t;
      convert[k] = CheckArg(sym, e, k, ts[k]);
    }
    std::vector<int64_t> trace;
    npu::Counters c;
    std::vector<std::pair<std::string, Rounding>> boundary;  // per converted input
    try {
      std::vector<uint8_t> io(a.io_bytes);  // zero-filled: outputs start at 0 on every run
      for (size_t k = 0; k < ts.size(); ++k) {
        const IOEntry& e = a.io[s.arg_order[k]];
        if (!e.is_input || e.nbytes == 0) continue;
        const uint8_t* src = static_cast<const uint8_t*>(ts[k]->data) + ts[k]->byte_offset;
        if (!convert[k]) {
          std::memcpy(io.data() + e.offset, src, e.nbytes);
        } else {
          Rounding ev;  // the boundary's own float32 -> float16 rounding (reported like a layer's)
          for (uint64_t i = 0; i < e.nbytes / 2; ++i) {
            float f;
            std::memcpy(&f, src + 4 * i, 4);
            uint16_t h = FloatToHalf(f);
            ev.Count(f, h);
            std::memcpy(io.data() + e.offset + 2 * i, &h, 2);
          }
          ev.stored = int64_t(e.nbytes / 2);
          if (ev.overflow || ev.underflow) boundary.push_back({e.name, ev});
        }
      }
      npu::DramRegions dram;
      dram.const_data = a.constants();
      dram.const_size = a.const_size;
      dram.io = io.data();
      dram.io_size = io.size();
      dram.scratch_size = a.scratch_bytes;
      c = npu::Run(a.config, a.program(), a.prog_size, dram, trace_ ? &trace : nullptr);
      for (size_t k = 0; k < ts.size(); ++k) {
        const IOEntry& e = a.io[s.arg_order[k]];
        if (e.is_input || e.nbytes == 0) continue;
        uint8_t* dst = static_cast<uint8_t*>(ts[k]->data) + ts[k]->byte_offset;
        if (!convert[k]) {
          std::memcpy(dst, io.data() + e.offset, e.nbytes);
        } else {
          for (uint64_t i = 0; i < e.nbytes / 2; ++i) {
            uint16_t h;
            std::memcpy(&h, io.data() + e.offset + 2 * i, 2);
            float f = HalfToFloat(h);
            std::memcpy(dst + 4 * i, &f, 4);
          }
        }
      }
    } catch (const npu::Error& e) {
      TVM_FFI_THROW(ValueError) << "npu function '" << sym << "': " << e.what();
    } catch (const std::bad_alloc&) {
      TVM_FFI_THROW(ValueError) << "npu function '" << sym << "': out of memory";
    }
    s.has_run = true;
    s.runs += 1;
    s.counters = c;
    s.trace = std::move(trace);  // empty when tracing is off, so a stale trace is never reported
    if (a.fp16_overflow != "ignore" && (!c.fp_events.empty() || !boundary.empty())) {
      Numerics n = NumericsReport(sym, a, c, boundary);
      if (!n.fault.empty() && a.fp16_overflow == "error") TVM_FFI_THROW(NPUNumericsError) << n.fault;
      pending_warnings_.insert(pending_warnings_.end(), n.warnings.begin(), n.warnings.end());
      if (!n.fault.empty()) pending_warnings_.push_back(n.fault);
    }
  }

  struct Numerics {
    std::string fault;                  // overflow or NaN: an error or a warning, by policy
    std::vector<std::string> warnings;  // mostly flushed to zero: a warning
  };

  // The numeric events of a run per layer (the provenance range holding each instruction), in
  // program order: the first layer that overflowed is the one to look at.
  static Numerics NumericsReport(const std::string& sym, const Artifact& a, const npu::Counters& c,
                                 const std::vector<std::pair<std::string, Rounding>>& boundary) {
    struct Layer {
      int64_t first = 0, stored = 0, overflow = 0, nan = 0, underflow = 0;
      std::string name;
      float max_abs = 0.0f;  // the largest finite |value| its flushing / overflowing instructions wrote
    };
    std::vector<Layer> layers;
    for (const auto& [name, ev] : boundary)  // before any layer: the inputs as the NPU receives them
      layers.push_back(Layer{-1, ev.stored, ev.overflow, 0, ev.underflow,
                             "input '" + name + "' (float32 from the CPU, stored as float16)", ev.max_abs});
    for (const auto& e : c.fp_events) {
      std::string name = "instructions outside every layer";
      for (const ProvenanceEntry& p : a.provenance)
        if (e[0] >= p.start && e[0] < p.end) {
          name = "layer '" + p.source + "' (" + p.op + ")";
          break;
        }
      if (layers.empty() || layers.back().name != name) layers.push_back(Layer{e[0], 0, 0, 0, 0, name});
      Layer& l = layers.back();
      l.stored += e[1], l.overflow += e[2], l.nan += e[3], l.underflow += e[4];
      float m;
      uint32_t bits = uint32_t(e[5]);
      std::memcpy(&m, &bits, 4);
      l.max_abs = std::max(l.max_abs, m);
    }
    Numerics out;
    for (const Layer& l : layers) {
      if (out.fault.empty() && (l.overflow || l.nan)) {
        std::ostringstream m;
        m << "npu function '" << sym << "': " << l.name << " produced ";
        if (l.overflow) m << l.overflow << " value(s) beyond the float16 range (overflow to inf)";
        if (l.overflow && l.nan) m << " and ";
        if (l.nan) m << l.nan << " NaN(s)";
        if (l.first >= 0) m << ", first at instruction " << l.first;
        m << "; the outputs are not finite where the reference's may be. Keep the operator on the CPU or in "
             "float32, or rescale its input (policy: compile_options(fp16_overflow=\"error\"|\"warn\"|\"ignore\"))";
        out.fault = m.str();
      }
      // mostly flushed, and nothing it wrote reached fp16's normal range (6.1e-5): the layer's results
      // live below fp16 (tiny probabilities of a sigmoid that also writes 1.0 are not worth a word)
      if (l.underflow * 2 > l.stored && l.stored > 0 && l.max_abs < 6.103515625e-05f) {
        std::ostringstream m;
        m << "npu function '" << sym << "': " << l.name << ": " << l.underflow << " of " << l.stored
          << " nonzero results flushed to zero (below the float16 range, 6e-8)";
        if (l.first >= 0) m << ", first at instruction " << l.first;
        out.warnings.push_back(m.str());
      }
    }
    return out;
  }

  // The numeric warnings of the last run go to the Python function tvm_npu.runtime_module registers
  // (a NumericsWarning through Python's warnings), or to stderr without it; called without the lock.
  void Warn() {
    std::vector<std::string> ws;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ws.swap(pending_warnings_);
    }
    if (ws.empty()) return;
    auto f = ffi::Function::GetGlobal("tvm_npu.runtime.numerics_warning");
    for (const std::string& w : ws) {
      if (f.has_value()) {
        (*f)(ffi::String(w));
      } else {
        std::cerr << "warning: " << w << std::endl;
      }
    }
  }

  std::vector<std::string> pending_warnings_;

  std::map<std::string, Symbol> syms_;
  bool trace_ = false;
  std::mutex mu_;
};

ffi::Module CreateModule(ffi::Map<ffi::String, ffi::Bytes> blobs) {
  std::map<std::string, Artifact> arts;
  for (const auto& kv : blobs) {
    std::string name(kv.first);
    arts.emplace(name, ParseForSymbol(name, std::string(kv.second.data(), kv.second.size())));
  }
  return ffi::Module(ffi::make_object<NPUModuleObj>(std::move(arts)));
}

}  // namespace
}  // namespace tvm_npu

TVM_FFI_STATIC_INIT_BLOCK() {
  tvm::ffi::reflection::GlobalDef()
      .def("ffi.Module.load_from_bytes.npu", tvm_npu::NPUModuleObj::FromBytes)
      .def("tvm_npu.runtime.create_module", tvm_npu::CreateModule)
      // ModuleObj::SaveToBytes has no Python binding in tvm-ffi 0.1.14; this one serves the tests and
      // "same model, same bytes" checks (the .so itself is not byte-reproducible).
      .def("tvm_npu.runtime.save_to_bytes", [](tvm::ffi::Module m) { return m->SaveToBytes(); });
}
