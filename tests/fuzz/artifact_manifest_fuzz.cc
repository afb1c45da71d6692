// Feeds arbitrary text to the artifact manifest parser. An accepted manifest
// must survive a round trip: serialised and parsed again it is accepted and
// serialises to the same text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lcd/runtime/artifact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto manifest = lcd::runtime::ParseArtifactManifest(text);
  if (!manifest.ok()) return 0;
  const std::string once = lcd::runtime::SerializeArtifactManifest(*manifest);
  auto again = lcd::runtime::ParseArtifactManifest(once);
  if (!again.ok()) std::abort();
  if (lcd::runtime::SerializeArtifactManifest(*again) != once) std::abort();
  return 0;
}
