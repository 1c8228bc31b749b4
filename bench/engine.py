"""Engine speed: decode tokens/s with the KV cache against recomputing the whole sequence every token (256 new
tokens), batched throughput at batch 1/4/16 against batch 1, time to first token, and a server's load: 32 clients
arriving staggered, served by static batches (a batch runs to its end before the next starts: lmlit before
continuous batching) against continuous batching (`Batcher`: a request joins at the next step).

    python bench/engine.py [--depth 4] [--width 256] [--vocab 4096] [--new 256] [--prompt 64] [--device cpu]
                           [--dtype fp32|bf16] [--clients 32]

Greedy decoding of a random-weight lmlit GPT (speed does not depend on what the weights learned). Prints markdown
tables with ratios measured in this run; on CUDA it adds the memory bandwidth the cached decode reaches (weights + KV
cache read once per step) as a share of the device's peak (--peak-gbs)."""
import sys, time, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from lmlit.engine import Engine, Request
from lmlit.model import GPTConfig, build_model


class _Tok:
    "Just enough tokenizer for the engine: special ids outside the sampled range, so no row stops early."
    def __init__(self, vocab): self.special_tokens, self.bos_id = {}, vocab - 1
    def encode_special(self, name): return self.bos_id
    def decode(self, ids): return ''
    def encode(self, text): return []


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def serve_load(engine, clients, continuous: bool, max_batch: int = 16):
    """Run `clients` [(arrival s, prompt, max_tokens)] through one batcher in real time. Static: when the engine is idle,
    everything waiting (up to max_batch rows) starts together and runs to its end. Continuous: a client is submitted
    the moment it arrives and joins at the next step. Returns TTFTs, inter-token gaps and total tok/s."""
    batcher = engine.batcher(max_batch)
    pending, waiting = sorted(clients, key=lambda c: c[0]), []
    arrival, first, last, gaps, count = {}, {}, {}, [], 0
    device = str(engine.model.lm_head.weight.device)
    t0 = time.perf_counter()
    while pending or waiting or batcher.busy:
        now = time.perf_counter() - t0
        while pending and pending[0][0] <= now: waiting.append(pending.pop(0))
        if waiting and (continuous or not batcher.busy):
            take = waiting if continuous else waiting[:max_batch]
            for when, prompt, new in take: arrival[batcher.submit(Request(prompt, max_tokens=new, temperature=0))] = when
            waiting = waiting[len(take):]
        if not batcher.busy:
            if pending: time.sleep(max(0.0, pending[0][0] - (time.perf_counter() - t0)))
            continue
        deltas = batcher.step()
        sync(device)
        now = time.perf_counter() - t0
        for d in deltas:
            if d.token is None: continue
            count += 1
            if d.request not in first: first[d.request] = now
            else: gaps.append(now - last[d.request])
            last[d.request] = now
    end = time.perf_counter() - t0
    ttft = [first[r] - arrival[r] for r in arrival]
    return ttft, gaps, count / (end - min(c[0] for c in clients))


def sync(device):
    if device.startswith('cuda'): torch.cuda.synchronize()


@torch.inference_mode()
def recompute_decode(model, prompt, new):
    "The plain reference: a full forward over the whole sequence for every new token."
    seq = list(prompt)
    for _ in range(new):
        logits = model(torch.tensor([seq], device=model.lm_head.weight.device))[0, -1]
        seq.append(int(logits[:-1].argmax()))
    return seq[len(prompt):]


def engine_decode(engine, prompts, new):
    reqs = [Request(p, max_tokens=new, temperature=0) for p in prompts]
    t0 = time.perf_counter()
    first = None
    count = 0
    for d in engine.generate(reqs):
        if first is None:
            sync(engine.model.lm_head.weight.device.type)
            first = time.perf_counter() - t0
        count += 1
    sync(engine.model.lm_head.weight.device.type)
    return count, time.perf_counter() - t0, first


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--depth', type=int, default=4)
    ap.add_argument('--width', type=int, default=256)
    ap.add_argument('--vocab', type=int, default=4096)
    ap.add_argument('--new', type=int, default=256)
    ap.add_argument('--prompt', type=int, default=64)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--peak-gbs', type=float, default=4800.0, help='device memory bandwidth peak, GB/s (H200: 4800)')
    ap.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'])
    ap.add_argument('--clients', type=int, default=32)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: the same count as bench/engine_vs_nanochat.py)')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = GPTConfig(sequence_len=a.prompt + a.new, vocab_size=a.vocab, n_layer=a.depth, n_head=a.width // 64,
                       n_kv_head=a.width // 64, n_embd=a.width)
    model = build_model(config, a.device).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.02)
    if a.dtype == 'bf16': model = model.to(torch.bfloat16)
    engine = Engine(model, _Tok(a.vocab))
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, a.vocab - 1, (a.prompt,), generator=gen).tolist()
    print(f"model: depth {a.depth}, width {a.width}, vocab {a.vocab}, {sum(p.numel() for p in model.parameters()):,} params; "
          f"prompt {a.prompt}, {a.new} new tokens, greedy; device {a.device}; threads {torch.get_num_threads()}")

    engine_decode(engine, [prompt], 8)                       # warm up
    cached = min(engine_decode(engine, [prompt], a.new)[1] for _ in range(a.reps))
    t0 = time.perf_counter(); ref = recompute_decode(model, prompt, a.new); sync(a.device); recompute = time.perf_counter() - t0
    same = [d.token for d in engine.generate([Request(prompt, max_tokens=a.new, temperature=0)])]
    agree = sum(x == y for x, y in zip(same, ref))
    print(f"\n| decode, batch 1, {a.new} new tokens | tok/s | ratio |\n|---|---:|---:|")
    print(f"| full recompute each token (GPT.forward) | {a.new / recompute:,.1f} | 1.00 |")
    print(f"| KV cache (Engine) | {a.new / cached:,.1f} | {recompute / cached:.1f} |")
    print(f"(greedy tokens equal in {agree}/{a.new} positions)")

    print(f"\n| batch | tok/s (all rows) | vs batch 1 | time to first token, ms |\n|---:|---:|---:|---:|")
    base = None
    for b in (1, 4, 16):
        prompts = [torch.randint(0, a.vocab - 1, (a.prompt - (i % 8),), generator=gen).tolist() for i in range(b)]
        runs = [engine_decode(engine, prompts, a.new) for _ in range(a.reps)]
        count, secs, first = min(runs, key=lambda r: r[1])
        rate = count / secs
        base = base or rate
        print(f"| {b} | {rate:,.1f} | {rate / base:.2f} | {min(r[2] for r in runs) * 1e3:.1f} |")

    gen = torch.Generator().manual_seed(2)
    clients = []
    for i in range(a.clients):                    # staggered: a new client every ~1/3 of one reply's decode time
        when = i * (a.new / 3) / (a.new / cached)
        prompt = torch.randint(0, a.vocab - 1, (int(torch.randint(8, a.prompt + 1, (1,), generator=gen)),), generator=gen)
        clients.append((when, prompt.tolist(), int(torch.randint(a.new // 4, a.new + 1, (1,), generator=gen))))
    print(f"\n| {a.clients} staggered clients (one every {clients[1][0] * 1e3:.0f} ms, greedy, up to 16 rows) | "
          f"TTFT p50 ms | TTFT p99 ms | inter-token p50 ms | total tok/s |\n|---|---:|---:|---:|---:|")
    res = {}
    for name, continuous in (('static batches', False), ('continuous batching', True)):
        ttft, gaps, rate = serve_load(engine, clients, continuous)
        res[name] = (percentile(ttft, 99), rate)
        print(f"| {name} | {percentile(ttft, 50) * 1e3:,.0f} | {percentile(ttft, 99) * 1e3:,.0f} | "
              f"{percentile(gaps, 50) * 1e3:.1f} | {rate:,.0f} |")
    (p99s, rs), (p99c, rc) = res['static batches'], res['continuous batching']
    print(f"continuous / static: p99 TTFT {p99c / p99s:.2f}x, total tok/s {rc / rs:.2f}x")

    if a.device.startswith('cuda'):
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        kv = 2 * config.n_layer * (a.prompt + a.new / 2) * config.n_kv_head * config.head_dim * (2 if a.dtype == 'bf16' else 4)
        gbs = (weights + kv) * a.new / cached / 1e9
        print(f"\ncached decode, batch 1: {gbs:,.1f} GB/s of weights + KV read per step = {gbs / a.peak_gbs:.1%} of {a.peak_gbs:,.0f} GB/s")


if __name__ == '__main__': main()
