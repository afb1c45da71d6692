// Per-thread scratch memory for the ISA-specific kernels (see ops_cpu.h).
#include <vector>

#include "cpu/ops_cpu.h"

namespace lcd::kernels {

float* ThreadScratch(int slot, int64_t n) {
  constexpr int kSlots = 5;
  thread_local std::vector<float> buffers[kSlots];
  std::vector<float>& b = buffers[slot % kSlots];
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

}  // namespace lcd::kernels
