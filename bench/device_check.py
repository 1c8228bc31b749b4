"""Everything GPU-side in one run: correctness checks on the device, then the throughput and memory tables.
Meant for a short, rare GPU session (one call, under ~8 minutes on an H100): needs only torch and this tree.

    python bench/device_check.py                 # on a CUDA machine: checks, then bench rows, one report
    python bench/device_check.py --dry-run       # the same logic on the CPU with tiny sizes (what pytest runs)
    python bench/device_check.py --out report.md # also write the report to a file (e.g. under $OUT on the device)

Checks (each a row: name, pass/FAIL, the measured numbers):
  1. Newton-Schulz in bf16 on the device keeps singular values in its band (wide and tall matrices).
  2. The model's forward + backward under bf16 autocast: finite loss near log(vocab) at init, finite gradients.
  3. The chunked head + loss (`loss_chunk`) equals the plain path on the device (loss, gradients).
  4. KV-cache decode logits equal the full forward's, under autocast.
  5. `flops_per_token()` equals `FlopCounterMode` on the device.
  6. `torch.compile(model)` gives the eager loss.
Then rows of `bench/gpu.py`'s measurement (tok/s, MFU, peak memory): d12 and d16 at seq 2048, device batch 16 and 32,
and d16 batch 32 with `loss_chunk`, with a time budget; and `bench/loss_memory.py`'s peak memory for a d16-sized head.
Then `bench/engine.py`'s tables (decode tok/s, batching, 32 staggered clients static vs continuous; on CUDA in bf16
with decode's memory-bandwidth share). Last, on CUDA only (skipped in the dry run and without a GPU): the memory planner (`lmlit.memory`, 04c) against the
allocator's measured peak, d12 and d20 at seq 2048, vocab 65,536, device batch 16 and 32, eager and compiled, one rank.

    python bench/device_check.py --memory-only   # just that table (~3-6 minutes on an H100/H200)

Exit status 1 if any check fails."""
import os, sys, time, math, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from lmlit.model import GPTConfig, build_model, KVCache, ChunkedSoftcapCrossEntropy, measured_flops_per_token
from lmlit.optim import newton_schulz, NS_BAND


def check_newton_schulz(dev, small):
    # wide and tall gaussians (a square gaussian has singular values near 0, below where the band is promised)
    worst = []
    for m, n in ([(32, 64), (64, 32), (16, 64)] if small else [(512, 1024), (1024, 512), (1024, 4096)]):
        s = torch.linalg.svdvals(newton_schulz(torch.randn(m, n, device=dev), dtype=torch.bfloat16).double())
        worst.append((s.min().item(), s.max().item()))
    lo, hi = min(w[0] for w in worst), max(w[1] for w in worst)
    return NS_BAND[0] - 0.05 <= lo and hi <= NS_BAND[1] + 0.05, f"singular values {lo:.3f}..{hi:.3f} (band {NS_BAND[0]}..{NS_BAND[1]} +-0.05)"


def _autocast(dev, dtype): return torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)


def check_forward_backward(model, dev, dtype, x):
    model.zero_grad(set_to_none=True)
    with _autocast(dev, dtype): loss = model(x, x)
    loss.backward()
    finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
    V = model.config.vocab_size
    ok = math.isfinite(loss.item()) and finite and abs(loss.item() - math.log(V)) < 1.0
    return ok, f"loss {loss.item():.3f} (log V = {math.log(V):.3f}), gradients finite: {finite}"


def check_chunked(model, dev, dtype, x, chunk):
    def run(c):
        model.loss_chunk = c; model.zero_grad(set_to_none=True)
        with _autocast(dev, dtype): loss = model(x, x)
        loss.backward()
        return loss.item(), [p.grad.float().clone() for p in model.parameters()]
    with torch.no_grad():                       # weights off their init, so the head's gradient is not trivially small
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.02)
    (l0, g0), (l1, g1) = run(0), run(chunk)
    model.loss_chunk = 0
    rel = max(((a - b).norm() / a.norm().clamp(min=1e-12)).item() for a, b in zip(g0, g1))
    ok = abs(l0 - l1) < 1e-2 * abs(l0) and rel < 5e-2
    return ok, f"loss {l0:.5f} vs {l1:.5f}, max relative gradient difference {rel:.2e} (loss_chunk={chunk})"


@torch.no_grad()
def check_kv_cache(model, dev, dtype, T):
    model.eval()
    idx = torch.randint(0, model.config.vocab_size, (1, T), device=dev)
    with _autocast(dev, dtype):
        full = model(idx).float()
        cache = KVCache.for_model(model, 1, T)
        pre = model(idx[:, :T // 2], kv_cache=cache).float()                    # the logits after the last prefilled token
        steps = [model(idx[:, t:t + 1], kv_cache=cache).float() for t in range(T // 2, T - 1)]
    model.train()
    dec = torch.stack([pre] + steps, dim=1)                                       # positions T/2-1 .. T-2
    full = full[:, T // 2 - 1:T - 1]
    diff = (dec - full).abs().max().item()
    agree = (dec.argmax(-1) == full.argmax(-1)).float().mean().item()
    tol = 1e-4 if dtype == torch.float32 else 0.25      # bf16 logits within a 15-softcap: rounding ~1e-2 per layer
    return diff < tol and agree > 0.9, f"max |decode - full| {diff:.3g} (tolerance {tol}), argmax agreement {agree:.1%}"


def check_flops(model):
    want, got = model.flops_per_token(), measured_flops_per_token(model)
    return abs(got / want - 1) < 0.02, f"formula {want:,} vs FlopCounterMode {got:,.0f} (ratio {got / want:.4f})"


def check_compile(model, dev, dtype, x):
    torch._dynamo.reset()
    with torch.no_grad(), _autocast(dev, dtype):
        eager = model(x, x).item()
        compiled = torch.compile(model)(x, x).item()
    return abs(eager - compiled) < 1e-2 * abs(eager), f"loss eager {eager:.5f} vs compiled {compiled:.5f}"


MEMORY_ROWS = [  # depth, device batch, torch.compile, loss_chunk: cheapest first, so a short budget still gets the d12 rows
    (12, 16, False, 0), (12, 32, False, 4096), (12, 32, True, 4096), (20, 16, False, 4096), (20, 16, True, 4096),
    (20, 32, True, 4096), (20, 32, True, 0), (20, 32, False, 4096)]


def measure_memory(depth, batch, compiled, chunk, dev, dtype, seq=2048, vocab=65536, steps=2):
    "(planned bytes, measured peak bytes, plan) of `steps` training steps of a fresh model: lmlit's plan vs the allocator."
    from lmlit.memory import plan_memory
    from lmlit.optim import setup_optimizer
    import gc
    gc.collect()
    cuda = dev.type == 'cuda'
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)                 # whatever is still held from before: not this row's
    state = {}
    try:
        cfg = GPTConfig.from_depth(depth, vocab_size=vocab, sequence_len=seq, head_dim=128 if seq >= 256 else 32)
        state['model'] = model = build_model(cfg, dev)
        model.loss_chunk = chunk
        state['opt'] = opt = setup_optimizer(model)
        plan = plan_memory(model, opt, batch, seq, dev, dtype, compiled=compiled, loss_chunk=chunk)
        state['forward'] = forward = torch.compile(model, dynamic=False) if compiled else model
        state['x'] = x = torch.randint(0, vocab, (batch, seq), device=dev)
        state['y'] = y = torch.randint(0, vocab, (batch, seq), device=dev)
        for _ in range(steps):
            with _autocast(dev, dtype): loss = forward(x, y)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            del loss
        peak = torch.cuda.max_memory_allocated(dev) - base if cuda else float('nan')
        return plan['total'], peak, plan
    finally:
        state.clear()
        model = opt = forward = x = y = None
        if compiled: torch._dynamo.reset()
        gc.collect()
        if cuda: torch.cuda.empty_cache()


def memory_table(dev, dtype, out, deadline):
    "Planned vs measured peak for MEMORY_ROWS (a no-op without CUDA: a CPU's RSS says nothing about a GPU plan)."
    if dev.type != 'cuda' or not torch.cuda.is_available():
        out("memory planner vs measured peak: skipped (needs a CUDA GPU)"); return
    total = torch.cuda.get_device_properties(dev).total_memory
    out(f"memory planner vs allocator peak: seq 2048, vocab 65536, {dtype}, one rank, device {total / 2**30:.1f} GiB")
    out("| depth | device batch | compile | loss_chunk | planned GiB | measured GiB | measured / planned | planned activations GiB |")
    out("|---|---|---|---|---|---|---|---|")
    for depth, batch, compiled, chunk in MEMORY_ROWS:
        row = f"| {depth} | {batch} | {compiled} | {chunk} |"
        if time.perf_counter() > deadline:
            out(f"{row} skipped: budget used | | | |"); continue
        try:
            planned, peak, plan = measure_memory(depth, batch, compiled, chunk, dev, dtype)
            out(f"{row} {planned / 2**30:.1f} | {peak / 2**30:.1f} | {peak / planned:.2f} | {plan['activations'] / 2**30:.1f} |")
        except torch.cuda.OutOfMemoryError:
            out(f"{row} | out of memory | | |")
        except Exception as e:                                   # one bad row must not lose the others
            out(f"{row} | {type(e).__name__}: {str(e)[:120]} | | |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='CPU, tiny sizes, fp32: checks the logic runs')
    ap.add_argument('--budget-s', type=float, default=420, help='skip benchmark rows once this much time has passed')
    ap.add_argument('--out', default=None, help='also write the report here')
    ap.add_argument('--memory-only', action='store_true', help='only the memory planner vs measured peak table (CUDA)')
    ap.add_argument('--memory-budget-s', type=float, default=420, help='stop starting memory rows after this many seconds of them')
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    dry = a.dry_run
    dev = torch.device('cpu' if dry else 'cuda')
    if a.memory_only and not torch.cuda.is_available():
        print("memory planner vs measured peak: skipped (needs a CUDA GPU)")
        return 0
    if dev.type == 'cuda' and not torch.cuda.is_available():
        sys.exit("bench/device_check.py: no CUDA GPU visible to torch; use --dry-run to check the logic on a CPU")
    dtype = torch.float32 if dry else torch.bfloat16
    if dev.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu (dry run)'
    lines = [f"# device check: {name}, torch {torch.__version__}, {dtype}", "",
             "| check | result | measured |", "|---|---|---|"]
    def out(line):
        print(line, flush=True); lines.append(line)
    for l in lines: print(l, flush=True)
    if a.memory_only:
        memory_table(dev, dtype, out, time.perf_counter() + a.memory_budget_s)
        if a.out: Path(a.out).write_text('\n'.join(lines) + '\n')
        return 0

    torch.manual_seed(0)
    cfg = (GPTConfig.from_depth(2, vocab_size=512, sequence_len=64, head_dim=32) if dry else
           GPTConfig.from_depth(4, vocab_size=32768, sequence_len=512, head_dim=128))
    model = build_model(cfg, dev)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.sequence_len), device=dev)
    checks = [('Newton-Schulz bf16 band', lambda: check_newton_schulz(dev, dry)),
              ('forward + backward', lambda: check_forward_backward(model, dev, dtype, x)),
              ('chunked loss == plain', lambda: check_chunked(model, dev, dtype, x, 48 if dry else 300)),
              ('KV-cache decode == full forward', lambda: check_kv_cache(model, dev, dtype, 16 if dry else 64)),
              ('flops_per_token == FlopCounterMode', lambda: check_flops(model)),
              ('torch.compile == eager', lambda: check_compile(model, dev, dtype, x) if not dry else (True, 'skipped in the dry run (compile: tests/test_model_compile.py)'))]
    failed = 0
    for cname, fn in checks:
        try: ok, msg = fn()
        except Exception as e: ok, msg = False, f"{type(e).__name__}: {str(e)[:200]}"
        failed += not ok
        out(f"| {cname} | {'pass' if ok else '**FAIL**'} | {msg} |")
    del model
    if dev.type == 'cuda': torch.cuda.empty_cache()

    import gpu as G                                  # bench/gpu.py's measurement
    seq, vocab, head_dim = (64, 512, 32) if dry else (2048, 32768, 128)
    steps, warmup = (2, 1) if dry else (10, 3)
    rows = ([(2, 1, 0), (2, 2, 0), (2, 2, 48)] if dry else
            [(12, 16, 0), (12, 32, 0), (16, 16, 0), (16, 32, 0), (16, 32, 8192)])
    out(""); out(f"seq {seq}, vocab {vocab}, {dtype}, compile={not dry}; MFU against 989 TF/s (H100/H200 SXM bf16 dense)")
    out("| depth | params | device batch | loss_chunk | tok/s | step ms | MFU | peak mem GiB |"); out("|---|---|---|---|---|---|---|---|")
    for depth, batch, chunk in rows:
        if time.perf_counter() - t_start > a.budget_s:
            out(f"| {depth} | | {batch} | {chunk} | skipped: {a.budget_s:.0f} s budget used | | | |"); continue
        try:
            r = G.measure(depth, batch, seq, vocab, dev, dtype, not dry, warmup, steps, head_dim, 989e12, chunk)
            out(f"| {depth} | {r['params'] / 1e6:.1f}M | {batch} | {chunk} | {r['tok_s']:,.0f} | {r['dt'] * 1e3:.1f} | {r['mfu']:.1%} | {r['mem']:.1f} |")
        except torch.cuda.OutOfMemoryError:
            out(f"| {depth} | | {batch} | {chunk} | out of memory | | | |"); torch.cuda.empty_cache()

    import loss_memory as LM                         # bench/loss_memory.py's table, d16-sized head
    out("")
    if time.perf_counter() - t_start <= a.budget_s:
        from io import StringIO
        from contextlib import redirect_stdout
        buf = StringIO()
        args = (['--tokens', '256', '--width', '32', '--vocab', '512', '--chunks', '100', '--reps', '1'] if dry else
                ['--device', 'cuda', '--tokens', '32768', '--width', '1024', '--vocab', '65536', '--chunks', '4096,16384', '--reps', '3'])
        try:
            with redirect_stdout(buf): LM.main(args)
        except torch.cuda.OutOfMemoryError: buf.write("| plain path out of memory |\n")
        for l in buf.getvalue().splitlines(): out(l)
    else: out("head + loss memory table skipped: budget used")
    out("")
    if time.perf_counter() - t_start <= a.budget_s or dry:           # bench/engine.py's tables, in bf16 on the GPU
        import engine as EB
        from io import StringIO
        from contextlib import redirect_stdout
        buf = StringIO()
        args = (['--depth', '2', '--width', '64', '--vocab', '256', '--new', '16', '--prompt', '8', '--reps', '1',
                 '--clients', '4'] if dry else
                ['--device', 'cuda', '--dtype', 'bf16', '--depth', '12', '--width', '768', '--vocab', '32768',
                 '--new', '256', '--prompt', '64', '--reps', '2', '--clients', '32'])
        with redirect_stdout(buf): EB.main(args)
        for l in buf.getvalue().splitlines(): out(l)
    else: out("engine tables skipped: budget used")
    out("")
    if time.perf_counter() - t_start <= a.budget_s: memory_table(dev, dtype, out, time.perf_counter() + a.memory_budget_s)
    else: out("memory planner table skipped: budget used")
    out(""); out(f"{failed} check(s) failed; {time.perf_counter() - t_start:.0f} s in all")
    if a.out: Path(a.out).write_text('\n'.join(lines) + '\n')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
