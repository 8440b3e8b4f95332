// tvm-ffi bindings of the emulator: npu_emulator.execute (contract in npu_emulator/__init__.py).
// Every npu::Error becomes a Python ValueError.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstdlib>
#include <new>
#include <string>

#include "counters_map.h"
#include "emulator.h"

namespace {

using tvm::ffi::Any;
using tvm::ffi::Array;
using tvm::ffi::Map;
using tvm::ffi::String;

// Parses the JSON of tvm_npu.config.NPUConfig: every integer field present, a positive integer;
// "name" (a string) is ignored; anything else is refused.
npu::isa::Config ParseConfig(const String& text) {
  String err;
  tvm::ffi::json::Value value = tvm::ffi::json::Parse(text, &err);
  if (!err.empty()) TVM_FFI_THROW(ValueError) << "config: invalid JSON: " << err;
  auto obj = value.as<tvm::ffi::json::Object>();
  if (!obj.has_value()) TVM_FFI_THROW(ValueError) << "config: expected a JSON object";
  npu::isa::Config cfg;
  for (const auto& kv : *obj) {
    auto key = kv.first.as<String>();
    if (!key.has_value()) TVM_FFI_THROW(ValueError) << "config: keys must be strings";
    if (*key == "name") {
      if (!kv.second.as<String>().has_value())  // short strings are small-string Anys
        TVM_FFI_THROW(ValueError) << "config: name must be a string";
      continue;
    }
    bool known = false;
    npu::isa::ForEachConfigField(&cfg, [&](const char* name, int64_t*) { known |= *key == name; });
    if (!known) TVM_FFI_THROW(ValueError) << "config: unknown field " << *key;
  }
  npu::isa::ForEachConfigField(&cfg, [&](const char* name, int64_t* field) {
    auto it = obj->find(String(name));
    if (it == obj->end()) TVM_FFI_THROW(ValueError) << "config: missing field " << name;
    const Any& v = (*it).second;
    if (v.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt)
      TVM_FFI_THROW(ValueError) << "config: " << name << " must be an integer, got " << v.GetTypeKey();
    *field = v.cast<int64_t>();
  });
  return cfg;
}

struct CpuAlloc {
  void AllocData(DLTensor* t) {
    t->data = std::malloc(std::max<size_t>(tvm::ffi::GetDataSize(*t), 1));
    if (!t->data) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};


// Validation and timing without execution: the ISA's validator (tvm_npu.isa.validate).
Map<String, Any> Validate(String config_json, tvm::ffi::Bytes program, int64_t const_bytes, int64_t io_bytes,
                          int64_t scratch_bytes) {
  npu::isa::Config cfg = ParseConfig(config_json);
  for (int64_t v : {const_bytes, io_bytes, scratch_bytes})
    if (v < 0 || v > (int64_t(1) << 40)) TVM_FFI_THROW(ValueError) << "region size " << v << " outside [0, 2^40]";
  npu::DramRegions dram;  // sizes only: Check never touches data
  dram.const_size = size_t(const_bytes);
  dram.io_size = size_t(io_bytes);
  dram.scratch_size = size_t(scratch_bytes);
  try {
    return npu::CountersToMap(npu::Check(cfg, reinterpret_cast<const uint8_t*>(program.data()), program.size(), dram,
                                    nullptr));
  } catch (const npu::Error& e) {
    TVM_FFI_THROW(ValueError) << e.what();
  } catch (const std::bad_alloc&) {
    TVM_FFI_THROW(ValueError) << "program: out of memory";
  }
  return {};
}

Map<String, Any> Execute(String config_json, tvm::ffi::Bytes program, tvm::ffi::Bytes const_data,
                         tvm::ffi::TensorView io, int64_t scratch_bytes, bool trace) {
  npu::isa::Config cfg = ParseConfig(config_json);
  DLDataType dt = io.dtype();
  if (io.ndim() != 1 || dt.code != kDLUInt || dt.bits != 8 || dt.lanes != 1 || !io.IsContiguous() ||
      io.device().device_type != kDLCPU)
    TVM_FFI_THROW(ValueError) << "io must be a contiguous 1-D uint8 CPU tensor";
  if (scratch_bytes < 0 || scratch_bytes > (int64_t(1) << 40))
    TVM_FFI_THROW(ValueError) << "scratch_bytes " << scratch_bytes << " outside [0, 2^40]";
  npu::DramRegions dram;
  dram.const_data = reinterpret_cast<const uint8_t*>(const_data.data());
  dram.const_size = const_data.size();
  dram.io = static_cast<uint8_t*>(io.data_ptr()) + io.byte_offset();
  dram.io_size = size_t(io.numel());
  dram.scratch_size = size_t(scratch_bytes);

  std::vector<int64_t> rows;
  npu::Counters c;
  try {
    c = npu::Run(cfg, reinterpret_cast<const uint8_t*>(program.data()), program.size(), dram, trace ? &rows : nullptr);
  } catch (const npu::Error& e) {
    TVM_FFI_THROW(ValueError) << e.what();
  } catch (const std::bad_alloc&) {
    TVM_FFI_THROW(ValueError) << "program: out of memory";
  }

  Map<String, Any> out = npu::CountersToMap(c);
  if (trace) {
    int64_t shape[1] = {int64_t(rows.size())};
    tvm::ffi::Tensor t = tvm::ffi::Tensor::FromNDAlloc(CpuAlloc(), tvm::ffi::ShapeView(shape, 1),
                                                       DLDataType{kDLInt, 64, 1}, DLDevice{kDLCPU, 0});
    if (!rows.empty()) std::memcpy(t.data_ptr(), rows.data(), rows.size() * sizeof(int64_t));
    out.Set("trace", t);
  }
  return out;
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  tvm::ffi::reflection::GlobalDef().def("npu_emulator.execute", Execute).def("npu_emulator.validate", Validate);
}
