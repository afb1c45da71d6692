// Name -> loaded model (Model + Tokenizer + Engine), with Triton's hot-swap
// order: the new version goes LOADING -> READY beside the old one, new
// requests switch to it, the old one goes DRAINING (its in-flight requests
// finish) and then UNLOADED (memory freed).
//
// Requests pin the version they started on by holding a
// shared_ptr<ModelInstance>; an instance's engine is shut down (drained)
// before it is released, so a request never sees its engine disappear.
//
// Thread safety: all methods are thread-safe. Load and Unload block the
// calling thread for as long as loading or draining takes; the gRPC layer
// calls them from worker threads (LoadAsync/UnloadAsync), never from a
// reaction.
#ifndef LCD_SERVER_MODEL_REGISTRY_H_
#define LCD_SERVER_MODEL_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lcd/runtime/backend.h"
#include "lcd/runtime/engine.h"
#include "lcd/runtime/model.h"
#include "lcd/runtime/tokenizer.h"
#include "lcd/server/server_metrics.h"

namespace lcd::server {

enum class ModelState { kLoading, kReady, kDraining, kUnloaded, kFailed };
std::string ModelStateName(ModelState s);

// One loaded version of a model. Immutable after construction except for
// the engine's own state.
struct ModelInstance {
  std::string name;
  std::string version;
  std::string path;
  std::string quant_method = "none";
  int quant_bits = 0;
  int quant_group_size = 0;
  int64_t max_context = 0;  // Prompt + output limit this instance accepts.
  uint64_t memory_bytes = 0;
  std::shared_ptr<runtime::Model> model;
  std::shared_ptr<const runtime::Tokenizer> tokenizer;
  // Declared before `engine` so it is destroyed after it: the engine thread
  // calls the observer until the engine is gone.
  std::unique_ptr<runtime::EngineObserver> observer;
  std::unique_ptr<runtime::Engine> engine;
};

struct ModelStatusInfo {
  std::string name;
  ModelState state = ModelState::kUnloaded;
  std::string version;
  std::string path;
  std::string quant_method;
  int quant_bits = 0;
  int quant_group_size = 0;
  uint64_t memory_bytes = 0;
  std::string error;
  int64_t running = 0;
  int64_t waiting = 0;
};

struct ModelRegistryOptions {
  runtime::EngineOptions engine;     // observer is replaced per model.
  // The one backend (thread pool, KV memory) every model of the process
  // runs on; null gives each model a CPU backend of its own.
  std::shared_ptr<runtime::Backend> backend;
  ServerMetrics* metrics = nullptr;  // Not owned; may be null.
  // Called (outside the registry lock) whenever a model starts or stops
  // being able to serve; the health service listens here.
  std::function<void(const std::string& name, bool serving)> on_serving_change;
};

class ModelRegistry {
 public:
  explicit ModelRegistry(ModelRegistryOptions options);
  ~ModelRegistry();  // Drains nothing: call Shutdown first. Joins workers.

  // Loads `path` as model `name` (hot swap when `name` is READY). `version`
  // may be empty (then the manifest's or a counter). Errors: InvalidArgument
  // for a bad name, NotFound/InvalidArgument from the loaders (missing or bad
  // files), FailedPrecondition while another load of `name` is running,
  // Unavailable after Shutdown.
  absl::Status Load(const std::string& name, const std::string& path, const std::string& version,
                    absl::Duration drain_old);
  // Stops admitting, drains up to `drain`, frees. NotFound for unknown or
  // already unloaded names.
  absl::Status Unload(const std::string& name, absl::Duration drain);

  // Runs Load/Unload on a registry-owned worker thread and reports the
  // result (plus the status afterwards) to `done` on that thread.
  void LoadAsync(const std::string& name, const std::string& path, const std::string& version,
                 absl::Duration drain_old, std::function<void(absl::Status, ModelStatusInfo)> done);
  void UnloadAsync(const std::string& name, absl::Duration drain,
                   std::function<void(absl::Status, ModelStatusInfo)> done);

  // The READY instance for `name`. NotFound when unknown or unloaded,
  // Unavailable while loading/draining or after Shutdown began.
  absl::StatusOr<std::shared_ptr<ModelInstance>> Get(const std::string& name) const;

  absl::StatusOr<ModelStatusInfo> Status(const std::string& name) const;
  std::vector<ModelStatusInfo> List() const;
  // True when at least one model is READY and Shutdown has not begun. (The
  // daemon adds "and start-up loading has finished"; a failed or slow
  // LoadModel of an extra model does not take the server out of rotation.)
  bool AnyReady() const;

  // Stops admitting (Get returns Unavailable), drains every engine in
  // parallel for up to `drain`, cancels what remains, frees the models.
  void Shutdown(absl::Duration drain);

  // Pushes each ready engine's Stats into the metrics gauges.
  void SampleStats() const;

 private:
  struct Entry {
    ModelState state = ModelState::kLoading;
    std::shared_ptr<ModelInstance> current;
    std::string path;
    std::string error;
    int64_t loads = 0;
    bool loading = false;  // A Load of this name is running.
  };

  absl::StatusOr<std::shared_ptr<ModelInstance>> LoadInstance(const std::string& name,
                                                              const std::string& path,
                                                              std::string version) const;
  static void Retire(std::shared_ptr<ModelInstance> instance, absl::Duration drain);
  ModelStatusInfo InfoLocked(const std::string& name, const Entry& e) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Notify(const std::string& name, bool serving) const;

  const ModelRegistryOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lcd::server

#endif  // LCD_SERVER_MODEL_REGISTRY_H_
