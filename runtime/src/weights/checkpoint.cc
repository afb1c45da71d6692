#include "lcd/runtime/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lcd/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "src/json_util.h"

namespace lcd::runtime {
namespace {

using json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A shard must be a plain file name inside the model directory: an index
// from outside must not make us map arbitrary files ("../x", "/etc/x").
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  const std::string index_path = dir + "/" + kIndexFile;
  const std::string single_path = dir + "/" + kSingleFile;

  // tensor name -> shard file name, from the index (empty for a single file).
  std::map<std::string, std::string> weight_map;
  if (IsRegularFile(index_path)) {
    LCD_ASSIGN_OR_RETURN(std::string text, json_util::ReadTextFile(index_path));
    LCD_ASSIGN_OR_RETURN(json root, json_util::ParseJson(text, index_path));
    const json* wm = nullptr;
    if (root.is_object()) {
      auto it = root.find("weight_map");
      if (it != root.end() && it->is_object()) wm = &*it;
    }
    if (wm == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": expected an object with a \"weight_map\" object"));
    }
    for (const auto& [name, file] : wm->items()) {
      if (!file.is_string() || !IsPlainFileName(file.get<std::string>())) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": tensor \"", name, "\" maps to ", file.dump(),
                         ", which is not a plain file name inside the model directory"));
      }
      weight_map.emplace(name, file.get<std::string>());
    }
    if (weight_map.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is empty"));
    }
  } else if (!IsRegularFile(single_path)) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile, " exists"));
  }

  if (weight_map.empty()) {
    LCD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
    for (const TensorInfo& t : file->tensors()) {
      ckpt->sorted_.push_back({t.name, {0, &t}});
    }
    ckpt->files_.push_back(std::move(file));
  } else {
    std::map<std::string, size_t> shard_index;
    for (const auto& [name, shard] : weight_map) {
      if (shard_index.count(shard)) continue;
      auto file = SafetensorsFile::Open(dir + "/" + shard);
      if (!file.ok()) {
        // A missing shard is a broken checkpoint, not an absent one.
        if (absl::IsNotFound(file.status())) {
          return absl::InvalidArgumentError(absl::StrCat(
              index_path, ": shard \"", shard, "\" (holding \"", name, "\") does not exist"));
        }
        return file.status();
      }
      shard_index.emplace(shard, ckpt->files_.size());
      ckpt->files_.push_back(std::move(file).value());
    }
    for (const auto& [name, shard] : weight_map) {
      const size_t fi = shard_index.at(shard);
      const TensorInfo* t = ckpt->files_[fi]->Find(name);
      if (t == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor \"", name,
                                                       "\" is listed in shard \"", shard,
                                                       "\" but the shard does not contain it"));
      }
      ckpt->sorted_.push_back({name, {fi, t}});
    }
    // Tensors present in a shard but absent from the index are ignored, as
    // transformers does: the index is the checkpoint's table of contents.
  }
  std::sort(ckpt->sorted_.begin(), ckpt->sorted_.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < ckpt->sorted_.size(); ++i) {
    if (ckpt->sorted_[i].first == ckpt->sorted_[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": tensor \"", ckpt->sorted_[i].first, "\" appears twice"));
    }
  }
  return ckpt;
}

absl::StatusOr<TensorView> Checkpoint::Get(std::string_view name) const {
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), name,
                             [](const auto& e, std::string_view n) { return e.first < n; });
  if (it == sorted_.end() || it->first != name) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint has no tensor \"", json_util::Sv(name), "\""));
  }
  const auto& [file_index, info] = it->second;
  TensorView v;
  v.name = it->first;
  v.dtype = info->dtype;
  v.shape = info->shape;
  v.data = files_[file_index]->Data(*info);
  return v;
}

bool Checkpoint::Has(std::string_view name) const {
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), name,
                             [](const auto& e, std::string_view n) { return e.first < n; });
  return it != sorted_.end() && it->first == name;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(sorted_.size());
  for (const auto& e : sorted_) names.push_back(e.first);
  return names;
}

uint64_t Checkpoint::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& e : sorted_) total += e.second.second->end - e.second.second->begin;
  return total;
}

}  // namespace lcd::runtime
