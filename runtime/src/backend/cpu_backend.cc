// The CPU backend: host memory for KV caches, one thread pool for kernels.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "lcd/kernels/ops.h"
#include "lcd/runtime/backend.h"

namespace lcd::runtime {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : pool_(num_threads) {}

  std::string Describe() const override {
    return absl::StrCat("cpu (", pool_.num_threads(), " threads, ",
                        std::string(kernels::IsaName(kernels::ActiveIsa())), ")");
  }

  kernels::ThreadPool* thread_pool() override { return &pool_; }

  absl::StatusOr<KvCache> CreateKvCache(int64_t num_layers, const kernels::KvLayout& layout,
                                        int64_t num_blocks) override {
    return KvCache::Create(num_layers, layout, num_blocks);
  }

 private:
  kernels::ThreadPool pool_;
};

}  // namespace

std::shared_ptr<Backend> NewCpuBackend(int num_threads) { return std::make_shared<CpuBackend>(num_threads); }

}  // namespace lcd::runtime
