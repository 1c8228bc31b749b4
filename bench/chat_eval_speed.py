"""Chat-eval speed on this CPU: items/s per task for a small model, batched vs one at a time.

Categorical tasks (ARC, MMLU): one padded forward per batch of prompts vs one forward per prompt.
Generative tasks through `engine_generator` (lmlit's engine): a batch of prompts decoded together against
the same generator given one prompt at a time (the `samples` of one HumanEval problem share one prefill). Each figure is the best of 3 runs. Run: OMP_NUM_THREADS=2 python bench/chat_eval_speed.py [--depth 4]"""
import argparse, time, torch
from lmlit.model import GPTConfig, build_model
from lmlit.tokenizer import get_tokenizer
from lmlit.chat_eval import run_chat_eval, engine_generator

ap = argparse.ArgumentParser()
ap.add_argument('--depth', type=int, default=4)
ap.add_argument('--items', type=int, default=32)
a = ap.parse_args()
torch.manual_seed(0)
tok = get_tokenizer('shakespeare', 4096)
model = build_model(GPTConfig.from_depth(a.depth, vocab_size=tok.vocab_size, sequence_len=1024), 'cpu').eval()
print(f"model depth {a.depth}, {model.num_params()['total'] / 1e6:.1f} M parameters, vocab {tok.vocab_size}, torch threads {torch.get_num_threads()}")

def rate(task, n, repeats=3, **kw):
    "Best of `repeats` (the machine is shared: the fastest run is the least disturbed)."
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = run_chat_eval(model, tok, [task], max_per_task=n, progress=False, **kw)
        best = max(best, res.tasks[task].n / (time.perf_counter() - t0))
    return best

def one_at_a_time(generate):
    "The same generator fed its prompts one by one (identical prompts still share their prefill)."
    def each(prompts, max_tokens, temperature=0.0, seed=0):
        groups = {}
        for j, p in enumerate(prompts): groups.setdefault(tuple(p), []).append(j)
        out = [None] * len(prompts)
        for rows in groups.values():
            for j, reply in zip(rows, generate([prompts[r] for r in rows], max_tokens, temperature, seed + rows[0])): out[j] = reply
        return out
    return each

rows = []
for task in ['arc_easy', 'mmlu']:
    one, many = rate(task, a.items, batch_size=1), rate(task, a.items, batch_size=16)
    rows.append((task, 'batch 16 vs 1 prompt', many, one))
for task, budget in [('spelling', 16), ('arc_easy_gen', 8)]:
    kw = dict(max_tokens={task: budget}, batch_size=8)
    many = rate(task, a.items // 4, generate=engine_generator(model, tok), **kw)
    one = rate(task, a.items // 4, generate=one_at_a_time(engine_generator(model, tok)), **kw)
    rows.append((task, f'distinct prompts, {budget} tokens (engine)', many, one))
kw = dict(max_tokens={'humaneval': 32}, samples=4)
many = rate('humaneval', 2, generate=engine_generator(model, tok), **kw)
one = rate('humaneval', 2, generate=one_at_a_time(engine_generator(model, tok)), **kw)
rows.append(('humaneval', '4 samples per problem share a KV cache, 32 tokens + sandbox', many, one))
print('| task | batching | batched items/s | one at a time items/s | ratio |\n|---|---|---:|---:|---:|')
for task, how, many, one in rows: print(f"| {task} | {how} | {many:.2f} | {one:.2f} | {many / one:.2f}x |")
