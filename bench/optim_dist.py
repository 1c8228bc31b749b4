"""How should `opt.step()` synchronise gradients across ranks? ZeRO-2 (reduce-scatter, update own share,
all-gather) against all-reduce (every rank updates everything), and ZeRO-2 with its reductions started from
backward hooks (`opt.sync_in_backward()`), measured on 2 CPU processes with gloo.

    python bench/optim_dist.py              # launches torchrun --nproc_per_node=2 itself, 1 thread per rank
    python bench/optim_dist.py --nproc 4

Config: the CPU-MFU one (depth 4, width 256, seq 256, vocab 8192), global batch 8 split over the ranks.
All optimizers live in the same processes and their steps alternate, so a shared machine's load hits both
alike. Prints a table: median optimizer-step time, whole-step time, per-rank optimizer state size."""
import os, sys, time, subprocess, statistics, argparse
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(steps=6, warmup=2):
    import torch
    from lmlit.core import dist_setup, dist_teardown
    from lmlit.model import GPTConfig, build_model
    from lmlit.optim import setup_optimizer
    info = dist_setup('cpu')
    R, W = info.rank, info.world_size
    cfg = GPTConfig.from_depth(4, vocab_size=8192, sequence_len=256)
    runs = {}
    for mode in ('zero2', 'zero2+overlap', 'allreduce'):
        torch.manual_seed(0)
        m = build_model(cfg, 'cpu')
        runs[mode] = (m, setup_optimizer(m, shard=mode != 'allreduce', overlap=mode == 'zero2+overlap'), dict(opt=[], step=[]))
    g = torch.Generator().manual_seed(R)
    B = 8 // W
    for i in range(warmup + steps):
        x = torch.randint(0, 8192, (B, 256), generator=g)
        for mode, (m, opt, t) in runs.items():
            t0 = time.perf_counter()
            loss = m(x, x)
            if mode == 'zero2+overlap': opt.sync_in_backward()
            loss.backward()
            t1 = time.perf_counter()
            opt.step(); opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if i >= warmup: t['opt'].append(t2 - t1); t['step'].append(t2 - t0)
    diff = max((a - b).abs().max().item() for o in ('allreduce', 'zero2+overlap')
               for a, b in zip(runs['zero2'][0].parameters(), runs[o][0].parameters()))
    if R == 0:
        med = statistics.median
        print(f"{W} gloo ranks, 1 thread each, d4 w256 seq256 vocab 8192, global batch 8; median of {steps} steps")
        print("| mode | optimizer step ms | whole step ms | optimizer state per rank MB |\n|---|---|---|---|")
        for mode, (m, opt, t) in runs.items():
            # AdamW moments, plus each Muon bucket's momentum tensor once (its per-matrix entries are views of it)
            mb = sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v) and k != 'momentum_buffer')
            mb += sum(info['buf'].numel() * info['buf'].element_size() for kind, _, _, info in opt.units if kind == 'muon')
            print(f"| {mode} | {med(t['opt'])*1e3:.0f} | {med(t['step'])*1e3:.0f} | {mb/2**20:.1f} |")
        z, r = (statistics.median(runs[k][2]['opt']) for k in ('zero2', 'allreduce'))
        ov = statistics.median(runs['zero2+overlap'][2]['step']) / statistics.median(runs['zero2'][2]['step'])
        print(f"ZeRO-2 optimizer step / all-reduce optimizer step = {z/r:.2f}; whole step with reductions started in backward / "
              f"without = {ov:.2f}; max parameter difference between the modes {diff:.2g}")
    dist_teardown()


if __name__ == '__main__':
    if 'RANK' in os.environ: worker()
    else:
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument('--nproc', type=int, default=2)
        a = ap.parse_args()
        env = dict(os.environ, OMP_NUM_THREADS='1')
        sys.exit(subprocess.call([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={a.nproc}', __file__], env=env))
