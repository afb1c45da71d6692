// Feeds arbitrary bytes to the safetensors parser, both as a whole file and
// as a bare header, and checks that whatever it accepts really is safe to
// index: tensors tile the data section, byte spans match shapes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lcd/runtime/safetensors.h"

namespace {

void CheckInvariants(const lcd::runtime::SafetensorsHeader& h, uint64_t data_size) {
  uint64_t expected = 0;
  for (const lcd::runtime::TensorInfo& t : h.tensors) {
    if (t.begin != expected || t.end < t.begin || t.end > data_size) std::abort();
    const uint64_t n = static_cast<uint64_t>(t.num_elements());
    if (t.end - t.begin != n * lcd::runtime::StDTypeSize(t.dtype)) std::abort();
    expected = t.end;
  }
  if (expected != data_size) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto file = lcd::runtime::ParseSafetensorsBuffer(bytes);
  if (file.ok()) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
    CheckInvariants(*file, size - 8 - n);
  }
  // The same bytes as a header, with a data size taken from the input so the
  // fuzzer can reach the offset checks without building a prefix.
  const uint64_t data_size = size > 0 ? data[0] * 4ull : 0;
  auto header = lcd::runtime::ParseSafetensorsHeader(bytes, data_size);
  if (header.ok()) CheckInvariants(*header, data_size);
  return 0;
}
