"The SFT job: 2 ranks match 1 rank on the same global batch; SIGKILL mid-SFT then resume gives the identical loss sequence; bad input."
import os, sys, time, shutil, signal, subprocess
from pathlib import Path
import pytest
from conftest import child_env

PY = sys.executable
LMLIT = [PY, '-c', 'import sys; from lmlit.cli import main; sys.exit(main())']
SFT = ['-p', 'steps', '6', '-p', 'eval_every', '3', '-p', 'sample_every', '0', '-p', 'plots', 'false', '-p', 'device_batch', '2']

@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
    "A smoke base model, trained once for this module."
    root = tmp_path_factory.mktemp('sftbase')
    r = subprocess.run([PY, '-m', 'lmlit.train', '-p', 'run', 'base', '-p', 'steps', '6', '-p', 'eval_every', '-1', '-p', 'sample_every', '0',
                        '-p', 'plots', 'false'], cwd=root, env=child_env(LMLIT_RUNS=root/'runs'), capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    return root/'runs'/'base'

def _copy(base_run, tmp_path, name):
    runs = tmp_path/'runs'; runs.mkdir(exist_ok=True)
    shutil.copytree(base_run, runs/name, ignore=shutil.ignore_patterns('sft', 'mid'))
    return runs/name

def _losses(folder, kind='train', key='loss'):
    from lmlit.loop import read_metrics
    return [r[key] for r in read_metrics(Path(folder)/'metrics.jsonl', kind)]

@pytest.mark.timeout(400)
def test_two_ranks_match_one_rank(base_run, tmp_path):
    one, two = _copy(base_run, tmp_path, 'one'), _copy(base_run, tmp_path, 'two')
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    whole_val = ['-p', 'eval_batches', '100000']   # every validation conversation, so 1 and 2 ranks score the same set
    r1 = subprocess.run([PY, '-m', 'lmlit.sft', '-p', 'run', 'one', *SFT, *whole_val], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([*LMLIT, 'sft', '--nproc', '2', '--run', 'two', *SFT, *whole_val], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    for r in (0, 1): assert (two/'sft'/'notebooks'/f'09_sft.rank{r}.ipynb').exists()
    l1, l2 = _losses(one/'sft'), _losses(two/'sft')
    v1, v2 = _losses(one/'sft', 'eval', 'val_loss'), _losses(two/'sft', 'eval', 'val_loss')
    diff = max(abs(a - b) for a, b in zip(l1, l2))
    print(f"\n1 rank {[round(x, 4) for x in l1]}\n2 ranks {[round(x, 4) for x in l2]}\nmax |diff| {diff:.2e}; val {v1} vs {v2}")
    assert len(l1) == len(l2) == 6
    # the same global batch (1024 tokens = 4 streams of 2 rows x 128): only the order of float sums differs
    assert diff < 1e-3, diff
    # validation: the same conversations, but each rank packs its share into its own rows (and a packed row's earlier
    # conversations are context for the later ones), so the held-out loss agrees to a percent, not to float rounding
    assert all(abs(a - b) / a < 2e-2 for a, b in zip(v1, v2)), (v1, v2)

@pytest.mark.timeout(400)
def test_sigkill_then_resume_gives_the_same_losses(base_run, tmp_path):
    ref, killed = _copy(base_run, tmp_path, 'ref'), _copy(base_run, tmp_path, 'killed')
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    args = ['-p', 'steps', '8', '-p', 'eval_every', '4', '-p', 'sample_every', '0', '-p', 'plots', 'false', '-p', 'checkpoint_every', '2']
    r = subprocess.run([PY, '-m', 'lmlit.sft', '-p', 'run', 'ref', *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen([PY, '-m', 'lmlit.sft', '-p', 'run', 'killed', *args], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from lmlit.checkpoint import complete_checkpoints
    deadline = time.time() + 150
    while time.time() < deadline and not [s for s, _ in complete_checkpoints(killed/'sft') if s >= 4]: time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = [s for s, _ in complete_checkpoints(killed/'sft')]
    assert done and done[-1] < 8, done
    r = subprocess.run([PY, '-m', 'lmlit.sft', '-p', 'run', 'killed', '-p', 'resume', 'true', *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at step {done[-1]}" in r.stdout, r.stdout[-2000:]
    got, want = _losses(killed/'sft'), _losses(ref/'sft')
    print(f"\nkilled at checkpoint {done[-1]}; losses {[round(x, 4) for x in got]}")
    assert got == want                                            # bit-identical on CPU
    assert _losses(killed/'sft', 'eval', 'val_loss') == _losses(ref/'sft', 'eval', 'val_loss')

@pytest.mark.timeout(120)
def test_bad_input_is_refused_before_any_step(base_run, tmp_path):
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    (tmp_path/'runs').mkdir()
    (tmp_path/'runs'/'empty').mkdir()
    r = subprocess.run([*LMLIT, 'sft', '--run', 'empty'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no checkpoint to start sft from" in r.stderr and "lmlit train --run empty" in r.stderr, r.stderr
    _copy(base_run, tmp_path, 'ok')
    (tmp_path/'mix.txt').write_text("identity 1\nchatterbot 0\n")
    r = subprocess.run([*LMLIT, 'sft', '--run', 'ok', '-p', 'mixture', str(tmp_path/'mix.txt')], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "row 2: task 'chatterbot' has weight 0" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([*LMLIT, 'sft', '--run', 'ok', '-p', 'seq_len', '4096'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "longer than the model's context" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
