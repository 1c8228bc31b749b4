"""GPU training throughput of lmlit's model + optimizer: tok/s, MFU and peak memory.

Needs only torch and this source tree (random tokens; no data, tokenizer or papermill).

    python bench/gpu.py                       # d12 and d16 at seq 2048, bf16, torch.compile, two device batch sizes each
    python bench/gpu.py --loss-chunk 8192     # the same with the head + loss in chunks: compare peak memory and tok/s
    python bench/gpu.py --dry-run             # the same logic on the CPU with tiny models, fp32, no compile (a smoke test)
    python bench/gpu.py --peak-tflops 312     # MFU against another card's bf16 dense peak (A100: 312)

Each row is printed as soon as it is measured. MFU = flops_per_token x tok/s / peak (989e12: H100 SXM bf16
dense, nanochat's reference). The whole default run is sized to finish in under 6 minutes on one H100
(compilation included); rows that would not fit in the time budget are skipped and said so."""
import os, sys, time, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from lmlit.model import GPTConfig, build_model
from lmlit.optim import setup_optimizer


def measure(depth, batch, seq, vocab, device, dtype, compile_, warmup, steps, head_dim, peak, loss_chunk=0):
    cfg = GPTConfig.from_depth(depth, vocab_size=vocab, sequence_len=seq, head_dim=head_dim)
    model = build_model(cfg, device)
    model.loss_chunk = loss_chunk          # > 0: head + loss in chunks of this many tokens (less memory, see 02_model)
    opt = setup_optimizer(model)
    fwd = torch.compile(model, dynamic=False) if compile_ else model
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    cuda = device.type == 'cuda'
    if cuda: torch.cuda.reset_peak_memory_stats(device)
    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = fwd(x, y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    t0 = time.perf_counter()
    for _ in range(warmup): step()
    if cuda: torch.cuda.synchronize(device)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps): loss = step()
    if cuda: torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    tok_s = batch * seq / dt
    mfu = model.flops_per_token() * tok_s / peak
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float('nan')
    params = model.num_params()['total']
    del model, opt, fwd
    if cuda: torch.cuda.empty_cache()
    return dict(params=params, dt=dt, tok_s=tok_s, mfu=mfu, mem=mem, warm=t_warm, loss=loss.item())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dry-run', action='store_true', help='CPU, tiny models, fp32, no compile: checks the logic runs')
    ap.add_argument('--device', default=None)
    ap.add_argument('--depths', default=None, help='comma-separated, default 12,16')
    ap.add_argument('--batches', default=None, help='comma-separated device batch sizes, default 16,32')
    ap.add_argument('--seq', type=int, default=None); ap.add_argument('--vocab', type=int, default=32768)
    ap.add_argument('--steps', type=int, default=None); ap.add_argument('--warmup', type=int, default=None)
    ap.add_argument('--no-compile', action='store_true'); ap.add_argument('--peak-tflops', type=float, default=989.0)
    ap.add_argument('--loss-chunk', type=int, default=0, help='head + loss this many tokens at a time (model.loss_chunk); 0 = the plain path')
    ap.add_argument('--budget-s', type=float, default=330, help='skip rows once this much time has passed')
    a = ap.parse_args(argv)
    dry = a.dry_run
    device = torch.device(a.device or ('cpu' if dry else 'cuda'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA GPU visible to torch; use --dry-run to check the logic on a CPU")
    depths = [int(d) for d in (a.depths or ('2' if dry else '12,16')).split(',')]
    batches = [int(b) for b in (a.batches or ('1,2' if dry else '16,32')).split(',')]
    seq = a.seq or (64 if dry else 2048)
    vocab = 512 if dry and a.vocab == 32768 else a.vocab
    head_dim = 32 if dry else 128
    steps, warmup = a.steps or (2 if dry else 10), a.warmup or (1 if dry else 3)
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    compile_ = not (dry or a.no_compile)
    if device.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f"# {name}, torch {torch.__version__}, seq {seq}, vocab {vocab}, {dtype}, compile={compile_}, "
          f"MFU vs {a.peak_tflops:g} TF/s, {steps} timed steps after {warmup} warm-up, loss_chunk={a.loss_chunk}", flush=True)
    print("| depth | params | device batch | tok/s | step ms | MFU | peak mem GiB | warm-up s |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    t_start = time.perf_counter()
    for depth in depths:
        for batch in batches:
            if time.perf_counter() - t_start > a.budget_s:
                print(f"| {depth} | | {batch} | skipped: {a.budget_s:.0f} s budget used | | | | |", flush=True); continue
            try:
                r = measure(depth, batch, seq, vocab, device, dtype, compile_, warmup, steps, head_dim, a.peak_tflops * 1e12, a.loss_chunk)
            except torch.cuda.OutOfMemoryError:
                print(f"| {depth} | | {batch} | out of memory | | | | |", flush=True)
                torch.cuda.empty_cache(); continue
            print(f"| {depth} | {r['params']/1e6:.1f}M | {batch} | {r['tok_s']:,.0f} | {r['dt']*1e3:.1f} | {r['mfu']:.1%} | "
                  f"{r['mem']:.1f} | {r['warm']:.0f} |", flush=True)
    print(f"# total {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == '__main__':
    main()
