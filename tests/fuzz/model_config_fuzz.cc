// Feeds arbitrary text to the config.json and generation_config.json
// parsers; an accepted config must satisfy the documented invariants.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lcd/runtime/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = lcd::runtime::ParseModelConfig(text);
  if (config.ok()) {
    const lcd::runtime::ModelConfig& c = *config;
    if (c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0 ||
        c.head_dim <= 0 || c.head_dim % 2 != 0) {
      std::abort();
    }
    // ParseModelConfig caps head_dim, so this allocation is bounded.
    auto inv_freq = c.RopeInvFreq();
    if (static_cast<int64_t>(inv_freq.size()) != c.head_dim / 2) std::abort();
  }
  (void)lcd::runtime::ParseGenerationConfig(text);
  return 0;
}
