"""Memory and time of the model's head + softcap + loss, three ways: the plain path (what GPUs run by default),
the fused CPU path (`SoftcapCrossEntropy`, CPU only) and the chunked path (`ChunkedSoftcapCrossEntropy`,
`model.loss_chunk`, any device).

    OMP_NUM_THREADS=2 python bench/loss_memory.py                         # CPU: N=4096 tokens, width 256, vocab 8192
    python bench/loss_memory.py --device cuda --tokens 32768 --width 1024 --vocab 65536   # a d16-sized head on a GPU

For each: bytes autograd saves for backward (every distinct storage, via saved_tensors_hooks), on CUDA the allocator's
peak during forward + backward, and the median forward + backward time. Losses and gradients are checked against
the plain path first."""
import os, sys, time, argparse, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from lmlit.model import SoftcapCrossEntropy, ChunkedSoftcapCrossEntropy
from lmlit.core import keep_freed_memory


def plain(x, W, t, V, sc): return F.cross_entropy(sc * torch.tanh((x @ W[:V].T).float() / sc), t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--tokens', type=int, default=4096)
    ap.add_argument('--width', type=int, default=256); ap.add_argument('--vocab', type=int, default=8192)
    ap.add_argument('--chunks', default='512,2048'); ap.add_argument('--reps', type=int, default=5)
    a = ap.parse_args(argv)
    dev = torch.device(a.device); cuda = dev.type == 'cuda'
    if not cuda: keep_freed_memory()
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    N, d, V = a.tokens, a.width, a.vocab
    x = torch.randn(N, d, device=dev, requires_grad=True)
    W = (torch.randn(V, d, device=dev) * 0.05).requires_grad_()
    t = torch.randint(0, V, (N,), device=dev)
    ways = [('plain', lambda: plain(x, W, t, V, 15.0))]
    if not cuda: ways.append(('fused CPU', lambda: SoftcapCrossEntropy.apply(x, W, t, V, 15.0)))
    ways += [(f'chunked {c}', (lambda c: lambda: ChunkedSoftcapCrossEntropy.apply(x, W, t, V, 15.0, c))(int(c))) for c in a.chunks.split(',')]

    def run(fn):
        x.grad = W.grad = None
        with torch.autocast(dev.type, dtype=dtype, enabled=cuda):
            loss = fn()
        loss.backward()
        return loss.detach(), x.grad.clone(), W.grad.clone()

    ref = run(ways[0][1])
    print(f"# {torch.cuda.get_device_name(dev) if cuda else 'cpu'}, torch {torch.__version__}, tokens {N}, width {d}, vocab {V}, "
          f"{'bf16 autocast' if cuda else 'float32'}; logits alone = {N * V * 4 / 2**20:.0f} MiB (float32)")
    print("| path | saved for backward MiB | peak during fwd+bwd MiB | fwd+bwd ms (median) | max rel. grad diff vs plain |")
    print("|---|---:|---:|---:|---:|")
    for name, fn in ways:
        seen = {}
        def pack(u): seen[u.untyped_storage().data_ptr()] = u.untyped_storage().nbytes(); return u
        x.grad = W.grad = None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda u: u):
            with torch.autocast(dev.type, dtype=dtype, enabled=cuda):
                loss = fn()
        loss.backward(); del loss
        saved = sum(seen.values()) / 2**20
        loss, gx, gW = run(fn)
        diff = max(((gx - ref[1]).abs().max() / ref[1].abs().max()).item(), ((gW - ref[2]).abs().max() / ref[2].abs().max()).item())
        assert abs(loss.item() - ref[0].item()) < (1e-2 if cuda else 1e-4) * abs(ref[0].item()), (name, loss.item(), ref[0].item())
        if cuda:
            torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
            run(fn); torch.cuda.synchronize(); peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**20:.0f}"
        else: peak = 'n/a (CPU)'
        times = []
        for _ in range(a.reps):
            if cuda: torch.cuda.synchronize()
            s = time.perf_counter(); run(fn)
            if cuda: torch.cuda.synchronize()
            times.append(time.perf_counter() - s)
        print(f"| {name} | {saved:.1f} | {peak} | {statistics.median(times) * 1e3:.1f} | {diff:.1e} |", flush=True)


if __name__ == '__main__':
    main()
