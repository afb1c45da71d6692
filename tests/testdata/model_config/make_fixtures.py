"""Writes the config fixtures read by tests/runtime/model_config_test.cc.

Run from this directory:  python3 make_fixtures.py   (transformers 5.x)
Each <name>/ gets config.json as transformers' save_pretrained writes it and
inv_freq.json: the rotary inverse frequencies transformers itself computes
for that config (the model's rotary_emb.inv_freq buffer, float32).
"""
import json
import os

from transformers import (GenerationConfig, LlamaConfig, MistralConfig, Qwen2Config)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

FIXTURES = {
    "llama3": (LlamaConfig(
        vocab_size=128256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000,
        eos_token_id=[128001, 128008, 128009],
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}),
               LlamaRotaryEmbedding),
    "mistral": (MistralConfig(
        vocab_size=32768, hidden_size=160, intermediate_size=448, num_hidden_layers=2,
        num_attention_heads=5, num_key_value_heads=1, head_dim=48,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                MistralRotaryEmbedding),
    "qwen2": (Qwen2Config(
        vocab_size=151936, hidden_size=128, intermediate_size=320, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645),
              Qwen2RotaryEmbedding),
}

for name, (config, rotary) in FIXTURES.items():
    os.makedirs(name, exist_ok=True)
    config.save_pretrained(name)
    inv_freq = rotary(config).inv_freq.tolist()
    with open(os.path.join(name, "inv_freq.json"), "w") as f:
        json.dump(inv_freq, f, indent=1)
        f.write("\n")

# A transformers 4.x style file (top-level rope_theta, "rope_scaling" with the
# old "type" key, no head_dim), read back through transformers 5.x.
LEGACY = {
    "architectures": ["LlamaForCausalLM"], "vocab_size": 1000, "hidden_size": 96,
    "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 3,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 20000.0,
    "rope_scaling": {"type": "linear", "factor": 4.0}, "torch_dtype": "bfloat16",
}
os.makedirs("llama_legacy_linear", exist_ok=True)
with open("llama_legacy_linear/config.json", "w") as f:
    json.dump(LEGACY, f, indent=2)
    f.write("\n")
legacy = LlamaConfig.from_pretrained("llama_legacy_linear")
with open("llama_legacy_linear/inv_freq.json", "w") as f:
    json.dump(LlamaRotaryEmbedding(legacy).inv_freq.tolist(), f, indent=1)
    f.write("\n")

GenerationConfig(bos_token_id=128000, eos_token_id=[128001, 128009], do_sample=True,
                 temperature=0.6, top_p=0.9).save_pretrained("llama3")
