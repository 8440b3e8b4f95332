// The counters of a run as the tvm-ffi Map that npu_emulator.Counters reads: one definition for the
// emulator bindings (ffi_api.cc) and the runtime module (tvm_npu/runtime_module/npu_module.cc).
#pragma once
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>

#include "emulator.h"

namespace npu {

template <size_t N>
inline tvm::ffi::Array<int64_t> CounterArray(const int64_t (&v)[N]) {
  return tvm::ffi::Array<int64_t>(v, v + N);
}

inline tvm::ffi::Map<tvm::ffi::String, tvm::ffi::Any> CountersToMap(const Counters& c) {
  tvm::ffi::Map<tvm::ffi::String, tvm::ffi::Any> out;
  out.Set("cycles", c.cycles);
  out.Set("instructions", c.instructions);
  out.Set("queue_busy", CounterArray(c.queue_busy));
  out.Set("queue_stall", CounterArray(c.queue_stall));
  out.Set("unit_busy", CounterArray(c.unit_busy));
  out.Set("macs", c.macs);
  out.Set("dma_read_bytes", CounterArray(c.dma_read_bytes));
  out.Set("dma_write_bytes", CounterArray(c.dma_write_bytes));
  out.Set("sram_high_water", CounterArray(c.sram_high_water));
  tvm::ffi::Array<int64_t> fp;  // flat: 6 per instruction with numeric events (see Counters::fp_events)
  for (const auto& e : c.fp_events)
    for (int64_t v : e) fp.push_back(v);
  out.Set("fp_events", fp);
  return out;
}

}  // namespace npu
