// Distillation checkpoints (contract in distill_checkpoint.h).
#include "src/distill_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "lcd/base/file_util.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/artifact.h"
#include "nlohmann/json.hpp"

namespace lcd::quantizer::internal {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormat = "lcd-distill-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kHeader = "checkpoint.json";

template <typename T>
std::string_view Bytes(const T* p, int64_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n) * sizeof(T));
}

// Payload files in dir: (serial, name).
std::vector<std::pair<int64_t, std::string>> Payloads(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("checkpoint-") || !name.ends_with(".bin")) continue;
    const std::string mid = name.substr(11, name.size() - 15);
    if (mid.empty() || !std::all_of(mid.begin(), mid.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    out.emplace_back(std::stoll(mid), name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status DataLoss(const std::string& path, std::string_view what) {
  return absl::DataLossError(absl::StrCat("checkpoint ", path, ": ", std::string(what),
                                          " (remove the --resume directory to start over)"));
}

}  // namespace

// The header's "state" object: one key per field, named as the field
// (blockwise_kl, optional, is written only when set; a key that a
// checkpoint of an earlier build lacks reads as the field's default).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DistillState, stage, next_block, step, gamma, init_cakld, init_kl,
                                                first_loss, last_loss, changed_total, proposals, accepted,
                                                ms_proposals, ms_accepted, ms_groups, kl_curve, rng, order, next, adam_steps,
                                                calibration)

absl::Status SaveDistillCheckpoint(const std::string& dir, const std::string& fingerprint, const DistillState& state,
                                   const DistillPayloadView& payload) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create checkpoint directory ", dir, ": ", ec.message()));
  const std::vector<std::pair<int64_t, std::string>> old = Payloads(dir);
  const int64_t serial = old.empty() ? 1 : old.back().first + 1;
  const std::string bin_name = absl::StrCat("checkpoint-", serial, ".bin");
  const std::string bin_path = (fs::path(dir) / bin_name).string();

  std::vector<std::string_view> chunks;
  json tensors = json::array(), codes = json::array();
  chunks.push_back(Bytes(payload.tokens->data(), static_cast<int64_t>(payload.tokens->size())));
  for (const auto& [name, view] : payload.tensors) {
    chunks.push_back(Bytes(view.first, view.second));
    tensors.push_back({{"name", name}, {"size", view.second}});
  }
  const bool adam = payload.adam_m != nullptr && payload.adam_v != nullptr;
  if (adam) {
    for (const float* moments : {payload.adam_m, payload.adam_v}) {
      for (size_t i = 0; i < payload.tensors.size(); ++i) {
        chunks.push_back(Bytes(moments + payload.tensor_offsets[i], payload.tensors[i].second.second));
      }
    }
  }
  for (const auto& [name, c] : payload.codes) {
    chunks.push_back(Bytes(c->data(), static_cast<int64_t>(c->size())));
    codes.push_back({{"name", name}, {"size", c->size()}});
  }
  LCD_RETURN_IF_ERROR(WriteFileAtomic(bin_path, chunks));
  uint64_t bytes = 0;
  for (std::string_view c : chunks) bytes += c.size();
  LCD_ASSIGN_OR_RETURN(std::string sha, runtime::Sha256File(bin_path));

  json h;
  h["format"] = kFormat;
  h["version"] = kVersion;
  h["fingerprint"] = fingerprint;
  h["payload"] = {{"file", bin_name}, {"bytes", bytes}, {"sha256", sha}};
  h["sequences"] = {{"count", payload.seq_count}, {"length", payload.seq_length}};
  h["tensors"] = tensors;
  h["adam_moments"] = adam;
  h["codes"] = codes;
  json s = state;
  if (state.blockwise_kl) s["blockwise_kl"] = *state.blockwise_kl;
  h["state"] = s;
  const std::string text = h.dump(1);
  LCD_RETURN_IF_ERROR(WriteFileAtomic((fs::path(dir) / kHeader).string(), {text}));
  for (const auto& [n, name] : old) fs::remove(fs::path(dir) / name, ec);  // Best effort: superseded.
  return absl::OkStatus();
}

absl::StatusOr<std::optional<DistillCheckpoint>> LoadDistillCheckpoint(const std::string& dir,
                                                                        const std::string& fingerprint) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create checkpoint directory ", dir, ": ", ec.message()));
  const std::string header_path = (fs::path(dir) / kHeader).string();
  if (!fs::exists(header_path, ec)) return std::optional<DistillCheckpoint>();
  std::ifstream in(header_path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", header_path));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json h = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object()) return DataLoss(header_path, "not a JSON object");
  DistillCheckpoint cp;
  std::string bin_path;
  uint64_t bytes = 0;
  std::string sha;
  std::vector<std::pair<std::string, int64_t>> tensor_sizes, code_sizes;
  bool adam = false;
  try {
    if (h.at("format").get<std::string>() != kFormat || h.at("version").get<int>() != kVersion) {
      return DataLoss(header_path, "not a version 1 lcd distillation checkpoint");
    }
    if (h.at("fingerprint").get<std::string>() != fingerprint) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the checkpoint in ", dir, " was made with other settings (",
          h.at("fingerprint").get<std::string>(), "; this run: ", fingerprint,
          "); remove it or give another --resume directory"));
    }
    const json& p = h.at("payload");
    const std::string file = p.at("file").get<std::string>();
    if (file.find('/') != std::string::npos || file.find("..") != std::string::npos) {
      return DataLoss(header_path, "payload file name leaves the directory");
    }
    bin_path = (fs::path(dir) / file).string();
    bytes = p.at("bytes").get<uint64_t>();
    sha = p.at("sha256").get<std::string>();
    cp.seq_count = h.at("sequences").at("count").get<int64_t>();
    cp.seq_length = h.at("sequences").at("length").get<int64_t>();
    for (const json& t : h.at("tensors")) {
      tensor_sizes.emplace_back(t.at("name").get<std::string>(), t.at("size").get<int64_t>());
    }
    for (const json& t : h.at("codes")) {
      code_sizes.emplace_back(t.at("name").get<std::string>(), t.at("size").get<int64_t>());
    }
    adam = h.at("adam_moments").get<bool>();
    const json& s = h.at("state");
    cp.state = s.get<DistillState>();
    if (s.contains("blockwise_kl")) cp.state.blockwise_kl = s.at("blockwise_kl").get<double>();
  } catch (const json::exception& e) {
    return DataLoss(header_path, e.what());
  }
  if ((cp.state.stage != "blockwise" && cp.state.stage != "kd") || cp.seq_count < 1 || cp.seq_length < 1 ||
      cp.state.step < 0 || cp.state.next_block < 0 || cp.state.next < 0) {
    return DataLoss(header_path, "state out of range");
  }
  // The payload: size, then sha256, then the pieces.
  const uintmax_t size = fs::file_size(bin_path, ec);
  if (ec) return DataLoss(bin_path, absl::StrCat("cannot stat: ", ec.message()));
  uint64_t want = static_cast<uint64_t>(cp.seq_count * cp.seq_length) * sizeof(int32_t);
  for (const auto& [name, n] : tensor_sizes) {
    if (n < 0) return DataLoss(header_path, "negative tensor size");
    want += static_cast<uint64_t>(n) * sizeof(float) * (adam ? 3 : 1);
  }
  for (const auto& [name, n] : code_sizes) {
    if (n < 0) return DataLoss(header_path, "negative code size");
    want += static_cast<uint64_t>(n);
  }
  if (size != bytes || bytes != want) {
    return DataLoss(bin_path, absl::StrCat("holds ", size, " bytes; the header says ", bytes, " and its layout ", want));
  }
  LCD_ASSIGN_OR_RETURN(std::string got, runtime::Sha256File(bin_path));
  if (got != sha) return DataLoss(bin_path, "sha256 does not match the header");
  std::ifstream bin(bin_path, std::ios::binary);
  auto read = [&](void* dst, uint64_t n) { return static_cast<bool>(bin.read(static_cast<char*>(dst), n)); };
  cp.tokens.resize(static_cast<size_t>(cp.seq_count * cp.seq_length));
  bool ok = read(cp.tokens.data(), cp.tokens.size() * sizeof(int32_t));
  for (const auto& [name, n] : tensor_sizes) {
    cp.tensors.emplace_back(name, std::vector<float>(static_cast<size_t>(n)));
    ok = ok && read(cp.tensors.back().second.data(), n * sizeof(float));
  }
  if (adam) {
    for (auto* moments : {&cp.adam_m, &cp.adam_v}) {
      for (const auto& [name, n] : tensor_sizes) {
        moments->emplace_back(static_cast<size_t>(n));
        ok = ok && read(moments->back().data(), n * sizeof(float));
      }
    }
  }
  for (const auto& [name, n] : code_sizes) {
    cp.codes.emplace_back(name, std::vector<uint8_t>(static_cast<size_t>(n)));
    ok = ok && read(cp.codes.back().second.data(), n);
  }
  if (!ok) return DataLoss(bin_path, "short read");
  return std::optional<DistillCheckpoint>(std::move(cp));
}

}  // namespace lcd::quantizer::internal
