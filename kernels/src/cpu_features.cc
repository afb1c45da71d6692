// Run-time ISA detection (CPUID + XGETBV) and the dispatch override.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "lcd/kernels/ops.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace lcd::kernels {
namespace {

#if defined(__x86_64__)
uint64_t ReadXcr0() {
  uint32_t eax, edx;
  // xgetbv with ecx = 0; spelled as asm so this file needs no -mxsave.
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

Isa DetectIsaUncached() {
#if defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return Isa::kReference;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool f16c = ecx & (1u << 29);
  const bool avx = ecx & (1u << 28);
  if (!osxsave || !avx || !fma || !f16c) return Isa::kReference;
  const uint64_t xcr0 = ReadXcr0();
  // The OS must save XMM and YMM state (bits 1, 2) for AVX, and also the
  // opmask and upper ZMM state (bits 5, 6, 7) for AVX-512.
  if ((xcr0 & 0x6) != 0x6) return Isa::kReference;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return Isa::kReference;
  const bool avx2 = ebx & (1u << 5);
  if (!avx2) return Isa::kReference;
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  if (avx512f && avx512dq && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6) return Isa::kAvx512;
  return Isa::kAvx2;
#else
  return Isa::kReference;
#endif
}

// Optional operator override for comparisons: LCD_KERNELS_ISA=reference|avx2|avx512
// (clamped to what the CPU supports).
Isa InitialIsa() {
  const Isa best = DetectIsa();
  const char* env = std::getenv("LCD_KERNELS_ISA");
  if (env == nullptr) return best;
  Isa wanted = best;
  if (std::strcmp(env, "reference") == 0) wanted = Isa::kReference;
  if (std::strcmp(env, "avx2") == 0) wanted = Isa::kAvx2;
  if (std::strcmp(env, "avx512") == 0) wanted = Isa::kAvx512;
  return static_cast<int>(wanted) <= static_cast<int>(best) ? wanted : best;
}

std::atomic<int>& ActiveIsaSlot() {
  static std::atomic<int> slot{static_cast<int>(InitialIsa())};
  return slot;
}

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kReference:
      return "reference";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

Isa DetectIsa() {
  static const Isa detected = DetectIsaUncached();
  return detected;
}

Isa ActiveIsa() { return static_cast<Isa>(ActiveIsaSlot().load(std::memory_order_relaxed)); }

Isa SetIsaForTesting(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(DetectIsa())) isa = DetectIsa();
  return static_cast<Isa>(ActiveIsaSlot().exchange(static_cast<int>(isa)));
}

}  // namespace lcd::kernels
