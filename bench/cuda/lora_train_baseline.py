"""PyTorch + PEFT baseline for forge_cuda_lora_train_bench (same model, batch and step).

A random transformers LlamaForCausalLM in bf16 on the GPU (SDPA attention), PEFT LoRA r=16,
alpha=32, dropout 0 on q/k/v/o/gate/up/down of every layer, torch.optim.AdamW (fused) on the
trainable parameters; each step is zero_grad + forward with labels + backward + step +
loss.item(). PEFT keeps adapter weights in float32 on a bf16 base by default
(autocast_adapter_dtype=True); --adapter-bf16 keeps them in bf16 instead.

Usage: python3 lora_train_baseline.py [--model small|1b] [--compile] [--adapter-bf16]
                                      [--batch 8] [--seq 512] [--steps 10]
Prints one Markdown table row: median step ms, tokens/s, peak allocated and reserved MiB.
"""
import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

MODELS = {
    "small": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048,
                  num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
               num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small", choices=MODELS)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--adapter-bf16", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(**MODELS[args.model], max_position_embeddings=4096,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16)
    lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"])
    model = get_peft_model(model, lcfg, autocast_adapter_dtype=not args.adapter_bf16)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
    fwd = torch.compile(model) if args.compile else model
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    first = step()
    warm_s = time.perf_counter() - t0
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    last = first
    for _ in range(args.steps):
        t0 = time.perf_counter()
        last = step()
        times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    alloc = torch.cuda.max_memory_allocated() / 2**20
    reserved = torch.cuda.max_memory_reserved() / 2**20
    name = "PyTorch+PEFT {} {}{}".format(args.model, "compile" if args.compile else "eager",
                                         ", bf16 adapters" if args.adapter_bf16 else "")
    print("| {} | {} x {} | {:.2f} | {:.2f}..{:.2f} | {:.0f} | {:.0f} (reserved) | {:.0f} "
          "(allocated) | - | {:.4f} -> {:.4f} | first step {:.1f} s".format(
              name, args.batch, args.seq, med, min(times), max(times),
              args.batch * args.seq / (med * 1e-3), reserved, alloc, first, last, warm_s),
          flush=True)


if __name__ == "__main__":
    main()
