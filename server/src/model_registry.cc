#include "lcd/server/model_registry.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"

namespace lcd::server {
namespace {

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

// Quantized artifacts carry a manifest.json; plain checkpoints do not. Only
// the descriptive fields are read here (the runtime reads the rest), and a
// malformed manifest is left for the runtime's loader to reject.
void ReadManifestInfo(const std::string& dir, ModelInstance* inst, std::string* version) {
  std::ifstream in(std::filesystem::path(dir) / "manifest.json");
  if (!in) return;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) return;
  try {
    const nlohmann::json* q = &j;
    if (j.contains("quantization") && j["quantization"].is_object()) q = &j["quantization"];
    if (q->contains("method") && (*q)["method"].is_string()) {
      inst->quant_method = (*q)["method"].get<std::string>();
    }
    if (q->contains("bits") && (*q)["bits"].is_number_integer()) inst->quant_bits = (*q)["bits"];
    if (q->contains("group_size") && (*q)["group_size"].is_number_integer()) {
      inst->quant_group_size = (*q)["group_size"];
    }
    if (version->empty() && j.contains("version") && j["version"].is_string()) {
      *version = j["version"].get<std::string>();
    }
  } catch (const std::exception&) {  // Wrong types: keep the defaults.
  }
}

}  // namespace

std::string ModelStateName(ModelState s) {
  switch (s) {
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kReady:
      return "READY";
    case ModelState::kDraining:
      return "DRAINING";
    case ModelState::kUnloaded:
      return "UNLOADED";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

ModelRegistry::ModelRegistry(ModelRegistryOptions options) : options_(std::move(options)) {}

ModelRegistry::~ModelRegistry() {
  std::vector<std::thread> workers;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    workers.swap(workers_);
  }
  for (auto& t : workers) {
    if (t.joinable()) t.join();
  }
}

void ModelRegistry::Notify(const std::string& name, bool serving) const {
  if (options_.on_serving_change) options_.on_serving_change(name, serving);
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelRegistry::LoadInstance(
    const std::string& name, const std::string& path, std::string version) const {
  if (!std::filesystem::is_directory(path)) {
    return absl::NotFoundError(absl::StrCat("model directory '", path, "' does not exist"));
  }
  auto inst = std::make_shared<ModelInstance>();
  inst->name = name;
  inst->path = path;
  ReadManifestInfo(path, inst.get(), &version);
  inst->version = std::move(version);

  runtime::ModelOptions mopts;
  mopts.backend = options_.backend;
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, runtime::Model::Load(path, mopts));
  inst->model = std::move(model);
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tok, runtime::LoadTokenizer(path));
  inst->tokenizer = std::move(tok);

  runtime::EngineOptions eopts = options_.engine;
  eopts.observer = nullptr;
  if (options_.metrics != nullptr) {
    inst->observer = options_.metrics->NewObserver(name);
    eopts.observer = inst->observer.get();
  }
  const int64_t model_ctx = inst->model->config().ServableContext();
  inst->max_context =
      eopts.max_context > 0 && eopts.max_context < model_ctx ? eopts.max_context : model_ctx;
  eopts.max_context = inst->max_context;  // the server's limit caps each model's own
  LCD_ASSIGN_OR_RETURN(inst->engine, runtime::Engine::Create(inst->model, inst->tokenizer, eopts));
  inst->memory_bytes = inst->model->WeightBytes() + eopts.kv_cache_bytes;
  return inst;
}

absl::Status ModelRegistry::Load(const std::string& name, const std::string& path,
                                 const std::string& version, absl::Duration drain_old) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model name '", name, "' must be 1-128 characters of [A-Za-z0-9._-]"));
  }
  if (path.empty()) return absl::InvalidArgumentError("model path is empty");
  std::string ver = version;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    Entry& e = entries_[name];
    if (e.loading) {
      return absl::FailedPreconditionError(absl::StrCat("model '", name, "' is already loading"));
    }
    e.loading = true;
    e.loads++;
    if (e.current == nullptr) {
      e.state = ModelState::kLoading;
      e.path = path;
    }
    if (ver.empty()) ver = absl::StrCat(e.loads);
  }
  const absl::Time start = absl::Now();
  LCD_LOG(INFO) << "model " << name << ": loading " << path;
  auto loaded = LoadInstance(name, path, ver);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::shared_ptr<ModelInstance> old;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    e.loading = false;
    if (!loaded.ok()) {
      e.error = std::string(loaded.status().message());
      // A failed hot swap leaves the old version serving.
      if (e.current == nullptr) e.state = ModelState::kFailed;
      LCD_LOG(ERROR) << "model " << name << ": load of " << path << " failed: " << loaded.status();
      return loaded.status();
    }
    if (shutting_down_) {
      old = std::move(*loaded);  // Raced with Shutdown: free it again.
    } else {
      old = std::move(e.current);
      e.current = std::move(*loaded);
      e.state = ModelState::kReady;
      e.path = path;
      e.error.clear();
    }
  }
  if (options_.metrics != nullptr) options_.metrics->RecordModelLoad(name, seconds);
  LCD_LOG(INFO) << "model " << name << ": READY (version " << ver << ", " << seconds << " s)";
  Notify(name, true);
  if (old != nullptr) {
    LCD_LOG(INFO) << "model " << name << ": draining version " << old->version;
    Retire(std::move(old), drain_old);
  }
  return absl::OkStatus();
}

void ModelRegistry::Retire(std::shared_ptr<ModelInstance> instance, absl::Duration drain) {
  // Requests still pinning the instance keep its memory alive, but their
  // engine has delivered a final event to each of them by now.
  instance->engine->Shutdown(drain);
}

absl::Status ModelRegistry::Unload(const std::string& name, absl::Duration drain) {
  std::shared_ptr<ModelInstance> inst;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second.current == nullptr) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
    }
    it->second.state = ModelState::kDraining;
    inst = it->second.current;
  }
  Notify(name, false);
  LCD_LOG(INFO) << "model " << name << ": DRAINING";
  Retire(inst, drain);
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    if (e.current == inst) {
      e.current.reset();
      e.state = ModelState::kUnloaded;
    }
  }
  LCD_LOG(INFO) << "model " << name << ": UNLOADED";
  return absl::OkStatus();
}

void ModelRegistry::LoadAsync(const std::string& name, const std::string& path,
                              const std::string& version, absl::Duration drain_old,
                              std::function<void(absl::Status, ModelStatusInfo)> done) {
  absl::MutexLock lock(&mu_);
  workers_.emplace_back([this, name, path, version, drain_old, done = std::move(done)] {
    absl::Status st = Load(name, path, version, drain_old);
    auto info = Status(name);
    done(st, info.ok() ? *info : ModelStatusInfo{});
  });
}

void ModelRegistry::UnloadAsync(const std::string& name, absl::Duration drain,
                                std::function<void(absl::Status, ModelStatusInfo)> done) {
  absl::MutexLock lock(&mu_);
  workers_.emplace_back([this, name, drain, done = std::move(done)] {
    absl::Status st = Unload(name, drain);
    auto info = Status(name);
    done(st, info.ok() ? *info : ModelStatusInfo{});
  });
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelRegistry::Get(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.state == ModelState::kUnloaded ||
      it->second.state == ModelState::kFailed) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
  }
  if (it->second.state != ModelState::kReady || it->second.current == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("model '", name, "' is ", ModelStateName(it->second.state)));
  }
  return it->second.current;
}

ModelStatusInfo ModelRegistry::InfoLocked(const std::string& name, const Entry& e) const {
  ModelStatusInfo info;
  info.name = name;
  info.state = e.state;
  info.path = e.path;
  info.error = e.error;
  if (e.current != nullptr) {
    const ModelInstance& m = *e.current;
    info.version = m.version;
    info.path = m.path;
    info.quant_method = m.quant_method;
    info.quant_bits = m.quant_bits;
    info.quant_group_size = m.quant_group_size;
    info.memory_bytes = m.memory_bytes;
    const runtime::EngineStats stats = m.engine->Stats();
    info.running = stats.running;
    info.waiting = stats.waiting;
  }
  return info;
}

absl::StatusOr<ModelStatusInfo> ModelRegistry::Status(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end())
    return absl::NotFoundError(absl::StrCat("model '", name, "' is unknown"));
  return InfoLocked(name, it->second);
}

std::vector<ModelStatusInfo> ModelRegistry::List() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<ModelStatusInfo> out;
  for (const auto& [name, e] : entries_) out.push_back(InfoLocked(name, e));
  return out;
}

bool ModelRegistry::AnyReady() const {
  absl::ReaderMutexLock lock(&mu_);
  if (shutting_down_) return false;
  for (const auto& [name, e] : entries_) {
    if (e.state == ModelState::kReady) return true;
  }
  return false;
}

void ModelRegistry::Shutdown(absl::Duration drain) {
  std::vector<std::pair<std::string, std::shared_ptr<ModelInstance>>> live;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto& [name, e] : entries_) {
      if (e.current != nullptr) {
        e.state = ModelState::kDraining;
        live.emplace_back(name, e.current);
      }
    }
  }
  for (const auto& [name, inst] : live) Notify(name, false);
  // Drain in parallel so the total wait is one drain timeout, not one per model.
  std::vector<std::thread> drains;
  for (auto& [name, inst] : live) {
    drains.emplace_back([inst = inst, drain] { Retire(inst, drain); });
  }
  for (auto& t : drains) t.join();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, e] : entries_) {
      e.current.reset();
      if (e.state == ModelState::kDraining) e.state = ModelState::kUnloaded;
    }
  }
}

void ModelRegistry::SampleStats() const {
  if (options_.metrics == nullptr) return;
  std::vector<std::pair<std::string, std::shared_ptr<ModelInstance>>> live;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, e] : entries_) {
      if (e.current != nullptr) live.emplace_back(name, e.current);
    }
  }
  for (const auto& [name, inst] : live) {
    options_.metrics->RecordEngineStats(name, inst->engine->Stats());
  }
}

}  // namespace lcd::server
