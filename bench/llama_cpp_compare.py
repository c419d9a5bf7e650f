#!/usr/bin/env python3
"""forge vs llama.cpp on the same GGUF file: prefill and decode tokens/s, same thread count.

For each model (100m: the ~100M-parameter Llama config of bench_model with random weights;
builtin: the built-in model) the script has `bench_gguf write` export a GGUF file (every 2-D
weight in the chosen type, Q4_0 by default), then for each thread count runs, each in its own
process and alternating so that both see the same machine load:
  forge:     `bench_gguf run MODEL FILE LENS... --decode N --reps R` with OMP_NUM_THREADS=t
  llama.cpp: pip llama-cpp-python on FILE, n_threads = n_threads_batch = t, n_batch = n_ubatch
             = the longest prompt (one ubatch per prompt), logits of the last position only.
Prefill = one forward of a LEN-token prompt from an empty KV cache (median of R after one
warm-up); decode = N single-token steps after a 16-token prompt (median step). Token ids are
the same for both (FILE.ids.json, written by bench_gguf). With --cpus "0,1" the processes are
pinned (taskset) to the first t of those CPUs. Prints a table and writes results.json.

usage: llama_cpp_compare.py --bench build/bench/bench_gguf [--python .venv/bin/python]
           [--out DIR] [--models 100m builtin] [--threads 1 2] [--lens 128 512]
           [--decode 64] [--reps 5] [--type q4_0] [--cpus 0,1] [--rounds 1]
"""
import argparse
import json
import os
import subprocess
import sys

LLAMA = r"""
import json, sys, time
import numpy as np
import llama_cpp
path, threads, lens, n_decode, reps = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ids = json.load(open(path + ".ids.json"))
n_ctx = max(max(lens), 16 + n_decode) + 16
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=max(lens), n_ubatch=max(lens),
                      n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
def med(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
out = {"threads": threads, "file": path, "llama_cpp_python": llama_cpp.__version__, "prefill": {}}
for n in lens:
    prompt = ids[str(n)]
    t, cpu = [], []
    for r in range(reps + 1):
        llm.reset()
        c0 = time.process_time()
        t0 = time.perf_counter()
        llm.eval(prompt)
        s = time.perf_counter() - t0
        if r:
            t.append(s)
            cpu.append(time.process_time() - c0)
    # The last position's logits from llama.cpp itself (llm.scores is only filled with
    # logits_all, which would make llama.cpp compute every position's logits).
    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    out["prefill"][str(n)] = {"median_s": med(t), "best_s": min(t), "tokens_per_s": n / med(t), "cpu_s": med(cpu),
                              "argmax": int(np.argmax(row))}
if n_decode > 0:
    seq = ids["16"] + ids[str(max(k for k in (128, 512, 1024) if k >= n_decode))][:n_decode]
    llm.reset()
    llm.eval(seq[:16])
    t, cpu = [], []
    for i in range(n_decode):
        c0 = time.process_time()
        t0 = time.perf_counter()
        llm.eval([seq[16 + i]])
        t.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out["decode"] = {"tokens": n_decode, "median_s": med(t), "best_s": min(t),
                     "tokens_per_s": 1.0 / med(t), "cpu_s": med(cpu)}
print(json.dumps(out))
"""


def run(cmd, env=None, cpus=None):
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("failed: " + " ".join(cmd) + "\n" + r.stdout + r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default="llama_cpp_compare")
    ap.add_argument("--models", nargs="+", default=["100m", "builtin"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--lens", nargs="+", type=int, default=[128, 512])
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--type", default="q4_0")
    ap.add_argument("--cpus", default="")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-write", action="store_true")
    ap.add_argument("--omp-wait", default="",
                    help="OMP_WAIT_POLICY for forge (e.g. passive on a shared machine; unset by default)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    script = os.path.join(a.out, "llama_bench.py")
    open(script, "w").write(LLAMA)
    cpu_list = [c for c in a.cpus.split(",") if c]
    results = []
    for model in a.models:
        path = os.path.join(a.out, f"{model}-{a.type}.gguf")
        if not a.skip_write:
            subprocess.run([a.bench, "write", model, path, a.type], check=True)
        for rnd in range(a.rounds):
            for t in a.threads:
                cpus = ",".join(cpu_list[:t]) if cpu_list else None
                env = dict(os.environ, OMP_NUM_THREADS=str(t))
                if a.omp_wait:
                    env["OMP_WAIT_POLICY"] = a.omp_wait
                load0 = loadavg()
                f = run([a.bench, "run", model, path] + [str(n) for n in a.lens] +
                        ["--decode", str(a.decode), "--reps", str(a.reps)], env, cpus)
                l = run([a.python, script, path, str(t), json.dumps(a.lens), str(a.decode),
                         str(a.reps)], dict(os.environ), cpus)
                results.append({"model": model, "threads": t, "round": rnd, "forge": f,
                                "llama_cpp": l, "loadavg_before": load0, "loadavg_after": loadavg()})
                print(f"# {model} t={t} round {rnd}: load {load0} -> {loadavg()}", file=sys.stderr)
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    for r in results:
        for n in a.lens:
            fa, la = r["forge"]["prefill"][str(n)]["argmax"], r["llama_cpp"]["prefill"][str(n)]["argmax"]
            print(f"# {r['model']} t={r['threads']} prompt {n}: argmax of the last logits forge {fa}, "
                  f"llama.cpp {la}{'' if fa == la else ' (differ)'}")
    print("| model | threads | what | forge tokens/s | llama.cpp tokens/s | forge / llama.cpp "
          "| per CPU-s: forge / llama.cpp | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rows = [(f"prefill {n}", r["forge"]["prefill"][str(n)], r["llama_cpp"]["prefill"][str(n)])
                for n in a.lens]
        if a.decode > 0:
            rows.append(("decode", r["forge"]["decode"], r["llama_cpp"]["decode"]))
        for what, f, l in rows:
            print(f"| {r['model']} | {r['threads']} | {what} | {f['tokens_per_s']:.1f} | "
                  f"{l['tokens_per_s']:.1f} | {f['tokens_per_s'] / l['tokens_per_s']:.2f} | "
                  f"{l['cpu_s'] / f['cpu_s']:.2f} | "
                  f"{r['loadavg_before']}-{r['loadavg_after']} |")


if __name__ == "__main__":
    main()
