"""lmlit's engine against nanochat's, side by side on the same weights, in one process, alternating runs.

    git clone https://github.com/karpathy/nanochat /tmp/nanochat && git -C /tmp/nanochat checkout 2c4473d
    python bench/engine_vs_nanochat.py --nanochat /tmp/nanochat [--size 5m|40m|both] [--threads 1] [--device cpu]

nanochat 2c4473d (2026-01-11) is the last commit whose GPT has lmlit's architecture (RoPE, QK-norm, ReLU², untied
head, softcap 15, no value embeddings or residual lambdas), so the same weights give the same function: lmlit's
weights are copied into nanochat's GPT, its RoPE tables set to lmlit's angles (nanochat rotates by -θ, so its sin is
lmlit's negated; it keeps them in bfloat16, so both models get the bfloat16-rounded tables), and greedy outputs are
checked token-identical before anything is timed. Nothing of nanochat is part of lmlit: this script imports it from
the checkout you point it at.

Rows (tokens/s of generated tokens, best of --reps, both engines timed in alternation):
- batch 1: one prompt, greedy and top-k 50 at temperature 1;
- 1 prompt x 8 samples (nanochat's `num_samples`, one prefill shared);
- 8 different prompts (nanochat's engine takes one prompt; lmlit only);
- time to first token at batch 1.
"""
import sys, time, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from lmlit.engine import Engine, Request
from lmlit.model import GPTConfig, build_model

SIZES = {'5m': dict(n_layer=4, n_embd=256, n_head=4, vocab=4096), '40m': dict(n_layer=8, n_embd=512, n_head=4, vocab=16384)}


class Tok:
    "The few tokenizer calls either engine makes, with special ids outside the vocabulary: no row stops early."
    special_tokens = {}
    bos_id = -1
    def encode_special(self, name): return -1
    def get_bos_token_id(self): return -1
    def decode(self, ids): return ''
    def encode(self, text, *a, **k): return []


def models(size, nanochat_dir, device):
    s = SIZES[size]
    config = GPTConfig(sequence_len=1024, vocab_size=s['vocab'], n_layer=s['n_layer'], n_head=s['n_head'],
                       n_kv_head=s['n_head'], n_embd=s['n_embd'])
    torch.manual_seed(0)
    ours = build_model(config, device).eval()
    with torch.no_grad():
        for p in ours.parameters(): p.normal_(0, 0.02)
        ours.lm_head.weight.normal_(0, 0.5)           # peaked logits: sampled text is not uniform noise
        ours.cos.copy_(ours.cos.bfloat16().float())   # the bfloat16 tables nanochat insists on, for both
        ours.sin.copy_(ours.sin.bfloat16().float())
    sys.path.insert(0, str(nanochat_dir))
    from nanochat.gpt import GPT as NanoGPT, GPTConfig as NanoConfig
    with torch.device('meta'):
        theirs = NanoGPT(NanoConfig(sequence_len=1024, vocab_size=s['vocab'], n_layer=s['n_layer'], n_head=s['n_head'],
                                    n_kv_head=s['n_head'], n_embd=s['n_embd']))
    theirs.to_empty(device=device)
    theirs.init_weights()
    mapping = {'transformer.wte.weight': 'wte.weight', 'lm_head.weight': 'lm_head.weight'}
    for i in range(s['n_layer']):
        for name in ('attn.c_q', 'attn.c_k', 'attn.c_v', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'):
            mapping[f'transformer.h.{i}.{name}.weight'] = f'blocks.{i}.{name}.weight'
    state = ours.state_dict()
    theirs.load_state_dict({k: state[v].to(device) for k, v in mapping.items()}, strict=True)
    theirs.cos = ours.cos.bfloat16()[:, :theirs.cos.size(1)]
    theirs.sin = (-ours.sin).bfloat16()[:, :theirs.sin.size(1)]
    theirs.eval()
    from nanochat.engine import Engine as NanoEngine
    return ours, theirs, Engine(ours, Tok()), NanoEngine(theirs, Tok())


def sync(device):
    if device.startswith('cuda'): torch.cuda.synchronize()


def run_ours(engine, prompts, new, n=1, temperature=0.0, top_k=None):
    t0 = time.perf_counter()
    first, count = None, 0
    reqs = [Request(p, max_tokens=new, temperature=temperature, top_k=top_k, seed=7, n=n) for p in prompts]
    for d in engine.generate(reqs):
        if first is None: sync(str(engine.model.lm_head.weight.device)); first = time.perf_counter() - t0
        count += d.token is not None
    sync(str(engine.model.lm_head.weight.device))
    return count, time.perf_counter() - t0, first


def run_theirs(engine, prompt, new, n=1, temperature=0.0, top_k=None):
    t0 = time.perf_counter()
    first, count = None, 0
    for column, _ in engine.generate(prompt, num_samples=n, max_tokens=new, temperature=temperature, top_k=top_k, seed=7):
        if first is None: sync(str(engine.model.get_device())); first = time.perf_counter() - t0
        count += len(column)
    sync(str(engine.model.get_device()))
    return count, time.perf_counter() - t0, first


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--nanochat', required=True, help='a nanochat checkout at commit 2c4473d')
    ap.add_argument('--size', default='both', choices=['5m', '40m', 'both'])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--new', type=int, default=128)
    ap.add_argument('--prompt', type=int, default=32)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--profile', action='store_true', help="also print where each engine's batch-1 greedy decode spends time")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for size in (['5m', '40m'] if a.size == 'both' else [a.size]):
        ours, theirs, engine, nano = models(size, Path(a.nanochat), a.device)
        gen = torch.Generator().manual_seed(1)
        V = ours.config.vocab_size
        prompt = torch.randint(0, V, (a.prompt,), generator=gen).tolist()
        same = 0
        for i in range(20):
            p = torch.randint(0, V, (a.prompt,), generator=gen).tolist()
            x = [d.token for d in engine.generate([Request(p, max_tokens=32, temperature=0)])]
            y = [c[0] for c, _ in nano.generate(p, num_samples=1, max_tokens=32, temperature=0.0)]
            same += x == y
        params = sum(p.numel() for p in ours.parameters())
        print(f"\n#### {size}: {params / 1e6:.1f} M parameters, prompt {a.prompt}, {a.new} new tokens, {a.threads} thread(s), "
              f"{a.device}; greedy outputs token-identical on {same}/20 prompts")
        rows = [('batch 1, greedy', dict(n=1), dict(n=1)),
                ('batch 1, top-k 50, T=1', dict(n=1, temperature=1.0, top_k=50), dict(n=1, temperature=1.0, top_k=50)),
                ('1 prompt x 8 samples, T=1', dict(n=8, temperature=1.0), dict(n=8, temperature=1.0))]
        print("\n| workload | lmlit tok/s | nanochat tok/s | lmlit / nanochat |\n|---|---:|---:|---:|")
        ttft = [[], []]
        for name, kw_ours, kw_theirs in rows:
            run_ours(engine, [prompt], 8, **kw_ours)
            run_theirs(nano, prompt, 8, **kw_theirs)
            best = [float('inf'), float('inf')]
            counts = [0, 0]
            for _ in range(a.reps):                               # alternate, so load on the machine hits both
                c, t, f = run_ours(engine, [prompt], a.new, **kw_ours)
                best[0], counts[0] = min(best[0], t), c
                if kw_ours['n'] == 1: ttft[0].append(f)
                c, t, f = run_theirs(nano, prompt, a.new, **kw_theirs)
                best[1], counts[1] = min(best[1], t), c
                if kw_theirs['n'] == 1: ttft[1].append(f)
            rate = [counts[0] / best[0], counts[1] / best[1]]
            print(f"| {name} | {rate[0]:,.0f} | {rate[1]:,.0f} | {rate[0] / rate[1]:.2f} |")
        prompts = [torch.randint(0, V, (a.prompt - i,), generator=gen).tolist() for i in range(8)]
        run_ours(engine, prompts, 8)
        c, t, _ = min((run_ours(engine, prompts, a.new) for _ in range(a.reps)), key=lambda r: r[1])
        one = min(run_theirs(nano, prompts[0], a.new)[1] for _ in range(a.reps))
        print(f"| 8 different prompts, greedy | {c / t:,.0f} | {a.new / one:,.0f} (one prompt at a time) | "
              f"{(c / t) / (a.new / one):.2f} |")
        t_ours, t_theirs = min(ttft[0]) * 1e3, min(ttft[1]) * 1e3
        print(f"\ntime to first token, batch 1: lmlit {t_ours:.2f} ms, nanochat {t_theirs:.2f} ms "
              f"(lmlit / nanochat {t_ours / t_theirs:.2f})")
        if a.profile:
            print_profile('lmlit', lambda: run_ours(engine, [prompt], a.new))
            print_profile('nanochat', lambda: run_theirs(nano, prompt, a.new))


def print_profile(name, fn, top=8):
    "cProfile of one batch-1 greedy decode: the functions with the most time of their own, as shares of the whole."
    import cProfile, pstats
    prof = cProfile.Profile()
    prof.runcall(fn)
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"\n{name}: batch-1 greedy decode, {total * 1e3:.0f} ms profiled; own time by function\n")
    print("| function | calls | own ms | share |\n|---|---:|---:|---:|")
    for (file, line, func), (_, calls, own, _, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"| `{func}` ({where}) | {calls:,} | {own * 1e3:.1f} | {own / total:.0%} |")


if __name__ == '__main__': main()
