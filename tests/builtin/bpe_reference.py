"""Reference for tests/builtin/bpe_trainer.cpp: trains the `tokenizers` library's BpeTrainer.

usage: bpe_reference.py job.json out.json
job.json: {"texts": [...], "vocab_size": n, "min_frequency": n, "special_tokens": [...],
           "ours": "path/to/our/tokenizer.json", "samples": [...]}
out.json: {"vocab": [token by id], "merges": [[l, r], ...],
           "ours_ids": [[ids of each sample, by the library loading our file], ...]}
"""
import json
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

job = json.load(open(sys.argv[1], encoding="utf-8"))
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=job["vocab_size"],
    min_frequency=job["min_frequency"],
    special_tokens=job["special_tokens"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator(job["texts"], trainer)
model = json.loads(tok.to_str())["model"]
vocab = [None] * len(model["vocab"])
for t, i in model["vocab"].items():
    vocab[i] = t
merges = [m if isinstance(m, list) else m.split(" ", 1) for m in model["merges"]]
ours = Tokenizer.from_file(job["ours"])
ours_ids = [ours.encode(s, add_special_tokens=True).ids for s in job["samples"]]
decoded = [ours.decode(ids, skip_special_tokens=False) for ids in ours_ids]
json.dump({"vocab": vocab, "merges": merges, "ours_ids": ours_ids, "decoded": decoded},
          open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
