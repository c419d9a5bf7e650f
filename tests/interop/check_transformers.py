"""Loads the checkpoints (and PEFT adapters) written by export_checkpoints with transformers
(and peft) and compares its
logits with forge's (max abs difference <= 1e-4 in f32; the models are tiny, so the
difference is summation order only). Run where transformers and torch are installed:

    python3 check_transformers.py OUT_DIR

Prints one line per checkpoint and exits non-zero if any differs or fails to load."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ok = True
for d in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    try:
        exp = load_file(d / "forge_expected.safetensors")
        if (d / "adapter").is_dir():  # a PEFT adapter over a saved base
            from peft import PeftModel
            base = AutoModelForCausalLM.from_pretrained(d / "base", dtype=torch.float32, attn_implementation="eager")
            model = PeftModel.from_pretrained(base, d / "adapter")
            cfg = json.loads((d / "base" / "config.json").read_text())
            cfg["architectures"] = ["PEFT " + json.loads((d / "adapter" / "adapter_config.json").read_text())["peft_type"]]
        else:
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
            cfg = json.loads((d / "config.json").read_text())
        model.eval()
        with torch.no_grad():
            logits = model(exp["input_ids"]).logits
        diff = (logits - exp["logits"]).abs().max().item()
        good = diff <= 1e-4
        print(f"{d.name:28s} {cfg['architectures'][0]:20s} max|diff| {diff:.3e} {'PASS' if good else 'FAIL'}")
        ok &= good
    except Exception as e:  # report and continue with the others
        print(f"{d.name:28s} FAIL to load: {type(e).__name__}: {e}")
        ok = False
print("all checkpoints match transformers" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
