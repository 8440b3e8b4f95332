// C++ reader of the NPU artifact (docs/ARTIFACT.md), mirroring tvm_npu.artifact.Artifact.deserialize
// for everything the runtime uses. Every malformed input throws tvm::ffi::Error (ValueError) whose
// message names what is wrong; nothing is read outside the buffer.
#pragma once
#include <dlpack/dlpack.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "isa_gen.h"

namespace tvm_npu {

struct IOEntry {
  std::string name;
  bool is_input = true;
  std::string dtype;  // one of int8, uint8, int16, int32, float16, float32
  DLDataType dl_dtype{};
  std::vector<int64_t> shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
};

struct ProvenanceEntry {
  int64_t start = 0, end = 0;  // half-open instruction range
  std::string op, source;
};

// A validated artifact. Owns its bytes; program and constants are views into them.
struct Artifact {
  std::string bytes;
  npu::isa::Config config;
  std::vector<IOEntry> io;  // in META order
  uint64_t io_bytes = 0;
  uint64_t scratch_bytes = 0;
  std::vector<ProvenanceEntry> provenance;
  size_t prog_offset = 0, prog_size = 0;
  size_t const_offset = 0, const_size = 0;
  int64_t num_instructions = 0;
  // What a run does when its float results overflow to inf or become NaN (META.producer.fp16_overflow,
  // CompileOptions.fp16_overflow): "error" (the call fails), "warn" or "ignore"; "warn" when absent.
  std::string fp16_overflow = "warn";

  const uint8_t* program() const { return reinterpret_cast<const uint8_t*>(bytes.data()) + prog_offset; }
  const uint8_t* constants() const { return reinterpret_cast<const uint8_t*>(bytes.data()) + const_offset; }
};

// Parses and validates a whole artifact; throws ValueError prefixed with "artifact: ".
Artifact ParseArtifact(std::string bytes);

// zlib's CRC-32 (the one Python's zlib.crc32 computes).
uint32_t Crc32(const uint8_t* data, size_t size);

}  // namespace tvm_npu
