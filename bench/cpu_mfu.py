"""CPU "MFU" of one lmlit training step: model FLOP/s of a full step (forward, backward, optimizer) divided
by the best float32 matmul FLOP/s this same process reaches (square sizes 512-2048, same thread count).

    OMP_NUM_THREADS=2 python bench/cpu_mfu.py            # the fixed config: depth 4, width 256, seq 256, batch 8, vocab 8192
    OMP_NUM_THREADS=2 python bench/cpu_mfu.py --compile  # the same with torch.compile on the model

Prints a table: the matmul peak, step time and its parts (forward, backward, optimizer, of which Newton-Schulz), page faults per step,
model FLOP/s and the MFU ratio. Timings are medians over --steps steps after --warmup steps."""
import os, sys, time, argparse, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from lmlit.model import GPTConfig, build_model
from lmlit.optim import setup_optimizer, newton_schulz
from lmlit.core import keep_freed_memory, minor_faults


class Clock:
    """Wall time and this process's CPU time / threads. On a machine other jobs share, the CPU-time clock
    counts only the time this process was actually running, so ratios of it stay meaningful."""
    def __init__(self, threads): self.threads = threads
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time(); return self
    def __exit__(self, *e):
        self.wall = time.perf_counter() - self.w
        self.cpu = (time.process_time() - self.c) / self.threads


def matmul_peak(threads, sizes=(512, 1024, 1536, 2048), min_s=0.3):
    "Best float32 matmul FLOP/s over square sizes (wall, cpu clocks), and the per-size table."
    rows = []
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps = max(1, int(min_s * 100e9 / (2 * n ** 3)))   # each timing lasts ~min_s at ~100 GFLOP/s
        best_w = best_c = 0.0
        for _ in range(3):
            with Clock(threads) as c:
                for _ in range(reps): torch.mm(a, b)
            f = 2 * n ** 3 * reps
            best_w, best_c = max(best_w, f / c.wall), max(best_c, f / max(c.cpu, 1e-9))
        rows.append((n, best_w, best_c))
    return max(r[1] for r in rows), max(r[2] for r in rows), rows


def gemm_only_time(cfg, batch, threads, reps=3):
    """CPU time of just the matmuls (and attention) of one training step, with the step's exact shapes:
    for every Linear (in -> out) on N = batch x seq tokens, the forward product, the input gradient and the
    weight gradient; plus scaled_dot_product_attention forward + backward per layer. The step can be no
    faster than this, so model FLOPs / this time / peak is the MFU ceiling the shapes allow."""
    import torch.nn.functional as F
    N, d, D = batch * cfg.sequence_len, cfg.n_embd, cfg.head_dim
    V = ((cfg.vocab_size + 63) // 64) * 64
    linears = [(d, cfg.n_head * D), (d, cfg.n_kv_head * D), (d, cfg.n_kv_head * D), (d, d), (d, 4 * d), (4 * d, d)] * cfg.n_layer + [(d, V)]
    mats = {}
    for i, o in set(linears):
        mats[(i, o)] = (torch.randn(N, i), torch.randn(i, o), torch.randn(N, o))
    q = torch.randn(batch, cfg.n_head, cfg.sequence_len, D, requires_grad=True)
    k = torch.randn(batch, cfg.n_kv_head, cfg.sequence_len, D, requires_grad=True)
    v = torch.randn(batch, cfg.n_kv_head, cfg.sequence_len, D, requires_grad=True)
    gqa = cfg.n_head != cfg.n_kv_head
    def run():
        for i, o in linears:
            x, w, g = mats[(i, o)]
            torch.mm(x, w); torch.mm(g, w.T); torch.mm(x.T, g)
        for _ in range(cfg.n_layer):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            y.backward(torch.ones_like(y))
    run()
    best = float('inf')
    for _ in range(reps):
        with Clock(threads) as c: run()
        best = min(best, c.cpu)
    return best


def _timeit(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--depth', type=int, default=4); ap.add_argument('--width', type=int, default=256)
    ap.add_argument('--seq', type=int, default=256); ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--vocab', type=int, default=8192); ap.add_argument('--head-dim', type=int, default=128)
    ap.add_argument('--steps', type=int, default=6); ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 2)))
    ap.add_argument('--ns-fp32', action='store_true', help='Newton-Schulz in fp32 even where bf16 matmuls are fast (the default picks by fast_bf16_matmul)')
    ap.add_argument('--no-keep-memory', action='store_true', help="leave glibc's malloc as it is (no keep_freed_memory(), as training runs call it)")
    ap.add_argument('--plain-loss', action='store_true', help="use the model's plain softcap + cross-entropy, not the fused CPU one")
    ap.add_argument('--sizes', default='512,1024,1536,2048', help='square matmul sizes for the fp32 peak')
    ap.add_argument('--compile', action='store_true', help='torch.compile the model (optional; needs a C++ compiler, ~1 min to compile)')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    kept = False if a.no_keep_memory else keep_freed_memory()
    torch.manual_seed(0)

    peak, peak_cpu, peak_rows = matmul_peak(a.threads, [int(n) for n in a.sizes.split(',')])
    cfg = GPTConfig.from_depth(a.depth, vocab_size=a.vocab, sequence_len=a.seq, aspect_ratio=a.width // a.depth, head_dim=a.head_dim)
    model = build_model(cfg, 'cpu')
    model.fused_cpu_loss = not a.plain_loss
    opt = setup_optimizer(model, ns_dtype=torch.float32 if a.ns_fp32 else None)
    ns_dtype = opt.ns_dtype                 # what the optimizer decided (fast_bf16_matmul), or --ns-fp32
    fwd = torch.compile(model) if a.compile else model
    x = torch.randint(0, a.vocab, (a.batch, a.seq)); y = torch.randint(0, a.vocab, (a.batch, a.seq))

    # Newton-Schulz alone, on exactly the stacks the optimizer orthogonalises
    stacks = [torch.randn(len(ps), *ps[0].shape) for kind, g, ps, info in opt.units if kind == 'muon']

    # The machine may be shared: a 2048 matmul probe right before each step gives a peak measured under the
    # same load as that step; the per-step ratio against it is reported beside the ratio against the start peak.
    n_probe = max(int(n) for n in a.sizes.split(','))
    pa, pb = torch.randn(n_probe, n_probe), torch.randn(n_probe, n_probe)
    t_f, t_b, t_o, t_ns, t_step, probe, cpu_step, cpu_ns, faults = [], [], [], [], [], [], [], [], []
    for i in range(a.warmup + a.steps):
        pr = 2 * n_probe ** 3 / min(_timeit(lambda: torch.mm(pa, pb)) for _ in range(2))
        f0 = minor_faults()
        with Clock(a.threads) as whole:
            t0 = time.perf_counter()
            loss = fwd(x, y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step(); opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
        nf = minor_faults() - f0
        with Clock(a.threads) as nsc:
            for s in stacks: newton_schulz(s, dtype=ns_dtype)
        if i >= a.warmup:
            t_f.append(t1 - t0); t_b.append(t2 - t1); t_o.append(t3 - t2); t_step.append(t3 - t0); t_ns.append(nsc.wall)
            probe.append(pr); cpu_step.append(whole.cpu); cpu_ns.append(nsc.cpu); faults.append(nf)
    med = statistics.median
    flops_step = model.flops_per_token() * a.batch * a.seq
    step = med(t_step)
    achieved = flops_step / step
    print(f"torch {torch.__version__}, {a.threads} threads, depth {a.depth} width {cfg.n_embd} heads {cfg.n_head}x{cfg.head_dim} "
          f"seq {a.seq} batch {a.batch} vocab {a.vocab}{' compiled' if a.compile else ''}{' plain loss' if a.plain_loss else ''}, "
          f"Newton-Schulz in {str(ns_dtype).replace('torch.', '')}, keep_freed_memory {'on' if kept else 'off'}")
    print("| fp32 matmul n | GFLOP/s (wall) | GFLOP/s (CPU time) |\n|---|---|---|")
    for n, f, fc in peak_rows: print(f"| {n} | {f/1e9:.1f} | {fc/1e9:.1f} |")
    print()
    print("| quantity | value |\n|---|---|")
    print(f"| matmul peak (best of above) | {peak/1e9:.1f} GFLOP/s |")
    print(f"| model FLOPs per step (flops_per_token x {a.batch * a.seq} tokens) | {flops_step/1e9:.2f} GFLOP |")
    print(f"| step time (median of {a.steps}) | {step*1e3:.0f} ms |")
    print(f"| forward / backward / optimizer | {med(t_f)*1e3:.0f} / {med(t_b)*1e3:.0f} / {med(t_o)*1e3:.0f} ms |")
    print(f"| Newton-Schulz (all Muon stacks, {str(ns_dtype).replace('torch.', '')}) | {med(t_ns)*1e3:.0f} ms = {med(t_ns)/step:.1%} of the step "
          f"({med(cpu_ns)/med(cpu_step):.1%} by CPU time) |")
    print(f"| minor page faults per step (median) | {med(faults):.0f} |")
    print(f"| model FLOP/s | {achieved/1e9:.1f} GFLOP/s |")
    interleaved = med([flops_step / t / pr for t, pr in zip(t_step, probe)])
    print(f"| **CPU MFU** = model FLOP/s / matmul peak | **{achieved/peak:.3f}** |")
    by_cpu = flops_step / med(cpu_step) / peak_cpu
    t_gemm = gemm_only_time(cfg, a.batch, a.threads)
    print(f"| matmuls + attention alone, same shapes (CPU time) | {t_gemm*1e3:.0f} ms: ceiling the shapes allow = "
          f"{flops_step / t_gemm / peak_cpu:.3f}; step CPU time / this = {med(cpu_step)/t_gemm:.2f} |")
    print(f"| CPU MFU against a {n_probe} matmul probe timed just before each step (median) | {interleaved:.3f} |")
    print(f"| **CPU MFU by CPU time** (step and peak both per CPU-second of this process; robust to a shared machine) | **{by_cpu:.3f}** |")
    return dict(faults=med(faults), step_s=step, wall=achieved / peak, interleaved=interleaved, cpu=by_cpu, ceiling=flops_step / t_gemm / peak_cpu)


if __name__ == '__main__':
    main()
