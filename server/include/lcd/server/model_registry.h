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
// calls them through LoadAsync/UnloadAsync, which queue them to a fixed pool
// of registry workers (joined by Shutdown and the destructor), never from a
// reaction.
//
// Client loads (LoadAsync) only read directories under the configured model
// roots: the path is resolved (symlinks included) and must stay inside a
// root, and so must every symlink inside the model directory; special files
// (FIFOs, sockets, devices) are refused. No filesystem call throws: every
// failure is a Status.
#ifndef LCD_SERVER_MODEL_REGISTRY_H_
#define LCD_SERVER_MODEL_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <deque>
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
  // Directories LoadAsync may load from (absolute). Empty: LoadAsync refuses
  // every path (FailedPrecondition).
  std::vector<std::string> model_roots;
  // Distinct names with a model loaded or loading; beyond: ResourceExhausted.
  int64_t max_loaded_models = 8;
  // Weights + KV cache of all loaded models (estimated from the files before
  // a load, exact after); 0 = no limit. Beyond: ResourceExhausted.
  uint64_t max_model_memory_bytes = 0;
  // Loads in progress stop (Cancelled) once this turns true (SIGTERM during
  // start-up). Not owned; may be null.
  const std::atomic<bool>* stop = nullptr;
  int worker_threads = 2;      // Run LoadAsync/UnloadAsync jobs.
  size_t max_queued_jobs = 64;  // Beyond: ResourceExhausted.
};

// Failed and unloaded names kept for ListModels/GetModelStatus beyond the
// loaded ones; the oldest is forgotten when a new name needs room.
inline constexpr size_t kMaxInactiveEntries = 64;

class ModelRegistry {
 public:
  explicit ModelRegistry(ModelRegistryOptions options);
  ~ModelRegistry();  // Drains nothing: call Shutdown first. Joins workers.

  // Loads `path` as model `name` (hot swap when `name` is READY). `version`
  // may be empty (then "load-<n>", a load counter; the artifact watcher passes the store's version number). Errors: InvalidArgument
  // for a bad name, NotFound/InvalidArgument from the loaders (missing or bad
  // files), FailedPrecondition while another load of `name` is running,
  // Unavailable after Shutdown.
  absl::Status Load(const std::string& name, const std::string& path, const std::string& version,
                    absl::Duration drain_old);
  // Stops admitting, drains up to `drain`, frees. A FAILED name is
  // forgotten. NotFound for unknown or already unloaded names,
  // FailedPrecondition while the name's first load is running.
  absl::Status Unload(const std::string& name, absl::Duration drain);

  // `path` resolved and checked against the model roots (see the file
  // comment): the canonical directory. InvalidArgument for a malformed path,
  // PermissionDenied outside the roots, NotFound when it does not exist,
  // FailedPrecondition for a non-directory or a special file inside.
  absl::StatusOr<std::string> ResolveClientPath(const std::string& path) const;

  // Queue Load (after ResolveClientPath) or Unload to a registry worker,
  // which reports the result (plus the status afterwards) to `done`. When
  // the queue is full or Shutdown has begun, `done` runs at once on the
  // calling thread with ResourceExhausted or Unavailable. A path the server
  // chose itself (a version in the artifact store it follows) is
  // kServerChosen: loaded as Load does, without the client confinement.
  enum class PathOrigin { kClient, kServerChosen };
  void LoadAsync(const std::string& name, const std::string& path, const std::string& version,
                 absl::Duration drain_old, std::function<void(absl::Status, ModelStatusInfo)> done,
                 PathOrigin origin = PathOrigin::kClient);
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

  // Stops admitting (Get returns Unavailable), cancels loads in progress,
  // drains every engine in parallel for up to `drain`, cancels what remains,
  // frees the models, and joins the workers (queued jobs finish with
  // Unavailable).
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
    bool loading = false;        // A Load of this name is running.
    uint64_t reserved = 0;       // Estimated bytes of that load.
    int64_t last_change = 0;     // Sequence number; the oldest inactive goes first.
  };

  absl::StatusOr<std::shared_ptr<ModelInstance>> LoadInstance(const std::string& name,
                                                              const std::string& path,
                                                              std::string version) const;
  // Load; with `confine`, symlinks inside the directory must stay under the
  // model roots too (client loads).
  absl::Status LoadImpl(const std::string& name, const std::string& path,
                        const std::string& version, absl::Duration drain_old, bool confine);
  bool Cancelled() const;
  // Makes room for a new name: beyond kMaxInactiveEntries failed/unloaded
  // names, the oldest is forgotten.
  void MakeRoomLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t MemoryInUseLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Enqueue(std::function<void()> job, const std::function<void(absl::Status)>& refuse);
  void WorkerLoop();
  void JoinWorkers();
  // Drains and shuts down the instance's engine, then drops its gauges.
  void Retire(std::shared_ptr<ModelInstance> instance, absl::Duration drain) const;
  ModelStatusInfo InfoLocked(const std::string& name, const Entry& e) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Notify(const std::string& name, bool serving) const;

  const ModelRegistryOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> cancel_{false};
  // The worker pool: jobs_ is guarded by mu_; workers_ is only touched by
  // the constructor and JoinWorkers (under join_mu_).
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_workers_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex join_mu_;
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(join_mu_);
};

}  // namespace lcd::server

#endif  // LCD_SERVER_MODEL_REGISTRY_H_
