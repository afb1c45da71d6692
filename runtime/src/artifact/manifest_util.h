// Private helpers shared by the manifest parser and the artifact reader.
#ifndef LCD_RUNTIME_SRC_ARTIFACT_MANIFEST_UTIL_H_
#define LCD_RUNTIME_SRC_ARTIFACT_MANIFEST_UTIL_H_

#include <optional>
#include <string_view>

#include "lcd/kernels/quant_linear.h"
#include "lcd/runtime/artifact.h"

namespace lcd::runtime {

// The quantized format a manifest "format" string names; nullopt for "dense"
// and for unknown names (the parser has rejected those already).
std::optional<kernels::QuantFormat> QuantFormatFromName(std::string_view name);

// The kernels' layout of a quantized manifest entry.
inline kernels::QuantLayout LayoutOf(const ArtifactTensor& t) {
  return {*QuantFormatFromName(t.format), t.bits, t.shape[0], t.shape[1], t.group_size, t.lattice_dim};
}

}  // namespace lcd::runtime

#endif  // LCD_RUNTIME_SRC_ARTIFACT_MANIFEST_UTIL_H_
