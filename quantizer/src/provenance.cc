#include "src/provenance.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/quantizer/quantize_model.h"
#include "lcd/runtime/artifact.h"

#ifndef LCD_VERSION_STRING
#define LCD_VERSION_STRING "unknown"
#endif

namespace lcd::quantizer {

std::string ToolVersionString() { return std::string("lcd ") + LCD_VERSION_STRING; }

namespace internal {
namespace fs = std::filesystem;

absl::StatusOr<std::string> SourceWeightsSha256(const std::string& model_dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(model_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.size() > 12 && name.ends_with(".safetensors")) files.push_back(name);
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list ", model_dir, ": ", ec.message()));
  if (files.empty()) return absl::NotFoundError(absl::StrCat(model_dir, " holds no *.safetensors file"));
  std::sort(files.begin(), files.end());
  // docs/ARTIFACT.md: sha256 of the concatenated hex digests, in file-name order.
  std::string listing;
  for (const std::string& f : files) {
    LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(model_dir + "/" + f));
    listing += sha;
  }
  return runtime::Sha256Hex(listing);
}

std::string UtcNowIso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string TextStem(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  const size_t dot = name.rfind('.');
  if (dot != std::string::npos && dot > 0) name.resize(dot);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name.empty() ? "text" : name;
}

std::string CalibrationFileProvenance(const std::string& path, const std::string& sha256, const std::string& detail) {
  return absl::StrCat("file:", std::filesystem::path(path).filename().string(), " sha256:", sha256,
                      detail.empty() ? "" : " ", detail);
}

}  // namespace internal
}  // namespace lcd::quantizer
