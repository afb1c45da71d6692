#include "reference/ops_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace lcd::kernels::reference {

float LoadAsFloat(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kF16:
      return Fp16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(data)[i]);
  }
  return 0.0f;
}

void Linear(const float* x, int64_t m, const MatrixView& w, const float* bias, float* y,
            ThreadPool* pool) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  const size_t row_bytes = static_cast<size_t>(k) * DTypeSize(w.dtype);
  // The pool splits output columns so the reference stays usable as the
  // fallback on CPUs without AVX2.
  ParallelFor(pool, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const void* row = static_cast<const char*>(w.data) + j * row_bytes;
      for (int64_t r = 0; r < m; ++r) {
        const float* xr = x + r * k;
        float acc = 0.0f;
        for (int64_t i = 0; i < k; ++i) acc += xr[i] * LoadAsFloat(row, w.dtype, i);
        y[r * n + j] = acc + (bias ? bias[j] : 0.0f);
      }
    }
  });
}

void EmbeddingLookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out) {
  const size_t row_bytes = static_cast<size_t>(table.cols) * DTypeSize(table.dtype);
  for (int64_t t = 0; t < n; ++t) {
    const void* row = static_cast<const char*>(table.data) + ids[t] * row_bytes;
    for (int64_t i = 0; i < table.cols; ++i) {
      out[t * table.cols + i] = LoadAsFloat(row, table.dtype, i);
    }
  }
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float ss = 0.0f;
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void ApplyRope(float* x, int64_t num_tokens, int64_t num_heads, int64_t head_dim,
               const int32_t* positions, const float* inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x + (t * num_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        const float c = std::cos(angle);
        const float s = std::sin(angle);
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Add(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float mx = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void WriteKv(const float* k, const float* v, int64_t num_tokens, const int64_t* slots,
             const KvLayout& layout, void* k_pool, void* v_pool) {
  const int64_t row = layout.num_kv_heads * layout.head_dim;
  const size_t row_bytes = static_cast<size_t>(row) * DTypeSize(layout.dtype);
  for (int64_t t = 0; t < num_tokens; ++t) {
    ConvertFromF32(k + t * row, row, layout.dtype, static_cast<char*>(k_pool) + slots[t] * row_bytes);
    ConvertFromF32(v + t * row, row, layout.dtype, static_cast<char*>(v_pool) + slots[t] * row_bytes);
  }
}

void PagedAttention(const float* q, int64_t num_heads, const AttentionSeq* seqs, int64_t num_seqs,
                    const KvLayout& layout, const void* k_pool, const void* v_pool, float scale,
                    float* out, ThreadPool* pool) {
  const int64_t hd = layout.head_dim;
  const int64_t bs = layout.block_size;
  const int64_t group = num_heads / layout.num_kv_heads;
  const int64_t kv_row = layout.num_kv_heads * hd;
  const size_t row_bytes = static_cast<size_t>(kv_row) * DTypeSize(layout.dtype);
  std::vector<float> row(static_cast<size_t>(kv_row));
  // The row of `pool` at `slot`, widened to fp32 (one row at a time: simple
  // and exact, which is all the reference is for).
  auto load = [&](const void* pool, int64_t slot) {
    ConvertToF32(static_cast<const char*>(pool) + slot * row_bytes, layout.dtype, kv_row, row.data());
    return row.data();
  };
  for (int64_t s = 0; s < num_seqs; ++s) {
    const AttentionSeq& seq = seqs[s];
    std::vector<float> scores(seq.context_len);
    for (int64_t i = 0; i < seq.q_len; ++i) {
      const int64_t token = seq.q_offset + i;
      const int64_t pos = seq.context_len - seq.q_len + i;  // attends to 0..pos
      for (int64_t h = 0; h < num_heads; ++h) {
        const float* qv = q + (token * num_heads + h) * hd;
        const int64_t kvh = h / group;
        for (int64_t p = 0; p <= pos; ++p) {
          const int64_t slot = seq.block_table[p / bs] * bs + p % bs;
          const float* kv = load(k_pool, slot) + kvh * hd;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qv[d] * kv[d];
          scores[p] = dot * scale;
        }
        Softmax(scores.data(), pos + 1);
        float* o = out + (token * num_heads + h) * hd;
        std::fill(o, o + hd, 0.0f);
        for (int64_t p = 0; p <= pos; ++p) {
          const int64_t slot = seq.block_table[p / bs] * bs + p % bs;
          const float* vv = load(v_pool, slot) + kvh * hd;
          for (int64_t d = 0; d < hd; ++d) o[d] += scores[p] * vv[d];
        }
      }
    }
  }
}

}  // namespace lcd::kernels::reference
