// AVX2 paged attention; the algorithm is in paged_attention_impl.inc.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/ops_cpu.h"
#include "cpu/vec_math_avx2.h"

namespace lcd::kernels::avx2 {

#include "cpu/paged_attention_impl.inc"

}  // namespace lcd::kernels::avx2
