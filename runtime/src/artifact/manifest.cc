// manifest.json of artifact v1: strict parsing (the file comes from outside,
// and a fuzz target drives ParseArtifactManifest) and deterministic output.
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/runtime/artifact.h"
#include "nlohmann/json.hpp"
#include "src/artifact/manifest_util.h"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

using json = nlohmann::json;
using json_util::Sv;

absl::Status Field(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("manifest.json: ", Sv(field), ": ", Sv(problem)));
}

absl::StatusOr<const json*> Member(const json& obj, std::string_view where, const char* key, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) return Field(absl::StrCat(Sv(where), key), "missing");
    return nullptr;
  }
  return &*it;
}

absl::StatusOr<std::string> String(const json& obj, std::string_view where, const char* key, bool required = true) {
  LCD_ASSIGN_OR_RETURN(const json* v, Member(obj, where, key, required));
  if (v == nullptr) return std::string();
  if (!v->is_string()) {
    return Field(absl::StrCat(Sv(where), key), absl::StrCat("expected a string, got ", Sv(json_util::TypeName(*v))));
  }
  return v->get<std::string>();
}

absl::StatusOr<int64_t> Int(const json& obj, std::string_view where, const char* key, bool required = true) {
  LCD_ASSIGN_OR_RETURN(const json* v, Member(obj, where, key, required));
  if (v == nullptr) return 0;
  std::optional<int64_t> i = json_util::AsInt64(*v);
  if (!i) return Field(absl::StrCat(Sv(where), key), "expected an integer");
  return *i;
}

absl::StatusOr<const json*> Object(const json& obj, std::string_view where, const char* key, bool required) {
  LCD_ASSIGN_OR_RETURN(const json* v, Member(obj, where, key, required));
  if (v != nullptr && !v->is_object()) return Field(absl::StrCat(Sv(where), key), "expected an object");
  return v;
}

absl::StatusOr<const json*> Array(const json& obj, std::string_view where, const char* key) {
  LCD_ASSIGN_OR_RETURN(const json* v, Member(obj, where, key, true));
  if (!v->is_array()) return Field(absl::StrCat(Sv(where), key), "expected an array");
  return v;
}

// A file name inside the artifact directory: no directories, no "..".
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
         name.find('\0') == std::string::npos && name != kArtifactManifestFile;
}

bool IsSha256Hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<std::optional<kernels::QuantFormat>> ParseFormat(const std::string& name) {
  if (name == "dense") return std::optional<kernels::QuantFormat>();
  std::optional<kernels::QuantFormat> f = QuantFormatFromName(name);
  if (!f) return absl::InvalidArgumentError(absl::StrCat("unknown format \"", name, "\""));
  return f;
}

absl::StatusOr<ArtifactTensor> ParseTensor(const std::string& name, const json& v) {
  const std::string where = absl::StrCat("tensors[\"", name, "\"].");
  if (!v.is_object()) return Field(where, "expected an object");
  ArtifactTensor t;
  t.name = name;
  LCD_ASSIGN_OR_RETURN(t.format, String(v, where, "format"));
  auto format = ParseFormat(t.format);
  if (!format.ok()) return Field(absl::StrCat(where, "format"), std::string(format.status().message()));
  LCD_ASSIGN_OR_RETURN(const json* shape, Array(v, where, "shape"));
  if (shape->empty() || shape->size() > 8) return Field(absl::StrCat(where, "shape"), "rank must be 1..8");
  for (const json& d : *shape) {
    std::optional<int64_t> i = json_util::AsInt64(d);
    if (!i || *i <= 0 || *i > (int64_t{1} << 32)) {
      return Field(absl::StrCat(where, "shape"), "dimensions must be integers in [1, 2^32]");
    }
    t.shape.push_back(*i);
  }
  if (format->has_value()) {
    if (t.shape.size() != 2) return Field(absl::StrCat(where, "shape"), "a quantized tensor must be 2-D");
    LCD_ASSIGN_OR_RETURN(int64_t bits, Int(v, where, "bits"));
    LCD_ASSIGN_OR_RETURN(t.group_size, Int(v, where, "group_size"));
    if (bits < 0 || bits > 64) return Field(absl::StrCat(where, "bits"), "out of range");
    t.bits = static_cast<int>(bits);
    if (**format == kernels::QuantFormat::kLattice) {
      LCD_ASSIGN_OR_RETURN(int64_t dim, Int(v, where, "lattice_dim"));
      if (dim < 1 || dim > 32) return Field(absl::StrCat(where, "lattice_dim"), "must be in 1..32");
      t.lattice_dim = static_cast<int>(dim);
    } else if (v.contains("lattice_dim")) {
      return Field(absl::StrCat(where, "lattice_dim"), "only for the lattice format");
    }
    kernels::QuantLayout layout{**format, t.bits, t.shape[0], t.shape[1], t.group_size, t.lattice_dim};
    absl::Status valid = kernels::ValidateQuantLayout(layout);
    if (!valid.ok()) return Field(where, std::string(valid.message()));
  } else {
    for (const char* key : {"bits", "group_size"}) {
      if (v.contains(key)) return Field(absl::StrCat(where, key), "not allowed for a dense tensor");
    }
  }
  for (const auto& [key, unused] : v.items()) {
    if (key != "format" && key != "shape" && key != "bits" && key != "group_size" && key != "lattice_dim") {
      return Field(absl::StrCat(where, key), "unknown key");
    }
  }
  return t;
}

absl::StatusOr<std::map<std::string, std::string>> StringMap(const json& v, std::string_view where) {
  std::map<std::string, std::string> out;
  for (const auto& [k, val] : v.items()) {
    if (!val.is_string()) return Field(absl::StrCat(Sv(where), ".", k), "expected a string");
    out[k] = val.get<std::string>();
  }
  return out;
}

}  // namespace

std::optional<kernels::QuantFormat> QuantFormatFromName(std::string_view name) {
  for (kernels::QuantFormat f :
       {kernels::QuantFormat::kCodebook, kernels::QuantFormat::kAffine, kernels::QuantFormat::kBinaryCoded,
        kernels::QuantFormat::kLattice}) {
    if (name == kernels::QuantFormatName(f)) return f;
  }
  return std::nullopt;
}

absl::StatusOr<ArtifactManifest> ParseArtifactManifest(std::string_view text) {
  LCD_ASSIGN_OR_RETURN(json root, json_util::ParseJson(text, "manifest.json", 8));
  if (!root.is_object()) return Field("(root)", "expected an object");
  ArtifactManifest m;
  LCD_ASSIGN_OR_RETURN(std::string format, String(root, "", "format"));
  if (format != "lcd-artifact") return Field("format", "expected \"lcd-artifact\"");
  LCD_ASSIGN_OR_RETURN(int64_t version, Int(root, "", "format_version"));
  if (version > kArtifactFormatVersion) {
    return absl::UnimplementedError(absl::StrCat("manifest.json: format_version ", version,
                                                 " is newer than this reader (", kArtifactFormatVersion, ")"));
  }
  if (version < 1) return Field("format_version", "must be >= 1");
  m.format_version = static_cast<int>(version);

  LCD_ASSIGN_OR_RETURN(const json* config, Object(root, "", "model_config", true));
  m.model_config_json = config->dump();

  LCD_ASSIGN_OR_RETURN(const json* method, Object(root, "", "method", true));
  LCD_ASSIGN_OR_RETURN(m.method.name, String(*method, "method.", "name"));
  LCD_ASSIGN_OR_RETURN(int64_t bits, Int(*method, "method.", "bits"));
  if (bits < 0 || bits > 16) return Field("method.bits", "out of range");
  m.method.bits = static_cast<int>(bits);
  LCD_ASSIGN_OR_RETURN(m.method.group_size, Int(*method, "method.", "group_size"));
  LCD_ASSIGN_OR_RETURN(const json* mparams, Object(*method, "method.", "params", false));
  if (mparams != nullptr) {
    LCD_ASSIGN_OR_RETURN(m.method.params, StringMap(*mparams, "method.params"));
  }

  LCD_ASSIGN_OR_RETURN(const json* tensors, Object(root, "", "tensors", true));
  if (tensors->empty()) return Field("tensors", "empty");
  for (const auto& [name, v] : tensors->items()) {
    LCD_ASSIGN_OR_RETURN(ArtifactTensor t, ParseTensor(name, v));
    m.tensors.push_back(std::move(t));  // nlohmann objects iterate in key order.
  }

  std::set<std::string> file_names;
  LCD_ASSIGN_OR_RETURN(const json* files, Array(root, "", "files"));
  for (const json& f : *files) {
    if (!f.is_object()) return Field("files[]", "expected objects");
    ArtifactFile file;
    LCD_ASSIGN_OR_RETURN(file.path, String(f, "files[].", "path"));
    if (!IsPlainFileName(file.path)) {
      return Field("files[].path", absl::StrCat("\"", file.path, "\" is not a plain file name in the artifact"));
    }
    LCD_ASSIGN_OR_RETURN(int64_t bytes, Int(f, "files[].", "bytes"));
    if (bytes < 0) return Field("files[].bytes", "negative");
    file.bytes = static_cast<uint64_t>(bytes);
    LCD_ASSIGN_OR_RETURN(file.sha256, String(f, "files[].", "sha256"));
    if (!IsSha256Hex(file.sha256)) return Field("files[].sha256", "expected 64 lowercase hex digits");
    if (!file_names.insert(file.path).second) return Field("files[].path", absl::StrCat("duplicate ", file.path));
    m.files.push_back(std::move(file));
  }

  LCD_ASSIGN_OR_RETURN(const json* tok, Array(root, "", "tokenizer_files"));
  for (const json& t : *tok) {
    if (!t.is_string()) return Field("tokenizer_files[]", "expected strings");
    std::string name = t.get<std::string>();
    if (!file_names.count(name)) return Field("tokenizer_files[]", absl::StrCat(name, " is not listed in files"));
    m.tokenizer_files.push_back(std::move(name));
  }

  LCD_ASSIGN_OR_RETURN(const json* prov, Object(root, "", "provenance", true));
  LCD_ASSIGN_OR_RETURN(m.provenance.source_model, String(*prov, "provenance.", "source_model"));
  LCD_ASSIGN_OR_RETURN(m.provenance.source_sha256, String(*prov, "provenance.", "source_sha256", false));
  LCD_ASSIGN_OR_RETURN(m.provenance.tool, String(*prov, "provenance.", "tool"));
  LCD_ASSIGN_OR_RETURN(m.provenance.created_utc, String(*prov, "provenance.", "created_utc", false));
  LCD_ASSIGN_OR_RETURN(m.provenance.calibration, String(*prov, "provenance.", "calibration", false));
  if (auto it = prov->find("wall_seconds"); it != prov->end()) {
    if (!it->is_number()) return Field("provenance.wall_seconds", "expected a number");
    m.provenance.wall_seconds = it->get<double>();
  }

  LCD_ASSIGN_OR_RETURN(const json* acts, Object(root, "", "activations", false));
  if (acts != nullptr) {
    for (const auto& [key, unused] : acts->items()) {
      if (key != "bits" && key != "granularity" && key != "scheme") {
        return Field(absl::StrCat("activations.", key), "unknown key");
      }
    }
    LCD_ASSIGN_OR_RETURN(int64_t abits, Int(*acts, "activations.", "bits"));
    if (abits != 8) return Field("activations.bits", absl::StrCat("only 8 is supported, got ", abits));
    LCD_ASSIGN_OR_RETURN(std::string gran, String(*acts, "activations.", "granularity"));
    if (gran != "per_token") return Field("activations.granularity", absl::StrCat("expected \"per_token\", got \"", gran, "\""));
    LCD_ASSIGN_OR_RETURN(std::string scheme, String(*acts, "activations.", "scheme"));
    if (scheme != "symmetric_absmax") {
      return Field("activations.scheme", absl::StrCat("expected \"symmetric_absmax\", got \"", scheme, "\""));
    }
    m.activation_bits = static_cast<int>(abits);
  }

  LCD_ASSIGN_OR_RETURN(const json* quality, Object(root, "", "quality", false));
  if (quality != nullptr) {
    for (const auto& [k, v] : quality->items()) {
      if (!v.is_number()) return Field(absl::StrCat("quality.", k), "expected a number");
      m.quality[k] = v.get<double>();
    }
  }
  return m;
}

std::string SerializeArtifactManifest(const ArtifactManifest& m) {
  json root = json::object();
  root["format"] = "lcd-artifact";
  root["format_version"] = m.format_version;
  // The config was parsed once already; an unparsable one serialises as null.
  root["model_config"] = json::parse(m.model_config_json, nullptr, /*allow_exceptions=*/false);
  json method = json::object();
  method["name"] = m.method.name;
  method["bits"] = m.method.bits;
  method["group_size"] = m.method.group_size;
  method["params"] = m.method.params;
  root["method"] = method;
  if (m.activation_bits != 0) {
    root["activations"] = {{"bits", m.activation_bits}, {"granularity", "per_token"}, {"scheme", "symmetric_absmax"}};
  }
  json tensors = json::object();
  for (const ArtifactTensor& t : m.tensors) {
    json e = json::object();
    e["format"] = t.format;
    e["shape"] = t.shape;
    if (t.quantized()) {
      e["bits"] = t.bits;
      e["group_size"] = t.group_size;
      if (t.lattice_dim > 0) e["lattice_dim"] = t.lattice_dim;
    }
    tensors[t.name] = e;
  }
  root["tensors"] = tensors;
  json files = json::array();
  for (const ArtifactFile& f : m.files) files.push_back({{"path", f.path}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  root["files"] = files;
  root["tokenizer_files"] = m.tokenizer_files;
  root["provenance"] = {{"source_model", m.provenance.source_model},
                        {"source_sha256", m.provenance.source_sha256},
                        {"tool", m.provenance.tool},
                        {"created_utc", m.provenance.created_utc},
                        {"calibration", m.provenance.calibration},
                        {"wall_seconds", m.provenance.wall_seconds}};
  root["quality"] = m.quality;
  // Replacing invalid UTF-8 keeps dump() from throwing on odd paths.
  return root.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace lcd::runtime
