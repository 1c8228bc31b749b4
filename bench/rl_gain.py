"""Held-out pass@1 over RL steps on a CPU-recipe run's SFT model, several settings side by side, plus the control.

Each setting runs the real RL job (`lmlit.rl.rl`) in a scratch run folder whose tokenizer/ and sft/ link to the
source run's (the source run is never written), evaluating pass@1 on the same 200 held-out problems × 1 answer every
`--eval-every` steps; then the final model, and the SFT model once, on all 400 validation problems × 4 answers (the
figure the issue's "+10 points beyond 2σ" is read on). The control sets the reward to 0 everywhere: every group is
zero-signal, no step updates, and its curve must stay flat.
Run: OMP_NUM_THREADS=1 python bench/rl_gain.py RUN_DIR [--settings NAME ...] [--steps 40] [--eval-every 10]
Writes bench/rl_gain.png and bench/rl_gain.json (the curves, for RESULTS.md)."""
import argparse, json, math, os, sys, tempfile, time
from pathlib import Path
import torch

def zero_reward(question, reply, answer): return 0.0   # the control: no answer is ever better than another

# the settings compared; every other parameter is the RL job's default. RECIPE = runs/cpu.sh's RL stage
RECIPE = dict(prompts=32, device_prompts=32, samples=8, lr_frac=0.5, max_new_tokens=64, filter_problems=1200, filter_samples=4)
P16 = dict(RECIPE, prompts=16, device_prompts=16)   # the first version of the recipe: about half the gain
SETTINGS = {
    'recipe (32 problems a step, pre-pass, advantages >= 0)': dict(RECIPE),
    'recipe, seed 1':                                  dict(RECIPE, seed=1),
    'recipe, seed 2':                                  dict(RECIPE, seed=2),
    '16 problems a step':                              dict(P16),
    '16 a step, seed 1':                               dict(P16, seed=1),
    '16 a step, seed 2':                               dict(P16, seed=2),
    '16 a step, KL 0.1 to the SFT policy':             dict(P16, kl_coef=0.1),
    '16 a step, no pre-pass, signed advantages (before)': dict(P16, filter_problems=0, positive_only=False),
    '16 a step, pre-pass, signed advantages':          dict(P16, positive_only=False),
    'control: reward 0 (16 a step)':                   dict(P16, reward='rl_gain:zero_reward', eval_reward='auto'),
}
FINAL = dict(eval_problems=400, eval_samples=4)   # the final figure: every validation problem, 4 answers each

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
                completion_len=[r['completion_len'] for r in tr], updated=[r['updated'] for r in tr],
                filter=next((f"{r['kept']}/{r['scanned']}" for r in recs if r['kind'] == 'filter'), None))

def final_pass_rates(run: Path, stage: str, cfg: dict) -> dict:
    "pass@1 ± s.e. of `stage`'s newest checkpoint in `run` on FINAL's problems and answers (T = eval_temperature)."
    from lmlit.checkpoint import load_model
    from lmlit.rl import held_out_pass_rates, problems, exact_answer
    model, tok, meta = load_model(run, stage=stage)
    items = problems('arithmetic', 'validation')[:FINAL['eval_problems']]
    return held_out_pass_rates(model, tok, items, exact_answer, {**cfg, **FINAL}, meta['model_shape']['sequence_len'])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('run', type=Path, help='a CPU-recipe run folder with an sft/ checkpoint')
    ap.add_argument('--settings', nargs='*', default=list(SETTINGS))
    ap.add_argument('--steps', type=int, default=40, help='RL steps')
    ap.add_argument('--eval-every', type=int, default=10)
    ap.add_argument('--eval-problems', type=int, default=200)
    ap.add_argument('--out', type=Path, default=Path(__file__).parent/'rl_gain')
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    sys.path.insert(0, str(Path(__file__).parent))          # the control's reward is 'rl_gain:zero_reward'
    from lmlit.rl import rl, resolve_config
    steps = a.steps
    results = json.loads(a.out.with_suffix('.json').read_text()) if a.out.with_suffix('.json').exists() else {}
    if 'sft_final' not in results:
        t0 = time.time()
        results['sft_final'] = dict(final_pass_rates(a.run, 'sft', resolve_config(**RECIPE)), seconds=round(time.time() - t0))
        print(f"SFT model, {FINAL['eval_problems']} × {FINAL['eval_samples']}: pass@1 {results['sft_final']['pass@1']:.3f} ± "
              f"{results['sft_final']['pass@1_se']:.3f} ({results['sft_final']['seconds']} s)", flush=True)
    for name in a.settings:
        run = scratch_run(a.run)
        params = dict(run=str(run), steps=steps, eval_every=a.eval_every, eval_problems=a.eval_problems, eval_samples=1,
                      checkpoint_every=-1, sample_every=0, plots=False, **SETTINGS[name])
        t0 = time.time()
        rl(**params)
        seconds = round(time.time() - t0)
        kept_params = {k: v for k, v in params.items() if k != 'run'}   # the scratch folder's path is not a setting
        final = final_pass_rates(run, 'rl', resolve_config(**kept_params))
        results[name] = dict(params=kept_params, seconds=seconds, final=final, **curve(run))
        c, f0 = results[name], results['sft_final']
        diff, two_sigma = final['pass@1'] - f0['pass@1'], 2 * math.hypot(final['pass@1_se'], f0['pass@1_se'])
        print(f"{name}: pass@1 {c['pass1'][0]:.3f} ± {c['se'][0]:.3f} -> {c['pass1'][-1]:.3f} ± {c['se'][-1]:.3f} "
              f"(n={c['n']}, k={c['k']}) · {FINAL['eval_problems']}×{FINAL['eval_samples']}: {f0['pass@1']:.3f} -> "
              f"{final['pass@1']:.3f} ± {final['pass@1_se']:.3f} ({diff:+.3f}, 2σ {two_sigma:.3f}) · zero-signal "
              f"{sum(c['zero_signal']) / len(c['zero_signal']):.2f} · reward {c['reward'][0]:.3f} -> "
              f"{sum(c['reward'][-5:]) / 5:.3f} · kept {c['filter']} · {seconds} s", flush=True)
        a.out.with_suffix('.json').write_text(json.dumps(results, indent=1))
    plot(results, a.out.with_suffix('.png'))

def plot(results: dict, path: Path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    f, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in results.items():
        if name == 'sft_final': continue
        ls = ':' if 'control' in name else '-'
        ax.errorbar(c['steps'], c['pass1'], yerr=[2 * s for s in c['se']], fmt='o' + ls, capsize=3, label=name)
        bx.plot(range(1, len(c['reward']) + 1), c['reward'], ls, alpha=.7, label=name)
    ax.set(xlabel='RL step', ylabel='held-out pass@1 (± 2 s.e.)', title=f"held-out pass@1, n={c['n']} problems × k={c['k']}")
    bx.set(xlabel='RL step', ylabel='mean training reward', title='training reward')
    for x in (ax, bx): x.grid(alpha=.3); x.legend(fontsize=7)
    f.tight_layout(); f.savefig(path, dpi=100); plt.close(f)
    print(path)

if __name__ == '__main__': main()
