#include "lcd/server/model_registry.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include <system_error>

#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/base/status_macros.h"
#include "lcd/runtime/artifact.h"
#include "lcd/server/request_validation.h"
#include "lcd/server/roots.h"

namespace lcd::server {
namespace {

namespace fs = std::filesystem;

// Longest load error kept for ListModels/GetModelStatus.
constexpr size_t kMaxStoredErrorBytes = 1024;
// A model directory with more entries than this, or deeper, is refused.
constexpr int64_t kMaxScannedEntries = 100000;
constexpr int kMaxScanDepth = 8;

// Walks a model directory without following directory symlinks: every entry
// must be a regular file or a directory, every symlink must resolve (and,
// when `roots` is non-empty, stay inside them). Returns the bytes of the
// regular files: the estimate of the weights' memory.
absl::StatusOr<uint64_t> ScanModelDir(const fs::path& dir, const std::vector<fs::path>& roots) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec);
  if (ec) return FsError(ec, "cannot list model directory", dir);
  uint64_t bytes = 0;
  int64_t entries = 0;
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return FsError(ec, "cannot list model directory", dir);
    if (++entries > kMaxScannedEntries || it.depth() >= kMaxScanDepth) {
      return absl::FailedPreconditionError(
          absl::StrCat("model directory '", ShowPath(dir), "' is too large or too deep"));
    }
    const fs::path& p = it->path();
    const std::string rel = p.lexically_relative(dir).string();
    fs::file_status st = fs::symlink_status(p, ec);
    if (ec) return FsError(ec, "cannot stat", p);
    if (fs::is_symlink(st)) {
      const fs::path target = fs::canonical(p, ec);
      if (ec) return FsError(ec, absl::StrCat("symlink '", Echo(rel), "' does not resolve:"), p);
      if (!roots.empty() && !UnderAnyRoot(target, roots)) {
        return absl::PermissionDeniedError(
            absl::StrCat("'", Echo(rel), "' links outside the model roots"));
      }
      st = fs::status(target, ec);
      if (ec) return FsError(ec, "cannot stat", target);
      if (fs::is_directory(st)) continue;  // Not descended into (not followed).
      if (fs::is_regular_file(st)) bytes += fs::file_size(target, ec);
    } else if (fs::is_regular_file(st)) {
      bytes += it->file_size(ec);
    }
    if (ec) return FsError(ec, "cannot stat", p);
    if (!fs::is_regular_file(st) && !fs::is_directory(st)) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", Echo(rel), "' in the model directory is not a regular file"));
    }
  }
  return bytes;
}

// Runs `fn`; an exception escaping it (none should) becomes Internal instead
// of terminating the process.
absl::Status Guarded(const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
  } catch (...) {
    return absl::InternalError("unexpected error");
  }
}

// Quantized artifacts carry a manifest.json; plain checkpoints do not. Only
// the descriptive fields are read here (the runtime reads the rest), and a
// malformed manifest is left for the runtime's loader to reject.
// The quantization an artifact directory declares (artifact v1 manifest,
// lcd/runtime/artifact.h); plain checkpoints keep the defaults ("none").
void ReadManifestInfo(const std::string& dir, ModelInstance* inst) {
  std::ifstream in(std::filesystem::path(dir) / "manifest.json");
  if (!in) return;
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<runtime::ArtifactManifest> m = runtime::ParseArtifactManifest(ss.str());
  if (!m.ok()) return;  // Model::Load verified it; a race with a rewrite only loses the label
  inst->quant_method = m->method.name;
  inst->quant_bits = m->method.bits;
  inst->quant_group_size = static_cast<int>(m->method.group_size);
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

ModelRegistry::ModelRegistry(ModelRegistryOptions options) : options_(std::move(options)) {
  absl::MutexLock lock(&join_mu_);
  for (int i = 0; i < std::max(1, options_.worker_threads); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ModelRegistry::~ModelRegistry() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
  }
  cancel_ = true;
  JoinWorkers();
}

bool ModelRegistry::Cancelled() const {
  return cancel_.load() || (options_.stop != nullptr && options_.stop->load());
}

void ModelRegistry::WorkerLoop() {
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](ModelRegistry* r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return !r->jobs_.empty() || r->stop_workers_;
          },
          this));
      if (jobs_.empty()) return;  // stop_workers_ and nothing left.
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

void ModelRegistry::JoinWorkers() {
  {
    absl::MutexLock lock(&mu_);
    stop_workers_ = true;
  }
  absl::MutexLock lock(&join_mu_);
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void ModelRegistry::Enqueue(std::function<void()> job,
                            const std::function<void(absl::Status)>& refuse) {
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_ || stop_workers_) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (jobs_.size() >= options_.max_queued_jobs) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat(jobs_.size(), " LoadModel/UnloadModel calls are already queued"));
    } else {
      jobs_.push_back(std::move(job));
    }
  }
  if (!refused.ok()) refuse(refused);
}

void ModelRegistry::Notify(const std::string& name, bool serving) const {
  if (options_.on_serving_change) options_.on_serving_change(name, serving);
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelRegistry::LoadInstance(
    const std::string& name, const std::string& path, std::string version) const {
  auto inst = std::make_shared<ModelInstance>();
  inst->name = name;
  inst->path = path;

  runtime::ModelOptions mopts;
  mopts.backend = options_.backend;
  mopts.cancelled = [this] { return Cancelled(); };
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Model> model, runtime::Model::Load(path, mopts));
  inst->model = std::move(model);
  // After Model::Load, which has vetted manifest.json when there is one.
  ReadManifestInfo(path, inst.get());
  inst->version = std::move(version);
  if (Cancelled()) return absl::CancelledError("model load cancelled before the tokenizer");
  LCD_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Tokenizer> tok, runtime::LoadTokenizer(path));
  inst->tokenizer = std::move(tok);
  if (Cancelled()) return absl::CancelledError("model load cancelled before the engine");

  runtime::EngineOptions eopts = options_.engine;
  eopts.observer = nullptr;
  if (options_.metrics != nullptr) {
    inst->observer = options_.metrics->NewObserver(name, inst->version);
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

void ModelRegistry::MakeRoomLocked() {
  size_t inactive = 0;
  auto oldest = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const Entry& e = it->second;
    if (e.current != nullptr || e.loading) continue;
    ++inactive;
    if (oldest == entries_.end() || e.last_change < oldest->second.last_change) oldest = it;
  }
  if (inactive >= kMaxInactiveEntries) entries_.erase(oldest);
}

uint64_t ModelRegistry::MemoryInUseLocked() const {
  uint64_t bytes = 0;
  for (const auto& [name, e] : entries_) {
    bytes += e.reserved;
    if (e.current != nullptr) bytes += e.current->memory_bytes;
  }
  return bytes;
}

absl::Status ModelRegistry::Load(const std::string& name, const std::string& path,
                                 const std::string& version, absl::Duration drain_old) {
  return LoadImpl(name, path, version, drain_old, /*confine=*/false);
}

absl::Status ModelRegistry::LoadImpl(const std::string& name, const std::string& path,
                                     const std::string& version, absl::Duration drain_old,
                                     bool confine) {
  LCD_RETURN_IF_ERROR(ValidateModelName(name, "model name"));
  if (path.empty()) return absl::InvalidArgumentError("model path is empty");
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("model path contains a NUL byte");
  }
  // Special files and unresolvable symlinks are refused before any loader
  // opens them; the file sizes estimate the weights' memory.
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", ShowPath(path), "' does not exist"));
  }
  if (ec) return FsError(ec, "model directory", path);
  if (!fs::is_directory(st)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model path '", ShowPath(path), "' is not a directory"));
  }
  const std::vector<fs::path> roots =
      confine ? CanonicalRoots(options_.model_roots) : std::vector<fs::path>{};
  LCD_ASSIGN_OR_RETURN(const uint64_t file_bytes, ScanModelDir(path, roots));
  const uint64_t estimate = file_bytes + options_.engine.kv_cache_bytes;

  std::string ver = version;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    const bool is_new = entries_.find(name) == entries_.end();
    if (is_new) MakeRoomLocked();
    Entry& e = entries_[name];
    if (e.loading) {
      return absl::FailedPreconditionError(absl::StrCat("model '", name, "' is already loading"));
    }
    absl::Status refused;
    if (e.current == nullptr) {
      int64_t active = 0;
      for (const auto& [n, other] : entries_) active += other.current != nullptr || other.loading;
      if (active >= options_.max_loaded_models) {
        refused = absl::ResourceExhaustedError(absl::StrCat(
            active, " models are loaded or loading; max_loaded_models is ",
            options_.max_loaded_models, " (unload one first)"));
      }
    }
    const uint64_t in_use = MemoryInUseLocked();
    if (refused.ok() && options_.max_model_memory_bytes > 0 &&
        in_use + estimate > options_.max_model_memory_bytes) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "loading '", name, "' needs about ", estimate, " bytes; ", in_use, " of ",
          options_.max_model_memory_bytes, " (max_model_memory_bytes) are in use"));
    }
    if (!refused.ok()) {
      if (is_new) entries_.erase(name);
      return refused;
    }
    e.loading = true;
    e.reserved = estimate;
    e.loads++;
    e.last_change = ++changes_;
    if (e.current == nullptr) {
      e.state = ModelState::kLoading;
      e.path = path;
    }
    if (ver.empty()) ver = absl::StrCat("load-", e.loads);  // never mistaken for a store version number
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
    e.reserved = 0;
    e.last_change = ++changes_;
    if (loaded.ok() && options_.max_model_memory_bytes > 0 &&
        MemoryInUseLocked() + (*loaded)->memory_bytes > options_.max_model_memory_bytes) {
      old = std::move(*loaded);  // Freed below, outside the lock.
      loaded = absl::ResourceExhaustedError(absl::StrCat(
          "model '", name, "' takes ", old->memory_bytes, " bytes; with the ", MemoryInUseLocked(),
          " in use that exceeds max_model_memory_bytes (", options_.max_model_memory_bytes, ")"));
    }
    if (!loaded.ok()) {
      // The status may quote file contents: keep it valid UTF-8 and short.
      e.error = SanitizeUtf8(loaded.status().message(), kMaxStoredErrorBytes);
      // A failed hot swap leaves the old version serving.
      if (e.current == nullptr) e.state = ModelState::kFailed;
      LCD_LOG(ERROR) << "model " << name << ": load of " << ShowPath(path) << " failed: " << e.error;
      return absl::Status(loaded.status().code(), e.error);
    }
    if (shutting_down_) {
      old = std::move(*loaded);  // Raced with Shutdown: free it again.
      e.error = "load finished after shutdown began";
      return absl::UnavailableError("server is shutting down");
    }
    old = std::move(e.current);
    e.current = std::move(*loaded);
    e.state = ModelState::kReady;
    e.path = path;
    e.error.clear();
  }
  if (options_.metrics != nullptr) {
    options_.metrics->RecordModelLoad(name, seconds);
    std::shared_ptr<ModelInstance> now = Get(name).value_or(nullptr);
    if (now != nullptr) {
      options_.metrics->RecordServing(name, now->version, now->quant_method, now->quant_bits, now->quant_group_size);
    }
  }
  LCD_LOG(INFO) << "model " << name << ": READY (version " << ver << ", " << seconds << " s)";
  Notify(name, true);
  if (old != nullptr) {
    LCD_LOG(INFO) << "model " << name << ": draining version " << old->version;
    Retire(std::move(old), drain_old);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelRegistry::ResolveClientPath(const std::string& path) const {
  LCD_RETURN_IF_ERROR(ValidateModelPath(path));
  if (options_.model_roots.empty()) {
    return absl::FailedPreconditionError(
        "LoadModel is disabled: the server has no model_roots configured");
  }
  return ResolveUnderRoots(options_.model_roots, path, PathKind::kDirectory, "model path", "model roots");
}

void ModelRegistry::Retire(std::shared_ptr<ModelInstance> instance, absl::Duration drain) const {
  // Requests still pinning the instance keep its memory alive, but their
  // engine has delivered a final event to each of them by now.
  instance->engine->Shutdown(drain);
  if (options_.metrics == nullptr) return;
  // A reload of the same version may already serve under these labels.
  absl::StatusOr<std::shared_ptr<ModelInstance>> now = Get(instance->name);
  if (now.ok() && *now != instance && (*now)->version == instance->version) return;
  options_.metrics->ForgetVersion(instance->name, instance->version);
}

absl::Status ModelRegistry::Unload(const std::string& name, absl::Duration drain) {
  std::shared_ptr<ModelInstance> inst;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.current == nullptr && it->second.loading) {
      return absl::FailedPreconditionError(absl::StrCat("model '", Echo(name), "' is loading"));
    }
    if (it != entries_.end() && it->second.state == ModelState::kFailed &&
        it->second.current == nullptr) {
      entries_.erase(it);  // Nothing to drain: forget the failed load.
      LCD_LOG(INFO) << "model " << name << ": failed entry removed";
      return absl::OkStatus();
    }
    if (it == entries_.end() || it->second.current == nullptr) {
      return absl::NotFoundError(absl::StrCat("model '", Echo(name), "' is not loaded"));
    }
    it->second.state = ModelState::kDraining;
    it->second.last_change = ++changes_;
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
                              std::function<void(absl::Status, ModelStatusInfo)> done, PathOrigin origin) {
  auto shared_done = std::make_shared<std::function<void(absl::Status, ModelStatusInfo)>>(
      std::move(done));
  Enqueue(
      [this, name, path, version, drain_old, shared_done, origin] {
        const absl::Status st = Guarded([&]() -> absl::Status {
          if (origin == PathOrigin::kServerChosen) return LoadImpl(name, path, version, drain_old, /*confine=*/false);
          LCD_ASSIGN_OR_RETURN(const std::string resolved, ResolveClientPath(path));
          return LoadImpl(name, resolved, version, drain_old, /*confine=*/true);
        });
        auto info = Status(name);
        (*shared_done)(st, info.ok() ? *info : ModelStatusInfo{});
      },
      [shared_done](absl::Status refused) { (*shared_done)(refused, ModelStatusInfo{}); });
}

void ModelRegistry::UnloadAsync(const std::string& name, absl::Duration drain,
                                std::function<void(absl::Status, ModelStatusInfo)> done) {
  auto shared_done = std::make_shared<std::function<void(absl::Status, ModelStatusInfo)>>(
      std::move(done));
  Enqueue(
      [this, name, drain, shared_done] {
        const absl::Status st = Guarded([&] { return Unload(name, drain); });
        auto info = Status(name);
        ModelStatusInfo out;
        if (info.ok()) {
          out = *info;
        } else if (st.ok()) {  // A removed failed entry.
          out.name = name;
          out.state = ModelState::kUnloaded;
        }
        (*shared_done)(st, out);
      },
      [shared_done](absl::Status refused) { (*shared_done)(refused, ModelStatusInfo{}); });
}

absl::StatusOr<std::shared_ptr<ModelInstance>> ModelRegistry::Get(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.state == ModelState::kUnloaded ||
      it->second.state == ModelState::kFailed) {
    return absl::NotFoundError(absl::StrCat("model '", Echo(name), "' is not loaded"));
  }
  if (it->second.state != ModelState::kReady || it->second.current == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("model '", Echo(name), "' is ", ModelStateName(it->second.state)));
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
    return absl::NotFoundError(absl::StrCat("model '", Echo(name), "' is unknown"));
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
    cancel_ = true;  // Loads in progress stop at their next phase.
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
    drains.emplace_back([this, inst = inst, drain] { Retire(inst, drain); });
  }
  for (auto& t : drains) t.join();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, e] : entries_) {
      e.current.reset();
      if (e.state == ModelState::kDraining) e.state = ModelState::kUnloaded;
    }
  }
  // Queued jobs now finish at once with Unavailable; a running load stops at
  // its next phase.
  JoinWorkers();
}

void ModelRegistry::SampleStats() const {
  if (options_.metrics == nullptr) return;
  // Under the lock: a version swapped out after this sample is retired (and
  // its gauges removed, ForgetVersion) only after the swap, so a sample never
  // brings a retired version's gauges back.
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [name, e] : entries_) {
    if (e.current != nullptr) options_.metrics->RecordEngineStats(name, e.current->version, e.current->engine->Stats());
  }
}

}  // namespace lcd::server
