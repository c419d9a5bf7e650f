"""Reference for the GPU LoRA trainer's DPO and training-step checks (tests/cuda/lora_trainer.cu).

Loads the llama_a fixture (transformers LlamaForCausalLM + the PEFT adapter) in float64 on the
CPU. First the DPO loss of one pair (chosen = input_ids[0], rejected = input_ids[1], the first
PROMPT tokens are the prompt) with the adapter-disabled model as reference, as PEFT-based DPO
trainers do, and its LoRA gradients ("dpo.loss", "dpo.grad.<name>"). Then STEPS AdamW steps on
the LoRA weights with labels = input_ids, as transformers and PEFT do: the loss before each step
("losses") and the final LoRA weights (PEFT's parameter names). All F64, written to OUT.

Usage: python3 lora_steps_reference.py FIXTURE_DIR OUT.safetensors
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

STEPS = 5
PROMPT, BETA, SMOOTHING = 6, 0.1, 0.1
LR, BETAS, EPS, WEIGHT_DECAY = 1e-2, (0.9, 0.999), 1e-8, 0.01


def main():
    fixture, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(
        fixture + "/model", dtype=torch.float64, attn_implementation="eager")
    model = PeftModel.from_pretrained(model, fixture + "/adapter", is_trainable=True)
    model.to(torch.float64)
    model.train()  # lora_dropout is 0, so train mode changes nothing numerically
    ids = load_file(fixture + "/expect.safetensors")["input_ids"]
    params = [p for p in model.parameters() if p.requires_grad]
    tensors = {}

    def completion_logp(logits):
        # Σ log p(ids[t+1]) over positions t with t+1 >= PROMPT (the completion), per sequence
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        return logp[:, PROMPT - 1:].sum(-1)

    with torch.no_grad(), model.disable_adapter():
        ref = completion_logp(model(input_ids=ids).logits)
    pol = completion_logp(model(input_ids=ids).logits)
    h = BETA * ((pol[0] - ref[0]) - (pol[1] - ref[1]))
    dpo = -(1 - SMOOTHING) * torch.nn.functional.logsigmoid(h) \
        - SMOOTHING * torch.nn.functional.logsigmoid(-h)
    dpo.backward()
    tensors["dpo.loss"] = dpo.detach().reshape(1)
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors["dpo.grad." + name] = p.grad.detach().clone()
    print("reference DPO loss:", dpo.item())
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[name] = p.detach().to(torch.float64).contiguous()
    save_file(tensors, out)
    print("reference losses:", " ".join(f"{v:.6f}" for v in losses))


if __name__ == "__main__":
    main()
