"""Builds the small tokenizer fixtures used by tests/runtime/tokenizer_test.cc
with the Hugging Face `tokenizers` library (deterministic: fixed corpus,
single-threaded trainer), plus expected.jsonl holding the reference ids.

    python3 tests/testdata/tokenizer/make_fixtures.py
"""
import json
import os

os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer turns text into ids, and a detokenizer turns ids back into text.",
    "Large language models read tokens; they never see raw characters.",
    "It's the tokenizer's job; we'll test it, they've said, and I'm sure you'd agree.",
    "Numbers like 12345 and 3.14159 appear often in text, as do dates like 2024-01-31.",
    "Café, naïve and façade carry accents; the merges should learn them.",
    "    indented code line with four spaces\tand a tab",
    "def encode(self, text): return [self.vocab[t] for t in text.split()]",
] * 3
TESTS = [
    "Hello world",
    "The lazy dog jumps over the quick brown fox.",
    "  two leading spaces and trailing  ",
    "tabs\tand\nnewlines\n\nhere",
    "It's we'll they've I'm you'd",
    "emoji 😀 and 👍🏽 and CJK 日本語",
    "unknown Ωmega chars ∑",
    "special <|endoftext|> token and </s> and <s>",
    "",
    "12345 3.14159",
    "a, b. c's  d ,, e..",
    "the   quick,,brown..fox''s  lazy   dog",
]


def save(tok, name):
    tok.save(os.path.join(HERE, name), pretty=False)


def llama_style():
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    # The trainer only reserves ids through special tokens; in real Llama
    # files the <0xNN> pieces are plain vocab entries, so drop them from
    # added_tokens (they stay in the model vocab).
    d = json.loads(tok.to_str())
    d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] not in byte_tokens]
    return Tokenizer.from_str(json.dumps(d))


def byte_level():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def split_variant(base, behavior):
    """The byte-level model behind a Split pre-tokenizer with `behavior`."""
    tok = Tokenizer.from_str(base.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+|[,.']"), behavior=behavior),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def main():
    expected = []
    base = byte_level()
    fixtures = [("llama_style.json", llama_style(), True), ("byte_level.json", base, False)]
    for behavior in ("removed", "merged_with_previous", "merged_with_next", "isolated"):
        fixtures.append((f"split_{behavior}.json", split_variant(base, behavior), False))
    for name, tok, add in fixtures:
        save(tok, name)
        tok = Tokenizer.from_file(os.path.join(HERE, name))
        for text in TESTS:
            ids = tok.encode(text, add_special_tokens=add).ids
            expected.append({"file": name, "text": text, "add_bos": add, "ids": ids,
                             "decoded": tok.decode([i for i in ids if i not in (0, 1, 2)] if add else ids,
                                                   skip_special_tokens=False)})
    with open(os.path.join(HERE, "expected.jsonl"), "w", encoding="utf-8") as f:
        for e in expected:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
