"""Does running the training job through papermill cost throughput?

Interleaves N runs of the same config as `lmlit train` (papermill executing nbs/05_train.ipynb in a kernel)
and as `python -m lmlit.train` (train() in a plain process), and compares steady-state tokens/s: the
tokens of steps after the first `--skip` divided by those steps' measured time (from metrics.jsonl).
Also reports total wall time per run, which includes papermill's kernel start and the chapter's test cells.

    python bench/train_overhead.py [--reps 3] [--steps 40] [--results bench/RESULTS.md]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(depth=2, aspect_ratio=64, head_dim=64, seq_len=256, device_batch=8, total_batch=2048, vocab_size=1024,
           eval_every=-1, sample_every=0, plots=False, checkpoint_every=-1)

def steady(run_dir, skip):
    recs = [json.loads(l) for l in (run_dir/'metrics.jsonl').read_text().splitlines() if '"train"' in l]
    recs = [r for r in recs if r.get('kind') == 'train' and r['step'] > skip]
    return sum(2048 for _ in recs) / sum(r['t_step'] for r in recs)

def one(kind, root, i, steps, skip):
    name = f"{kind}-{i}"
    pairs = [x for k, v in {**CFG, 'steps': steps}.items() for x in ('-p', k, str(v))]
    if kind == 'papermill': cmd = [sys.executable, '-c', 'import sys; from lmlit.cli import main; sys.exit(main())', 'train', '--run', name, *pairs]
    else: cmd = [sys.executable, '-m', 'lmlit.train', '-p', 'run', name, *pairs]
    env = dict(os.environ, LMLIT_RUNS=str(root))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - t0
    if r.returncode: raise SystemExit(f"{kind} run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return steady(root/name, skip), wall

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--reps', type=int, default=3); ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--skip', type=int, default=5); ap.add_argument('--results', default=str(ROOT/'bench'/'RESULTS.md'))
    a = ap.parse_args()
    res = {'papermill': [], 'python -m': []}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(a.reps):                       # interleaved: papermill, python -m, papermill, ...
            for kind in res: res[kind].append(one(kind.split()[0], root, i, a.steps, a.skip)); print(kind, i, res[kind][-1], flush=True)
    med = {k: statistics.median(t for t, _ in v) for k, v in res.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in res.items()}
    ratios = [p[0] / q[0] for p, q in zip(res['papermill'], res['python -m'])]
    cfg = ', '.join(f"{k}={v}" for k, v in CFG.items())
    lines = [f"`python bench/train_overhead.py --reps {a.reps} --steps {a.steps}` ({datetime.date.today()}, CPU, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, a shared noisy 2-core machine). Config: {cfg}. Steady state = steps "
             f"{a.skip + 1}..{a.steps}; interleaved runs, median of {a.reps}.", '',
             '| launcher | steady tok/s (median) | ratio | wall s per run (median, incl. start-up) |', '|---|---:|---:|---:|']
    for k in res: lines.append(f"| {k} | {med[k]:,.0f} | {med[k] / med['python -m']:.3f} | {wall[k]:.1f} |")
    lines += ['', f"per-pair ratios papermill / python -m: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}; target within 3 %)",
              f"all runs tok/s: " + '; '.join(f"{k}: {', '.join(f'{t:,.0f}' for t, _ in v)}" for k, v in res.items())]
    text = '\n'.join(lines)
    print(text)
    p = Path(a.results); old = p.read_text() if p.exists() else '# Benchmark results\n'
    head = '## Training job'
    if head in old:                                   # replace only this section
        pre, rest = old.split(head, 1); nxt = rest.find('\n## ')
        old = pre + (rest[nxt + 1:] if nxt >= 0 else '')
    p.write_text(old.rstrip() + f"\n\n{head}\n\n{text}\n")

if __name__ == '__main__': main()
