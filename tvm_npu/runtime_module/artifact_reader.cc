// C++ artifact reader: the same refusals as tvm_npu/artifact.py (docs/ARTIFACT.md "Validation on
// load"), so a module never holds an artifact the Python side would reject. The program itself is
// only checked structurally here (header, opcodes, lengths); npu::Run validates the rest.
#include "artifact_reader.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <sstream>
#include <tuple>

#include "emulator.h"

namespace tvm_npu {
namespace {

namespace json = tvm::ffi::json;
using tvm::ffi::Any;
using tvm::ffi::String;

constexpr size_t kHeaderSize = 16;  // magic, u16 format, u16 ISA, u32 count, u32 reserved
constexpr size_t kEntrySize = 24;   // tag, u32 CRC, u64 offset, u64 size
constexpr uint32_t kFormatVersion = 1;
constexpr int kMaxJsonDepth = 64;              // META nests 4 deep; deeper input could exhaust the stack
constexpr uint64_t kMaxRegionBytes = 1ull << 32;  // DRAM addresses are 32-bit in the ISA (as artifact.py)
const char* const kTags[] = {"META", "PROG", "CNST", "GOLD"};
constexpr size_t kNumTags = 4, kNumRequired = 3;

[[noreturn]] void Fail(const std::string& msg) {
  TVM_FFI_THROW(ValueError) << "artifact: " << msg;
  TVM_FFI_UNREACHABLE();
}

uint64_t ReadLE(const uint8_t* p, int n) {  // byte by byte: independent of host endianness and alignment
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

std::string Printable(const uint8_t* p, size_t n) {
  std::ostringstream os;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') os << char(p[i]);
    else os << "\\x" << "0123456789abcdef"[p[i] >> 4] << "0123456789abcdef"[p[i] & 15];
  }
  return os.str();
}

// Typed access to one JSON object; every error names the field path, like artifact.py's _Reader.
class Fields {
 public:
  Fields(const Any& v, std::string where) : where_(std::move(where)) {
    auto obj = v.as<json::Object>();
    if (!obj.has_value()) Fail(where_ + " must be a JSON object");
    obj_ = *obj;
  }
  bool Has(const char* key) const { return obj_.find(String(key)) != obj_.end(); }
  Any Raw(const char* key) const {
    auto it = obj_.find(String(key));
    if (it == obj_.end()) Fail(Path(key) + " is missing");
    return (*it).second;
  }
  int64_t Int(const char* key) const {  // bools are their own type in tvm-ffi, so true is refused
    Any v = Raw(key);
    if (v.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt) Fail(Path(key) + " must be an integer, got " + v.GetTypeKey());
    return v.cast<int64_t>();
  }
  std::string Str(const char* key) const {
    auto s = Raw(key).as<String>();  // covers heap and small strings
    if (!s.has_value()) Fail(Path(key) + " must be a string, got " + Raw(key).GetTypeKey());
    return std::string(*s);
  }
  json::Array List(const char* key) const {
    auto a = Raw(key).as<json::Array>();
    if (!a.has_value()) Fail(Path(key) + " must be a list, got " + Raw(key).GetTypeKey());
    return *a;
  }
  std::vector<int64_t> IntList(const char* key) const {
    std::vector<int64_t> out;
    for (const Any& v : List(key)) {
      if (v.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt) Fail(Path(key) + " must be a list of integers");
      out.push_back(v.cast<int64_t>());
    }
    return out;
  }
  const json::Object& obj() const { return obj_; }
  std::string Path(const std::string& key) const { return where_ + "." + key; }
  const std::string& where() const { return where_; }

 private:
  json::Object obj_;
  std::string where_;
};

// Same rules as ParseConfig in npu_emulator/src/ffi_api.cc (every integer field, nothing else),
// then the emulator's own range checks. Unlike there, "name" is required (a non-empty string), as
// NPUConfig.from_dict requires it; every artifact carries it.
npu::isa::Config ParseConfig(const Any& v) {
  Fields f(v, "META.config");
  npu::isa::Config cfg;
  for (const auto& kv : f.obj()) {
    auto key = kv.first.as<String>();
    if (!key.has_value()) Fail("META.config keys must be strings");
    if (*key == "name") continue;
    bool known = false;
    npu::isa::ForEachConfigField(&cfg, [&](const char* name, int64_t*) { known |= *key == name; });
    if (!known) Fail("META.config: unknown field " + std::string(*key));
  }
  if (f.Str("name").empty()) Fail("META.config.name must not be empty");
  npu::isa::ForEachConfigField(&cfg, [&](const char* name, int64_t* field) { *field = f.Int(name); });
  try {
    npu::ValidateConfig(cfg);
  } catch (const npu::Error& e) {
    Fail(std::string("META.") + e.what());  // the emulator's message starts with "config: "
  }
  return cfg;
}

bool IODType(const std::string& name, DLDataType* dt, uint64_t* itemsize) {
  static const std::tuple<const char*, uint8_t, uint8_t> kTable[] = {
      {"int8", kDLInt, 8},   {"uint8", kDLUInt, 8},      {"int16", kDLInt, 16},
      {"int32", kDLInt, 32}, {"float16", kDLFloat, 16}, {"float32", kDLFloat, 32}};
  for (const auto& [n, code, bits] : kTable) {
    if (name == n) {
      *dt = DLDataType{code, bits, 1};
      *itemsize = bits / 8;
      return true;
    }
  }
  return false;
}

void CheckQuant(const Fields& t, const std::vector<int64_t>& shape) {
  Fields q(t.Raw("quant"), t.Path("quant"));
  size_t nscale = 0;
  for (const Any& s : q.List("scale")) {
    int32_t ti = s.type_index();
    if (ti != tvm::ffi::TypeIndex::kTVMFFIInt && ti != tvm::ffi::TypeIndex::kTVMFFIFloat)
      Fail(q.Path("scale") + " must be a list of numbers");
    ++nscale;
  }
  size_t nzp = q.IntList("zero_point").size();
  Any axis = q.Raw("axis");
  if (nscale != nzp || nscale == 0) Fail(q.where() + ": scale and zero_point must be equally long, non-empty");
  if (axis.type_index() == tvm::ffi::TypeIndex::kTVMFFINone) {
    if (nscale != 1) Fail(q.where() + ": per-tensor quantisation needs exactly one scale");
    return;
  }
  if (axis.type_index() != tvm::ffi::TypeIndex::kTVMFFIInt) Fail(q.Path("axis") + " must be an integer or null");
  int64_t ax = axis.cast<int64_t>();
  if (ax < 0 || ax >= int64_t(shape.size()) || uint64_t(shape[ax]) != nscale)
    Fail(q.where() + ": per-axis quantisation must have one scale per element of axis");
}

IOEntry ParseIO(const Any& v, size_t i) {
  Fields t(v, "META.io[" + std::to_string(i) + "]");
  IOEntry e;
  e.name = t.Str("name");
  std::string kind = t.Str("kind");
  if (kind != "input" && kind != "output") Fail(t.Path("kind") + " must be 'input' or 'output', got '" + kind + "'");
  e.is_input = kind == "input";
  e.dtype = t.Str("dtype");
  uint64_t itemsize = 0;
  if (!IODType(e.dtype, &e.dl_dtype, &itemsize))
    Fail(t.Path("dtype") + " '" + e.dtype + "' is not one of int8, uint8, int16, int32, float16, float32");
  e.shape = t.IntList("shape");
  uint64_t n = itemsize;
  for (int64_t d : e.shape) {
    if (d < 0) Fail(t.where() + " (tensor '" + e.name + "'): negative dimension in shape");
    if (__builtin_mul_overflow(n, uint64_t(d), &n) || n > kMaxRegionBytes)
      Fail(t.where() + " (tensor '" + e.name + "'): shape is too large");
  }
  int64_t offset = t.Int("offset"), nbytes = t.Int("nbytes");
  if (offset < 0 || uint64_t(offset) > kMaxRegionBytes)
    Fail(t.Path("offset") + " " + std::to_string(offset) + " outside [0, 4 GiB]");
  if (nbytes < 0 || uint64_t(nbytes) != n)
    Fail(t.Path("nbytes") + " " + std::to_string(nbytes) + " disagrees with its dtype and shape (" + std::to_string(n) + ")");
  e.offset = uint64_t(offset);
  e.nbytes = n;
  t.Str("layout");
  if (t.Has("quant")) CheckQuant(t, e.shape);
  return e;
}

ProvenanceEntry ParseProvenance(const Any& v, size_t i, int64_t num_instructions) {
  Fields p(v, "META.provenance[" + std::to_string(i) + "]");
  ProvenanceEntry e{p.Int("start"), p.Int("end"), p.Str("op"), p.Str("source")};
  if (!(0 <= e.start && e.start < e.end && e.end <= num_instructions))
    Fail("provenance range [" + std::to_string(e.start) + ", " + std::to_string(e.end) + ") of '" + e.op +
         "' is outside the " + std::to_string(num_instructions) + "-instruction program");
  return e;
}

// The program's framing (docs/ISA.md): enough to know the instruction count and that every
// instruction is a known opcode of the right length. Field values are npu::Run's business.
int64_t CountInstructions(const uint8_t* p, size_t size) {
  if (size < npu::isa::kProgramHeaderSize) Fail("section PROG: truncated program header (" + std::to_string(size) + " bytes)");
  if (std::memcmp(p, npu::isa::kProgramMagic, 4) != 0) Fail("section PROG: bad program magic '" + Printable(p, 4) + "'");
  if (ReadLE(p + 4, 2) != npu::isa::kIsaVersion) Fail("section PROG: program ISA version " + std::to_string(ReadLE(p + 4, 2)));
  uint64_t count = ReadLE(p + 8, 4), nbytes = ReadLE(p + 12, 4);
  size_t off = npu::isa::kProgramHeaderSize;
  if (nbytes != size - off)
    Fail("section PROG: header says " + std::to_string(nbytes) + " bytes of instructions, " + std::to_string(size - off) + " present");
  for (uint64_t i = 0; i < count; ++i) {
    std::string where = "section PROG: instruction " + std::to_string(i);
    if (size - off < npu::isa::kInstrHeaderSize) Fail(where + ": truncated");
    const npu::isa::OpcodeInfo* op = npu::isa::LookupOpcode(p[off]);
    if (op == nullptr) Fail(where + ": unknown opcode " + std::to_string(p[off]));
    if (ReadLE(p + off + 2, 2) != op->size || size - off < op->size) Fail(where + " (" + op->mnemonic + "): bad length");
    if (p[off + 1] & ~0xF) Fail(where + " (" + op->mnemonic + "): unknown dependency flag bits");
    off += op->size;
  }
  if (off != size) Fail("section PROG: " + std::to_string(size - off) + " bytes after the declared instructions");
  return int64_t(count);
}

void CheckJsonNesting(const std::string& s) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) Fail("section META: JSON nested deeper than " + std::to_string(kMaxJsonDepth));
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

void ParseMeta(const std::string& text, Artifact* art) {
  CheckJsonNesting(text);
  String err;
  json::Value meta = json::Parse(String(text), &err);
  if (!err.empty()) Fail("section META is not valid JSON: " + std::string(err));
  Fields m(meta, "META");
  if (m.Int("format_version") != kFormatVersion || m.Int("isa_version") != npu::isa::kIsaVersion)
    Fail("META versions disagree with the artifact header");
  art->config = ParseConfig(m.Raw("config"));
  json::Array io = m.List("io");
  std::set<std::string> names;
  uint64_t end = 0;
  for (size_t i = 0; i < io.size(); ++i) {
    IOEntry e = ParseIO(io[i], i);
    if (!names.insert(e.name).second) Fail("IO tensor '" + e.name + "': duplicate name");
    end = std::max(end, e.offset + e.nbytes);  // both <= 4 GiB: no overflow
    art->io.push_back(std::move(e));
  }
  std::vector<const IOEntry*> spans;
  for (const IOEntry& e : art->io)
    if (e.nbytes) spans.push_back(&e);
  std::sort(spans.begin(), spans.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i]->offset < spans[i - 1]->offset + spans[i - 1]->nbytes)
      Fail("IO tensors '" + spans[i - 1]->name + "' and '" + spans[i]->name + "' overlap in the IO region");
  int64_t io_bytes = m.Int("io_bytes"), scratch = m.Int("scratch_bytes");
  if (io_bytes < 0 || uint64_t(io_bytes) != end)
    Fail("META.io_bytes " + std::to_string(io_bytes) + " disagrees with the IO table (" + std::to_string(end) + ")");
  if (end > kMaxRegionBytes) Fail("IO region of " + std::to_string(end) + " bytes is outside [0, 4 GiB]");
  if (scratch < 0 || uint64_t(scratch) > kMaxRegionBytes)
    Fail("META.scratch_bytes " + std::to_string(scratch) + " outside [0, 4 GiB]");
  art->io_bytes = end;
  art->scratch_bytes = uint64_t(scratch);
  json::Array prov = m.List("provenance");
  for (size_t i = 0; i < prov.size(); ++i) art->provenance.push_back(ParseProvenance(prov[i], i, art->num_instructions));
  if (!m.Raw("producer").as<json::Object>().has_value()) Fail("META.producer must be a JSON object");
  Fields producer(m.Raw("producer"), "META.producer");
  if (producer.Has("fp16_overflow")) {
    art->fp16_overflow = producer.Str("fp16_overflow");
    if (art->fp16_overflow != "error" && art->fp16_overflow != "warn" && art->fp16_overflow != "ignore")
      Fail("META.producer.fp16_overflow must be \"error\", \"warn\" or \"ignore\", got \"" + art->fp16_overflow + "\"");
  }
}

}  // namespace

uint32_t Crc32(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;  // reflected 0x04C11DB7
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

Artifact ParseArtifact(std::string bytes) {
  Artifact art;
  art.bytes = std::move(bytes);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(art.bytes.data());
  const size_t n = art.bytes.size();
  if (n < kHeaderSize) Fail("truncated: " + std::to_string(n) + " bytes, the header needs " + std::to_string(kHeaderSize));
  if (std::memcmp(b, "NPUA", 4) != 0) Fail("not an NPU artifact (magic '" + Printable(b, 4) + "', expected 'NPUA')");
  if (ReadLE(b + 4, 2) != kFormatVersion)
    Fail("format version " + std::to_string(ReadLE(b + 4, 2)) + "; this runtime reads " + std::to_string(kFormatVersion));
  if (ReadLE(b + 6, 2) != npu::isa::kIsaVersion)
    Fail("built for ISA v" + std::to_string(ReadLE(b + 6, 2)) + "; this runtime implements ISA v" +
         std::to_string(npu::isa::kIsaVersion));
  const uint64_t count = ReadLE(b + 8, 4);
  if (count > kNumTags || kHeaderSize + count * kEntrySize > n)
    Fail("section table of " + std::to_string(count) + " entries does not fit the " + std::to_string(n) + "-byte artifact");
  const size_t table_end = kHeaderSize + count * kEntrySize;
  size_t offsets[kNumTags] = {}, sizes[kNumTags] = {};
  bool seen[kNumTags] = {};
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* e = b + kHeaderSize + i * kEntrySize;
    size_t k = 0;
    while (k < kNumTags && std::memcmp(e, kTags[k], 4) != 0) ++k;
    if (k == kNumTags) Fail("section " + std::to_string(i) + ": unknown tag '" + Printable(e, 4) + "'");
    std::string tag = kTags[k];
    if (seen[k]) Fail("section " + tag + " appears twice");
    uint64_t off = ReadLE(e + 8, 8), size = ReadLE(e + 16, 8);
    if (off < table_end || off > n || size > n - off)  // written so that nothing can overflow
      Fail("section " + tag + ": offset " + std::to_string(off) + " size " + std::to_string(size) +
           " lies outside the " + std::to_string(n) + "-byte artifact");
    if (Crc32(b + off, size) != uint32_t(ReadLE(e + 4, 4))) Fail("section " + tag + ": CRC mismatch (corrupted artifact)");
    seen[k] = true;
    offsets[k] = off;
    sizes[k] = size;
  }
  for (size_t k = 0; k < kNumRequired; ++k)
    if (!seen[k]) Fail(std::string("missing section ") + kTags[k]);
  art.prog_offset = offsets[1];
  art.prog_size = sizes[1];
  art.const_offset = offsets[2];
  art.const_size = sizes[2];
  if (art.const_size > kMaxRegionBytes) Fail("CONST region of " + std::to_string(art.const_size) + " bytes is outside [0, 4 GiB]");
  art.num_instructions = CountInstructions(b + art.prog_offset, art.prog_size);
  ParseMeta(std::string(art.bytes, offsets[0], sizes[0]), &art);
  return art;
}

}  // namespace tvm_npu
