"""Reference side of the differential tokenizer test (pip `tokenizers`).

usage: hf_tokenize.py FIXTURE_TOKENIZER_JSON STRINGS_JSONL OUT_DIR

Reads one JSON string per line from STRINGS_JSONL. Besides the fixture tokenizer it builds
tokenizer.json files in the styles of the model families forge supports (Llama-3 and Qwen2
byte-level BPE with a Split regex, Llama-2 BPE with Prepend/Replace normalizers and byte
fallback, Mistral-style Metaspace, a Digits/Sequence byte-level variant), trained on the same
strings so their merges are exercised. For every tokenizer NAME it writes
  OUT_DIR/NAME.json         the tokenizer.json forge loads
  OUT_DIR/NAME.out.jsonl    per input line: {"ids", "ids_plain", "text", "text_skip"}
where ids/ids_plain are encode(s) with/without special tokens and text/text_skip are
decode(ids) without/with skip_special_tokens. OUT_DIR/names.txt lists the names.
"""

import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def byte_level_bpe(strings, specials, pre, normalizer=None, ignore_merges=False, size=900):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(strings, trainer=trainer)
    return tok


def llama3(strings):
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = byte_level_bpe(strings, specials, pre, ignore_merges=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))],
    )
    # Non-special added tokens with the matching options.
    tok.add_tokens(
        [
            AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False),
            AddedToken("ok", single_word=True, normalized=False),
        ]
    )
    return tok


def qwen2(strings):
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return byte_level_bpe(strings, specials, pre, normalizer=normalizers.NFC())


def digits(strings):
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=True)]
    )
    tok = byte_level_bpe(strings, ["<|endoftext|>"], pre, size=700)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", 0)]
    )
    return tok


def with_byte_fallback(tok, drop_pre_tokenizer=False):
    """Adds <0x00>..<0xFF> to the model vocabulary and turns byte_fallback on, as Llama-2 has."""
    doc = json.loads(tok.to_str())
    if drop_pre_tokenizer:
        doc["pre_tokenizer"] = None
    vocab = doc["model"]["vocab"]
    next_id = 1 + max(max(vocab.values()), max(t["id"] for t in doc["added_tokens"]))
    for b in range(256):
        vocab["<0x%02X>" % b] = next_id + b
    doc["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(doc))


def llama2(strings):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Trained on words, as SentencePiece does, so no token holds '▁' after another character
    # (forge then cuts the unsplit text before each '▁'); the saved file has no pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120, show_progress=False
    )
    tok.train_from_iterator(strings, trainer=trainer)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok = with_byte_fallback(tok, drop_pre_tokenizer=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def mistral(strings):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=150, show_progress=False
    )
    tok.train_from_iterator(strings, trainer=trainer)
    tok.decoder = decoders.Sequence(
        [decoders.Metaspace(replacement="▁", prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok = with_byte_fallback(tok)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return tok


def metaspace_split(strings):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>"], limit_alphabet=150, show_progress=False
    )
    tok.train_from_iterator(strings, trainer=trainer)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def main():
    fixture, strings_path, out_dir = sys.argv[1:4]
    with open(strings_path, encoding="utf-8") as f:
        strings = [json.loads(line) for line in f]
    os.makedirs(out_dir, exist_ok=True)
    tokenizers = {"fixture": Tokenizer.from_file(fixture)}
    for name, build in [
        ("llama3", llama3),
        ("qwen2", qwen2),
        ("digits", digits),
        ("llama2", llama2),
        ("mistral", mistral),
        ("metaspace_split", metaspace_split),
    ]:
        tokenizers[name] = build(strings)
    for name, tok in tokenizers.items():
        tok.save(os.path.join(out_dir, name + ".json"))
        with_special = tok.encode_batch(strings, add_special_tokens=True)
        plain = tok.encode_batch(strings, add_special_tokens=False)
        with open(os.path.join(out_dir, name + ".out.jsonl"), "w", encoding="utf-8") as f:
            for a, b in zip(with_special, plain):
                row = {
                    "ids": a.ids,
                    "ids_plain": b.ids,
                    "text": tok.decode(a.ids, skip_special_tokens=False),
                    "text_skip": tok.decode(a.ids, skip_special_tokens=True),
                }
                f.write(json.dumps(row) + "\n")
    with open(os.path.join(out_dir, "names.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokenizers) + "\n")


if __name__ == "__main__":
    main()
