// Batched forward pass of the Llama-family decoder, following transformers'
// modeling_llama.py / modeling_qwen2.py. All tokens of all sequences in a
// step form one [num_tokens][hidden] activation matrix, so every Linear is a
// single call with m = num_tokens (each weight row is read once per step).
#include "src/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lcd/base/status_macros.h"
#include "lcd/kernels/act_quant.h"

namespace lcd::runtime {
namespace {

void Grow(std::vector<float>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
}

}  // namespace

LlamaModel::LlamaModel(ModelConfig config, std::unique_ptr<TensorSource> source, LlamaWeights weights,
                       std::shared_ptr<Backend> backend)
    : config_(std::move(config)),
      source_(std::move(source)),
      weights_(std::move(weights)),
      backend_(std::move(backend)),
      pool_(backend_->thread_pool()),
      inv_freq_(config_.RopeInvFreq()) {
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    const LlamaLayerWeights& l = weights_.layers[i];
    for (const LinearWeight* w : {l.qkv.get(), l.o_proj.get(), l.gate_up.get(), l.down_proj.get()}) {
      weight_bytes_ += w->BytesRead();
    }
    const std::string p = absl::StrCat("model.layers.", i, ".");
    qkv_names_.push_back({p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"});
    o_names_.push_back({p + "self_attn.o_proj.weight"});
    gate_up_names_.push_back({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    down_names_.push_back({p + "mlp.down_proj.weight"});
  }
  weight_bytes_ += weights_.lm_head->BytesRead();
}

void LlamaModel::ResetInput(const float* x, int64_t m, int64_t cols, bool quantized_linear) {
  if (act_bits_ == 8 && quantized_linear) {
    Grow(x_q_, m * cols);
    kernels::FakeQuantizeInt8PerToken(x, m, cols, x_q_.data());
    x = x_q_.data();
  }
  in_.Reset(x, m, cols);
}

void LlamaModel::Observe(const std::vector<std::string>& names, const LinearInput& in) const {
  if (!observer_) return;
  for (const std::string& n : names) observer_(n, in.x(), in.m(), in.cols());
}

kernels::KvLayout LlamaModel::KvLayoutFor(int64_t block_size, kernels::DType dtype) const {
  kernels::KvLayout layout;
  layout.dtype = dtype;
  layout.block_size = block_size;
  layout.num_kv_heads = config_.num_kv_heads;
  layout.head_dim = config_.head_dim;
  return layout;
}

absl::Status LlamaModel::ValidateBatch(const std::vector<SeqBatchEntry>& batch, const KvCache& cache) const {
  if (batch.empty()) return absl::InvalidArgumentError("empty batch");
  const kernels::KvLayout& layout = cache.layout();
  if (cache.num_layers() != config_.num_layers || layout.num_kv_heads != config_.num_kv_heads ||
      layout.head_dim != config_.head_dim || layout.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache shape (layers=", cache.num_layers(), ", kv_heads=", layout.num_kv_heads,
        ", head_dim=", layout.head_dim, ") does not match the model (layers=", config_.num_layers,
        ", kv_heads=", config_.num_kv_heads, ", head_dim=", config_.head_dim, ")"));
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    const SeqBatchEntry& e = batch[s];
    const int64_t n = static_cast<int64_t>(e.tokens.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " has no tokens"));
    const int64_t end = e.start_pos + n;
    if (e.start_pos < 0 || end > config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, ": positions [", e.start_pos, ", ", end,
                                                     ") exceed max_position_embeddings ",
                                                     config_.max_position_embeddings));
    }
    // A sliding window (Mistral; Qwen2 with use_sliding_window) only changes
    // attention beyond `window` tokens; PagedAttention attends to the whole
    // context, so refuse such contexts rather than compute different numbers.
    if (config_.sliding_window.has_value() && end > *config_.sliding_window) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, ": context of ", end,
                                                     " tokens exceeds the sliding window ",
                                                     *config_.sliding_window, ", which is not supported"));
    }
    for (int32_t t : e.tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch entry ", s, ": token id ", t, " outside [0, ", config_.vocab_size, ")"));
      }
    }
    const int64_t blocks_needed = (end + layout.block_size - 1) / layout.block_size;
    if (e.block_table == nullptr || static_cast<int64_t>(e.block_table->size()) < blocks_needed) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, ": block table has ",
                                                     e.block_table ? e.block_table->size() : 0,
                                                     " blocks, needs ", blocks_needed));
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      const int32_t id = (*e.block_table)[b];
      if (id < 0 || id >= cache.num_blocks()) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch entry ", s, ": block id ", id, " outside [0, ", cache.num_blocks(), ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardOutput> LlamaModel::Forward(const std::vector<SeqBatchEntry>& batch, KvCache& cache) {
  LCD_RETURN_IF_ERROR(ValidateBatch(batch, cache));
  const int64_t block_size = cache.layout().block_size;

  // Plan the step: flatten tokens, positions, KV slots and attention spans.
  tokens_.clear();
  positions_.clear();
  slots_.clear();
  seqs_.clear();
  std::vector<int64_t> logit_rows;  // Token indices whose logits are returned.
  for (const SeqBatchEntry& e : batch) {
    const int64_t n = static_cast<int64_t>(e.tokens.size());
    kernels::AttentionSeq seq;
    seq.q_offset = static_cast<int64_t>(tokens_.size());
    seq.q_len = n;
    seq.context_len = e.start_pos + n;
    seq.block_table = e.block_table->data();
    seqs_.push_back(seq);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = e.start_pos + i;
      if (e.all_logits || i == n - 1) logit_rows.push_back(static_cast<int64_t>(tokens_.size()));
      tokens_.push_back(e.tokens[i]);
      positions_.push_back(static_cast<int32_t>(pos));
      slots_.push_back(static_cast<int64_t>((*e.block_table)[pos / block_size]) * block_size + pos % block_size);
    }
  }
  const int64_t num_tokens = static_cast<int64_t>(tokens_.size());
  const int64_t hidden = config_.hidden_size;

  Grow(x_, num_tokens * hidden);
  kernels::EmbeddingLookup(weights_.embed_tokens, tokens_.data(), num_tokens, x_.data());
  for (int64_t l = 0; l < config_.num_layers; ++l) RunLayer(l, num_tokens, cache);

  // Only the rows that need logits go through the final norm and lm_head.
  const int64_t rows = static_cast<int64_t>(logit_rows.size());
  Grow(h_, rows * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(x_.data() + logit_rows[r] * hidden, hidden, h_.data() + r * hidden);
  }
  kernels::RmsNorm(h_.data(), rows, hidden, weights_.final_norm.data(), static_cast<float>(config_.rms_norm_eps),
                   h_.data());
  ForwardOutput out;
  out.num_rows = rows;
  out.logits.resize(static_cast<size_t>(rows * config_.vocab_size));
  ResetInput(h_.data(), rows, hidden, act_lm_head_);
  Observe({"lm_head.weight"}, in_);
  weights_.lm_head->Forward(in_, nullptr, out.logits.data(), pool_);
  return out;
}

void LlamaModel::RunLayer(int64_t layer, int64_t num_tokens, KvCache& cache) {
  const LlamaLayerWeights& w = weights_.layers[layer];
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_heads * c.head_dim;
  const int64_t kv_dim = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  kernels::ThreadPool* pool = pool_;
  auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };

  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  Grow(h_, num_tokens * std::max(hidden, q_dim));
  Grow(qkv_, num_tokens * qkv_dim);
  Grow(q_, num_tokens * q_dim);
  Grow(k_, num_tokens * kv_dim);
  Grow(v_, num_tokens * kv_dim);
  Grow(attn_, num_tokens * q_dim);
  Grow(gate_up_, num_tokens * 2 * inter);
  Grow(gate_, num_tokens * inter);
  Grow(up_, num_tokens * inter);

  // Attention block: q, k and v from one stacked weight, then split per token.
  kernels::RmsNorm(x_.data(), num_tokens, hidden, w.input_norm.data(), eps, h_.data());
  ResetInput(h_.data(), num_tokens, hidden, true);
  Observe(qkv_names_[layer], in_);
  w.qkv->Forward(in_, bias(w.qkv_bias), qkv_.data(), pool);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = qkv_.data() + t * qkv_dim;
    std::copy_n(row, q_dim, q_.data() + t * q_dim);
    std::copy_n(row + q_dim, kv_dim, k_.data() + t * kv_dim);
    std::copy_n(row + q_dim + kv_dim, kv_dim, v_.data() + t * kv_dim);
  }
  kernels::ApplyRope(q_.data(), num_tokens, c.num_heads, c.head_dim, positions_.data(), inv_freq_.data());
  kernels::ApplyRope(k_.data(), num_tokens, c.num_kv_heads, c.head_dim, positions_.data(), inv_freq_.data());
  const kernels::KvLayout& layout = cache.layout();
  kernels::WriteKv(k_.data(), v_.data(), num_tokens, slots_.data(), layout, cache.k_pool(layer),
                   cache.v_pool(layer));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  kernels::PagedAttention(q_.data(), c.num_heads, seqs_.data(), static_cast<int64_t>(seqs_.size()), layout,
                          cache.k_pool(layer), cache.v_pool(layer), scale, attn_.data(), pool);
  ResetInput(attn_.data(), num_tokens, q_dim, true);
  Observe(o_names_[layer], in_);
  w.o_proj->Forward(in_, bias(w.o_bias), h_.data(), pool);
  kernels::Add(h_.data(), num_tokens * hidden, x_.data());

  // MLP block: gate and up from one stacked weight.
  kernels::RmsNorm(x_.data(), num_tokens, hidden, w.post_attention_norm.data(), eps, h_.data());
  ResetInput(h_.data(), num_tokens, hidden, true);
  Observe(gate_up_names_[layer], in_);
  w.gate_up->Forward(in_, nullptr, gate_up_.data(), pool);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::copy_n(gate_up_.data() + t * 2 * inter, inter, gate_.data() + t * inter);
    std::copy_n(gate_up_.data() + t * 2 * inter + inter, inter, up_.data() + t * inter);
  }
  kernels::SiluMul(gate_.data(), up_.data(), num_tokens * inter, gate_.data());
  ResetInput(gate_.data(), num_tokens, inter, true);
  Observe(down_names_[layer], in_);
  w.down_proj->Forward(in_, nullptr, h_.data(), pool);
  kernels::Add(h_.data(), num_tokens * hidden, x_.data());
}

}  // namespace lcd::runtime
