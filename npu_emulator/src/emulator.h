// The NPU emulator core: validates an ISA v1 program, computes its timing with the discrete-event
// model of docs/ISA.md and executes it bit-exactly. No tvm-ffi types here; ffi_api.cc binds it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <array>
#include <string>
#include <vector>

#include "isa_gen.h"

namespace npu {

// Every refusal is an Error whose message starts with "instruction <i> (<mnemonic>): ",
// "program: " or "config: ".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Counters {
  int64_t cycles = 0;
  int64_t instructions = 0;
  int64_t queue_busy[isa::kNumQueue] = {};
  int64_t queue_stall[isa::kNumQueue] = {};
  int64_t unit_busy[isa::kNumUnit] = {};
  int64_t macs = 0;  // useful multiply-accumulates
  int64_t dma_read_bytes[isa::kNumRegion] = {};
  int64_t dma_write_bytes[isa::kNumRegion] = {};
  int64_t sram_high_water[isa::kNumSpace] = {};
  // Numeric events of the float results, per instruction that had any (program order):
  // (instruction index, values stored, overflows to inf, NaNs, underflows to zero, the largest finite
  // |value| written as float32 bits). See FpEvents.
  std::vector<std::array<int64_t, 6>> fp_events;
};

// The DRAM regions of one run. CONST is never modified: a program storing to it writes a private
// copy. IO is modified in place. SCRATCH is allocated zero-filled by the run.
struct DramRegions {
  const uint8_t* const_data = nullptr;
  size_t const_size = 0;
  uint8_t* io = nullptr;
  size_t io_size = 0;
  size_t scratch_size = 0;
};

// Throws Error unless every field is in [1, 2^31) and the SRAM sizes are multiples of 16.
void ValidateConfig(const isa::Config& cfg);

// Validates the whole program (format, fields, shapes, bounds, tokens/deadlock), then executes it.
// If trace is non-null it receives (instruction index, queue, start, end) per instruction in program
// order. Throws Error; on a validation error nothing has been executed.
Counters Run(const isa::Config& cfg, const uint8_t* program, size_t program_size, const DramRegions& dram,
             std::vector<int64_t>* trace);

// Everything Run does except executing: validation (format, fields, shapes, bounds against the
// region sizes in dram, tokens/deadlock) and the timing and counters, which do not depend on data.
// The data pointers of dram are not used.
Counters Check(const isa::Config& cfg, const uint8_t* program, size_t program_size, const DramRegions& dram,
               std::vector<int64_t>* trace);

}  // namespace npu
