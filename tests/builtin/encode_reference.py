"""Reference for tests/builtin/model.cpp: encodes strings with the `tokenizers` library.

usage: encode_reference.py tokenizer.json in.json out.json
in.json: list of strings; out.json: list of id lists (add_special_tokens=False).
"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
json.dump([tok.encode(t, add_special_tokens=False).ids for t in texts], open(sys.argv[3], "w"))
