"The training loop through `python -m lmlit.train` / `train()`: exact resume, partial checkpoints, step-time breakdown, memory planner, bad input."
import json, os, sys, time, signal, shutil, subprocess, textwrap
from pathlib import Path
import pytest
from conftest import ROOT, child_env

PY = sys.executable

def _run(tmp_path, *pairs, timeout=200, check=True):
    args = [PY, '-m', 'lmlit.train']
    for k, v in pairs: args += ['-p', k, str(v)]
    r = subprocess.run(args, cwd=tmp_path, env=child_env(LMLIT_RUNS=tmp_path/'runs'), capture_output=True, text=True, timeout=timeout)
    if check: assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r

def _train(run_dir, kind='train'):
    from lmlit.loop import read_metrics
    return read_metrics(Path(run_dir)/'metrics.jsonl', kind)

BASE = [('steps', 10), ('checkpoint_every', 2), ('keep_last', 3), ('eval_every', 5), ('sample_every', 0), ('plots', False)]

@pytest.mark.timeout(240)
def test_sigkill_then_resume_is_identical_and_skips_partial_checkpoints(tmp_path):
    _run(tmp_path, ('run', 'ref'), *BASE)
    ref = [r['loss'] for r in _train(tmp_path/'runs'/'ref')]
    assert len(ref) == 10
    # the same run, killed with SIGKILL mid-training (a slow loader gives us time to do it)
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    args = [PY, '-m', 'lmlit.train', '-p', 'run', 'killed', '-p', 'loader_delay_s', '0.15']
    for k, v in BASE: args += ['-p', k, str(v)]
    p = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rd = tmp_path/'runs'/'killed'
    deadline = time.time() + 150
    while time.time() < deadline:
        done = _train(rd) if (rd/'metrics.jsonl').exists() else []
        if done and done[-1]['step'] >= 5: break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    from lmlit.checkpoint import complete_checkpoints, save_checkpoint
    steps_before = [s for s, _ in complete_checkpoints(rd)]
    killed_at = _train(rd)[-1]['step']
    assert killed_at < 10 and steps_before and steps_before[-1] >= 4, (killed_at, steps_before)
    # a checkpoint writer killed half-way: a child process dies right after writing its first file
    code = textwrap.dedent(f'''
        import os, torch
        from lmlit.checkpoint import save_checkpoint
        _save = torch.save
        def dying_save(obj, f, *a, **k): _save(obj, f, *a, **k); os._exit(9)
        torch.save = dying_save
        save_checkpoint({str(rd)!r}, 90, {{'w': torch.zeros(3)}}, None, {{}}, {{}})''')
    r = subprocess.run([PY, '-c', code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    partial = rd/'checkpoints'/'.tmp-step_90'
    assert partial.exists() and not (partial/'meta.json').exists()
    assert [s for s, _ in complete_checkpoints(rd)] == steps_before      # the partial folder is not a checkpoint
    r = _run(tmp_path, ('run', 'killed'), ('resume', True), *BASE)
    assert f"at step {steps_before[-1]}" in r.stdout, r.stdout[-2000:]
    got = [r['loss'] for r in _train(rd)]
    print(f"\nkilled after step {killed_at}, resumed from step {steps_before[-1]}; reference {[round(x, 4) for x in ref]}")
    print(f"max |resumed - uninterrupted| = {max(abs(a - b) for a, b in zip(got, ref))}")
    assert got == ref                                                   # bit-identical on CPU
    assert [r['val_bpb'] for r in _train(rd, 'eval')] == [r['val_bpb'] for r in _train(tmp_path/'runs'/'ref', 'eval')]
    assert [s for s, _ in complete_checkpoints(rd)] == [6, 8, 10]       # keep_last=3, partial leftovers never counted

@pytest.mark.timeout(120)
def test_loader_sleep_shows_as_data_wait(tmp_path, run_root):
    from lmlit.train import train; from lmlit.loop import PARTS
    with pytest.warns(UserWarning, match='data wait is'):
        s = train(run='sleepy', steps=8, loader_delay_s=0.1, eval_every=4, sample_every=0, plots=False)
    recs = _train(run_root/'sleepy')
    for r in recs:
        parts = sum(r[f't_{p}'] for p in PARTS)
        assert abs(parts - r['t_step']) / r['t_step'] < 0.05, (r['step'], parts, r['t_step'])
        assert r['t_data'] >= 2 * 0.1 * 0.95                           # two micro-batches of 0.1 s sleep each
    avg = s['breakdown_avg']
    print(f"\namortised breakdown (s): { {k: round(v, 4) for k, v in avg.items()} }")
    assert avg['data'] >= 2 * 0.1 * 0.95
    assert recs[4]['step'] == 5 and recs[4]['t_eval'] > 0    # the eval at step 4 is timed in the next step, as eval

PLANNER = """
import json, sys
from lmlit.train import train
s = train(**json.loads(sys.argv[1]))
print('RESULT', json.dumps(dict(plan=s['plan_bytes'], measured=s['measured_peak_bytes'])))
"""

@pytest.mark.timeout(200)
@pytest.mark.parametrize('name,cfg', [
    ('d4-b8-t256', dict(depth=4, aspect_ratio=64, head_dim=64, seq_len=256, device_batch=8, total_batch=2048)),
    ('d2-b16-t512-ckpt', dict(depth=2, aspect_ratio=64, head_dim=64, seq_len=512, device_batch=16, total_batch=8192, activation_checkpointing=True)),
    # the CPU recipe's config: a 4,096 vocabulary, where the head's logits are most of the memory
    ('recipe-d2-b16-t256-v4096', dict(depth=2, aspect_ratio=64, head_dim=64, seq_len=256, device_batch=16, total_batch=4096, vocab_size=4096)),
])
def test_memory_planner_within_25_percent(tmp_path, name, cfg):
    cfg = dict(dict(vocab_size=1024), **cfg, run=name, steps=2, eval_every=-1, sample_every=0, plots=False)
    r = subprocess.run([PY, '-c', PLANNER, json.dumps(cfg)], cwd=tmp_path, env=child_env(LMLIT_RUNS=tmp_path/'runs'),
                       capture_output=True, text=True, timeout=190)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split('RESULT', 1)[1])
    ratio = res['measured'] / res['plan']
    print(f"\n{name}: planned {res['plan']/2**20:.0f} MiB, measured {res['measured']/2**20:.0f} MiB (peak RSS growth), ratio {ratio:.2f}")
    assert 0.75 <= ratio <= 1.25

@pytest.mark.timeout(120)
def test_loss_chunk_trains_the_same(tmp_path, run_root):
    "loss_chunk (head + loss in chunks, gradients formed in forward) against the default path: the same run, step for step."
    from lmlit.train import train
    quick = dict(steps=4, eval_every=-1, sample_every=0, plots=False)
    a = train(run='plain', **quick)
    b = train(run='chunked', loss_chunk=100, **quick)     # 4 x 128 tokens per micro-batch: ragged chunks of 100
    diff = max(abs(x - y) for x, y in zip(a['losses'], b['losses']))
    bpb_a, bpb_b = a['val_bpb'][-1][1], b['val_bpb'][-1][1]
    print(f"\nlosses {a['losses']} vs {b['losses']}: max diff {diff:.2g}; val BPB {bpb_a:.6f} vs {bpb_b:.6f}")
    assert len(a["losses"]) == len(b["losses"]) == 4 and diff < 5e-4   # bf16 Newton-Schulz amplifies rounding differences (4e-5 seen)
    assert abs(bpb_a - bpb_b) < 1e-4 * bpb_a
    assert b['plan_bytes'] < a['plan_bytes']

def _no_step_ran(run_dir):
    return not _train(run_dir) and not list((Path(run_dir)/'checkpoints').glob('step_*'))

@pytest.mark.timeout(200)
def test_bad_input_is_refused_before_any_step(tmp_path, run_root):
    from lmlit.core import LmlitError
    from lmlit.train import train
    from lmlit.tokenizer import get_tokenizer
    quick = dict(steps=2, eval_every=-1, sample_every=0, plots=False)
    # over the memory limit: names the largest batch that fits and what activation checkpointing would do
    with pytest.raises(LmlitError, match=r'exceeds memory_limit_gb 0.012 at device_batch 4\. The largest device_batch that fits is [0-9]+.*'
                                         r'with activation_checkpointing=True device_batch [0-9]+ would fit'):
        train(run='mem', memory_limit_gb=0.012, **quick)
    assert _no_step_ran(run_root/'mem')
    with pytest.raises(LmlitError, match=r'total_batch 1000 is not a multiple of device_batch × seq_len × world = 4 × 128 × 1 = 512; try 512 or 1024'):
        train(run='div', total_batch=1000, **quick)
    with pytest.raises(LmlitError, match='has no complete checkpoint'):
        train(run='nockpt', resume=True, **quick)
    assert _no_step_ran(run_root/'nockpt')
    # a source with one file and no held-out part
    (tmp_path/'onefile').mkdir(); (tmp_path/'onefile'/'a.txt').write_text('Some words here. ' * 100)   # one document: nothing to hold out
    with pytest.raises(LmlitError, match='no validation shard'):
        train(run='noval', source=str(tmp_path/'onefile'), **quick)
    # a finished run, then resume with another model shape / another tokenizer
    train(run='base', **quick)
    n = len(_train(run_root/'base'))
    with pytest.raises(LmlitError, match='another model shape: n_layer 2 .checkpoint. vs 3'):
        train(run='base', resume=True, depth=3, aspect_ratio=32, head_dim=32, **{**quick, 'steps': 4})
    # same vocabulary size (so the same model shape), other merges: trained on a 200k-character prefix
    other = run_root.parent/'tok-other'; get_tokenizer('shakespeare', 1024, max_chars=200_000).save(other)
    with pytest.raises(LmlitError, match='made with another tokenizer'):
        train(run='base', resume=True, tokenizer=str(other), **{**quick, 'steps': 4})
    with pytest.raises(LmlitError, match='already has checkpoints'):
        train(run='base', **quick)
    assert len(_train(run_root/'base')) == n                              # none of these ran a step

@pytest.mark.timeout(120)
def test_nonfinite_stops_with_last_good_checkpoint_kept(run_root, monkeypatch):
    from lmlit.core import LmlitError
    from lmlit import optim as O
    from lmlit.train import train; from lmlit.checkpoint import complete_checkpoints
    # test-side injection: from the 4th step on the learning rate is infinite, so the weights blow up
    monkeypatch.setattr(O, 'lr_multiplier', lambda step, *a, **k: 1.0 if step < 3 else float('inf'))
    with pytest.raises(LmlitError, match=r'(loss became nan|non-finite).*last good checkpoint \(step_3\) is kept'):
        train(run='nan', steps=40, checkpoint_every=1, eval_every=-1, sample_every=0, plots=False)
    assert [s for s, _ in complete_checkpoints(run_root/'nan')] == [2, 3]

@pytest.mark.timeout(150)
def test_sigterm_saves_checkpoint_and_exits_cleanly(tmp_path):
    from lmlit.checkpoint import complete_checkpoints
    args = [PY, '-m', 'lmlit.train', '-p', 'run', 'term', '-p', 'steps', '200', '-p', 'loader_delay_s', '0.1',
            '-p', 'eval_every', '-1', '-p', 'sample_every', '0', '-p', 'plots', 'false']
    p = subprocess.Popen(args, cwd=tmp_path, env=child_env(LMLIT_RUNS=tmp_path/'runs'), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rd = tmp_path/'runs'/'term'
    for line in p.stdout:
        if line.startswith('step     3/200'): break
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 0, out[-2000:]
    last = _train(rd)[-1]['step']
    assert 3 <= last < 200 and f'stopped by signal at step {last}' in out
    assert [s for s, _ in complete_checkpoints(rd)] == [last]


@pytest.mark.timeout(120)
def test_planner_covers_exact_tensor_peak_for_each_loss_path():
    """Peak RSS (the other planner test) also counts non-tensor memory (~100 MiB of library workspaces and allocator
    slack here). torch's MemTracker counts tensors exactly, as the CUDA allocator does: for the plain head (what GPUs
    run), the fused CPU loss and the chunked loss the plan must cover that peak without being wildly above it, and
    the chunked loss must hold the least."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker
    from lmlit.model import GPTConfig, build_model
    from lmlit.optim import setup_optimizer
    from lmlit.memory import plan_memory
    cfg = GPTConfig.from_depth(2, vocab_size=4096, sequence_len=256, aspect_ratio=64, head_dim=64)
    x = torch.randint(0, 4096, (16, 256))
    res = {}
    for name, chunk, fused in (('plain', 0, False), ('fused CPU', 0, True), ('chunked 512', 512, False)):
        torch.manual_seed(0)
        m = build_model(cfg, 'cpu'); m.loss_chunk, m.fused_cpu_loss = chunk, fused
        opt = setup_optimizer(m)
        plan = plan_memory(m, opt, 16, 256, 'cpu')['total']
        m(x, x).backward(); opt.step(); opt.zero_grad(set_to_none=True)
        mt = MemTracker(); mt.track_external(m, opt)
        with mt:
            m(x, x).backward(); opt.step(); opt.zero_grad(set_to_none=True)
        peak = sum(v['Total'] for v in mt.get_tracker_snapshot('peak').values())
        res[name] = (plan, peak)
    print('\n' + '\n'.join(f"{k}: planned {p / 2**20:.0f} MiB, tensor peak {t / 2**20:.0f} MiB, ratio {t / p:.2f}" for k, (p, t) in res.items()))
    for name, (plan, peak) in res.items():
        assert 0.4 * plan <= peak <= plan, (name, plan, peak)
    assert res['chunked 512'][1] < res['fused CPU'][1] < res['plain'][1]
