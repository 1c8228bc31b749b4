"""Held-out pass@1 over RL steps on a CPU-recipe run's SFT model, several settings side by side, plus the control.

Each setting runs the real RL job (`lmlit.rl.rl`) in a scratch run folder whose tokenizer/ and sft/ link to the
source run's (the source run is never written), evaluating pass@1 on the same held-out problems every `--eval-every`
steps. The control sets the reward to 0 everywhere: every group is zero-signal, nothing is trained, and its curve
must stay flat (it measures the evaluation's own noise: same seeds, same model, same numbers).
Run: OMP_NUM_THREADS=1 python bench/rl_gain.py RUN_DIR [--settings NAME ...] [--steps 20] [--eval-every 5]
Writes bench/rl_gain.png and bench/rl_gain.json (the curves, for RESULTS.md)."""
import argparse, json, math, os, sys, tempfile, time
from pathlib import Path
import torch

def zero_reward(question, reply, answer): return 0.0   # the control: no answer is ever better than another

# the settings compared; every other parameter is the RL job's default
BASE = dict(samples=16, prompts=8, device_prompts=8, lr_frac=0.2, max_new_tokens=64, eval_samples=1)
SETTINGS = {
    'K=16, lr 0.2, T=1.0':                  dict(BASE),
    'K=16, lr 0.2, T=0.7 tempered loss':    dict(BASE, temperature=0.7),
    'K=16, lr 0.4, T=0.7 tempered loss':    dict(BASE, temperature=0.7, lr_frac=0.4),
    'control: reward 0 (K=16, lr 0.2, T=0.7)': dict(BASE, temperature=0.7, reward='rl_gain:zero_reward', eval_reward='auto'),
}

def scratch_run(source: Path) -> Path:
    "A run folder whose tokenizer/ and sft/checkpoints/ are links to `source`'s; RL writes its own rl/ inside."
    d = Path(tempfile.mkdtemp(prefix='rl-gain-'))
    (d/'sft').mkdir()
    for sub, link in (('tokenizer', d/'tokenizer'), ('sft/checkpoints', d/'sft'/'checkpoints')):
        link.symlink_to((source/sub).resolve(), target_is_directory=True)
    for f in ('config.json', 'provenance.json'):
        if (source/f).exists(): (d/f).symlink_to((source/f).resolve())
    return d

def curve(run: Path) -> dict:
    recs = [json.loads(l) for l in open(run/'rl'/'metrics.jsonl')]
    ev = [r for r in recs if r['kind'] == 'eval']
    tr = [r for r in recs if r['kind'] == 'rl']
    return dict(steps=[r['step'] for r in ev], pass1=[r['pass@1'] for r in ev], se=[r['pass@1_se'] for r in ev],
                passk=[r['pass@k'] for r in ev], k=ev[0]['k'], n=ev[0]['n'],
                reward=[r['reward'] for r in tr], zero_signal=[r['zero_signal_frac'] for r in tr], cut=[r['cut_frac'] for r in tr],
                completion_len=[r['completion_len'] for r in tr])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('run', type=Path, help='a CPU-recipe run folder with an sft/ checkpoint')
    ap.add_argument('--settings', nargs='*', default=list(SETTINGS))
    ap.add_argument('--steps', type=int, default=20, help='RL steps')
    ap.add_argument('--eval-every', type=int, default=None)
    ap.add_argument('--eval-problems', type=int, default=200)
    ap.add_argument('--out', type=Path, default=Path(__file__).parent/'rl_gain')
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    sys.path.insert(0, str(Path(__file__).parent))          # the control's reward is 'rl_gain:zero_reward'
    from lmlit.rl import rl
    steps = a.steps
    results = json.loads(a.out.with_suffix('.json').read_text()) if a.out.with_suffix('.json').exists() else {}
    for name in a.settings:
        run = scratch_run(a.run)
        params = dict(run=str(run), steps=steps, eval_every=a.eval_every or max(1, steps // 4), eval_problems=a.eval_problems,
                      checkpoint_every=-1, sample_every=0, plots=False, **SETTINGS[name])
        t0 = time.time()
        rl(**params)
        results[name] = dict(params={k: v for k, v in params.items() if k != 'run'}, seconds=round(time.time() - t0), **curve(run))
        c = results[name]
        print(f"{name}: pass@1 {c['pass1'][0]:.3f} ± {c['se'][0]:.3f} -> {c['pass1'][-1]:.3f} ± {c['se'][-1]:.3f} "
              f"(n={c['n']}, k={c['k']}) · zero-signal {sum(c['zero_signal']) / len(c['zero_signal']):.2f} · {c['seconds']} s", flush=True)
        a.out.with_suffix('.json').write_text(json.dumps(results, indent=1))
    plot(results, a.out.with_suffix('.png'))

def plot(results: dict, path: Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    f, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in results.items():
        ls = ':' if 'control' in name else '-'
        ax.errorbar(c['steps'], c['pass1'], yerr=[2 * s for s in c['se']], fmt='o' + ls, capsize=3, label=name)
        bx.plot(range(1, len(c['reward']) + 1), c['reward'], ls, alpha=.7, label=name)
    ax.set(xlabel='RL step', ylabel='held-out pass@1 (± 2 s.e.)', title=f"held-out pass@1, n={c['n']} problems × k={c['k']}")
    bx.set(xlabel='RL step', ylabel='mean training reward', title='training reward')
    for x in (ax, bx): x.grid(alpha=.3); x.legend(fontsize=7)
    f.tight_layout(); f.savefig(path, dpi=100); plt.close(f)
    print(path)

if __name__ == '__main__': main()
