"The RL job: the policy-gradient sign; 2 ranks match 1 rank on the same sampled batch; SIGKILL mid-RL then resume gives the identical loss sequence; bad input."
import os, sys, time, shutil, signal, subprocess
from pathlib import Path
import pytest
from conftest import child_env

PY = sys.executable
LMLIT = [PY, '-c', 'import sys; from lmlit.cli import main; sys.exit(main())']
# a reward with signal even for a smoke model (which never gets an arithmetic answer right): odd-length replies pay
REWARDS = '''
def odd_length(question, reply, answer): return float(len(reply) % 2)
def broken(question, reply, answer): raise ValueError("verifier offline")
def wordy(question, reply, answer): return "yes"
def first_token(question, reply, answer):   # pays for replies that open with the text of token RL_TEST_TOKEN
    import os
    from lmlit.tokenizer import Tokenizer
    global _opening
    if '_opening' not in globals(): _opening = Tokenizer.load(os.environ['RL_TEST_TOKENIZER']).decode([int(os.environ['RL_TEST_TOKEN'])])
    return float(reply.startswith(_opening))
'''
SMALL = ['-p', 'max_new_tokens', '24', '-p', 'eval_problems', '4', '-p', 'plots', 'false']
FILTER = ['-p', 'filter_problems', '12', '-p', 'filter_samples', '4']   # the pre-pass (answers of odd length: kept 1-3 of 4)

@pytest.fixture(scope='module')
def sft_run(tmp_path_factory):
    "A smoke base model and a short SFT on it, trained once for this module; and a folder holding the test rewards."
    root = tmp_path_factory.mktemp('rlbase')
    env = child_env(LMLIT_RUNS=root/'runs')
    r = subprocess.run([PY, '-m', 'lmlit.train', '-p', 'run', 'base', '-p', 'steps', '6', '-p', 'eval_every', '-1', '-p', 'sample_every', '0',
                        '-p', 'plots', 'false'], cwd=root, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([PY, '-m', 'lmlit.sft', '-p', 'run', 'base', '-p', 'steps', '2', '-p', 'eval_every', '-1', '-p', 'sample_every', '0',
                        '-p', 'plots', 'false'], cwd=root, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    (root/'plug').mkdir()
    (root/'plug'/'rl_test_rewards.py').write_text(REWARDS)
    return root

def _copy(sft_run, tmp_path, name):
    runs = tmp_path/'runs'; runs.mkdir(exist_ok=True)
    shutil.copytree(sft_run/'runs'/'base', runs/name, ignore=shutil.ignore_patterns('rl'))
    return runs/name

def _env(sft_run, tmp_path):
    return child_env(LMLIT_RUNS=tmp_path/'runs', PYTHONPATH=os.pathsep.join([str(sft_run/'plug'), os.environ.get('PYTHONPATH', '')]))

def _records(folder, kind='train', key='loss'):
    from lmlit.loop import read_metrics
    return [r[key] for r in read_metrics(Path(folder)/'metrics.jsonl', kind)]

@pytest.mark.timeout(60)
def test_policy_gradient_sign():
    "A reward paying for one token raises its probability; the negated reward lowers it (tiny GPT, pg_loss + the optimizer)."
    from lmlit.rl import toy_pg_run
    before, up = toy_pg_run(+1.0)
    _, down = toy_pg_run(-1.0)
    print(f"\np(target): before {before:.4f}, rewarded {up:.4f}, penalised {down:.4f}")
    assert up > before + 0.1 and down < before / 2, (before, up, down)

def _first_token_probs(run, stage, prompts):
    "The mean next-token distribution right after the assistant's turn opens, over `prompts`, under `stage`'s model."
    import torch
    from lmlit.checkpoint import load_model
    model, tok, _ = load_model(run, stage=stage)
    model.eval()
    with torch.no_grad():
        return torch.stack([torch.softmax(model(torch.tensor([tok.render_for_completion([dict(role='user', content=q)])]))[0, -1], -1)
                            for q in prompts]).mean(0)

@pytest.mark.timeout(300)   # the limit covers the module's SFT fixture too, when this test runs first
def test_rl_on_a_one_token_reward_raises_that_token_in_the_sft_model(sft_run, tmp_path):
    "The real job on the real (smoke) SFT checkpoint: a reward paying for one opening token raises its probability on held-out prompts."
    from lmlit.rl import problems
    run = _copy(sft_run, tmp_path, 'onetoken')
    held = [q for q, _ in problems('arithmetic', 'validation')[:16]]      # never trained on: RL draws from the train split
    before = _first_token_probs(run, 'sft', held)
    ranked = [t for t in before.argsort(descending=True).tolist() if before[t] < 0.5]
    target = ranked[0]                                                    # the likeliest opening with room to grow
    env = {**_env(sft_run, tmp_path), 'RL_TEST_TOKENIZER': str(run/'tokenizer'), 'RL_TEST_TOKEN': str(target)}
    r = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'onetoken', '-p', 'reward', 'rl_test_rewards:first_token', '-p', 'steps', '6',
                        '-p', 'prompts', '4', '-p', 'device_prompts', '4', '-p', 'samples', '16', '-p', 'max_new_tokens', '1', '-p', 'lr_frac', '1.0',
                        '-p', 'eval_every', '0', '-p', 'plots', 'false'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert max(_records(run/'rl', 'rl', 'reward')) > 0                    # the reward was earned: there was signal
    after = _first_token_probs(run, 'rl', held)
    print(f"\np(token {target}) on held-out prompts: sft {before[target]:.4f} -> rl {after[target]:.4f}")
    assert after[target] > 1.5 * before[target] and after[target] > before[target] + 0.05, (before[target].item(), after[target].item())

@pytest.mark.timeout(300)
def test_sigterm_during_the_held_out_eval_stops_promptly_with_a_checkpoint(sft_run, tmp_path):
    "pass@k's k and size are the eval's own: a long eval (200 problems × 16 answers) cut by SIGTERM ends the job within seconds, checkpointed."
    from lmlit.checkpoint import complete_checkpoints
    run = _copy(sft_run, tmp_path, 'term')
    p = subprocess.Popen([PY, '-m', 'lmlit.rl', '-p', 'run', 'term', '-p', 'steps', '4', '-p', 'samples', '2', '-p', 'eval_every', '2',
                          '-p', 'eval_problems', '200', '-p', 'eval_samples', '16', '-p', 'max_new_tokens', '24', '-p', 'plots', 'false'],
                         cwd=tmp_path, env=_env(sft_run, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 150
    while time.time() < deadline and not (run/'rl'/'metrics.jsonl').exists(): time.sleep(0.05)
    time.sleep(1.0)                                                       # inside the step-0 evaluation (3,200 answers: minutes)
    t0 = time.time(); p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    took = time.time() - t0
    print(f"\nstopped {took:.1f} s after SIGTERM")
    assert p.returncode == 0, out[-3000:]
    assert "evaluation stopped by signal" in out and "stopped by signal at step 1" in out, out[-2000:]
    assert took < 30, took
    assert [s for s, _ in complete_checkpoints(run/'rl')] == [1]
    assert _records(run/'rl', 'eval', 'pass@1') == []                     # a cut evaluation is not recorded as if complete

@pytest.mark.timeout(300)
def test_two_ranks_match_one_rank(sft_run, tmp_path):
    one, two = _copy(sft_run, tmp_path, 'one'), _copy(sft_run, tmp_path, 'two')
    env = _env(sft_run, tmp_path)
    args = ['-p', 'steps', '2', '-p', 'eval_every', '-1', '-p', 'prompts', '2', '-p', 'device_prompts', '1',
            '-p', 'reward', 'rl_test_rewards:odd_length', *FILTER, *SMALL]
    r1 = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'one', *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([*LMLIT, 'rl', '--nproc', '2', '--run', 'two', *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=250)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    for r in (0, 1): assert (two/'rl'/'notebooks'/f'10_rl.rank{r}.ipynb').exists()
    l1, l2 = _records(one/'rl'), _records(two/'rl')
    rw1, rw2 = _records(one/'rl', 'rl', 'reward'), _records(two/'rl', 'rl', 'reward')
    n1, n2 = _records(one/'rl', 'rl', 'sampled_tokens'), _records(two/'rl', 'rl', 'sampled_tokens')
    print(f"\n1 rank {l1} rewards {rw1} tokens {n1}\n2 ranks {l2} rewards {rw2} tokens {n2}")
    # step 1: the same weights on every rank, the same seeds per problem -> the same sampled batch, split 2 micro-batches
    # on 1 rank or 1 micro-batch on each of 2 ranks; only the order of float sums differs
    # the pre-pass: each rank answers its share of the problems, the counts are summed: both runs keep the same ones
    f1, f2 = _records(one/'rl', 'filter', 'right_histogram'), _records(two/'rl', 'filter', 'right_histogram')
    assert f1 == f2 and len(f1) == 1 and sum(f1[0]) == 12, (f1, f2)
    assert rw1[0] == rw2[0] and n1[0] == n2[0], (rw1, rw2, n1, n2)
    assert l1[0] != 0.0
    assert abs(l1[0] - l2[0]) < 1e-5, (l1, l2)

@pytest.mark.timeout(300)
def test_sigkill_then_resume_gives_the_same_losses(sft_run, tmp_path):
    ref, killed = _copy(sft_run, tmp_path, 'ref'), _copy(sft_run, tmp_path, 'killed')
    env = _env(sft_run, tmp_path)
    args = ['-p', 'steps', '8', '-p', 'eval_every', '4', '-p', 'checkpoint_every', '2', '-p', 'reward', 'rl_test_rewards:odd_length',
            *FILTER, *SMALL]
    r = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'ref', *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen([PY, '-m', 'lmlit.rl', '-p', 'run', 'killed', *args], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from lmlit.checkpoint import complete_checkpoints
    deadline = time.time() + 150
    while time.time() < deadline and not [s for s, _ in complete_checkpoints(killed/'rl') if s >= 4]: time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    done = [s for s, _ in complete_checkpoints(killed/'rl')]
    assert done and done[-1] < 8, done
    # the kept problems are the run's: resuming with another pre-pass is refused, before any step, checkpoints kept
    r = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'killed', '-p', 'resume', 'true', *args, '-p', 'filter_problems', '10'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert r.returncode != 0 and "filtered its training problems with filter_problems, filter_samples = [12, 4]" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'killed', '-p', 'resume', 'true', *args, '-p', 'filter_problems', '0'],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)   # nor without one
    assert r.returncode != 0 and "filter_samples = [12, 4], not none (0)" in r.stderr, r.stderr[-2000:]
    assert [s for s, _ in complete_checkpoints(killed/'rl')] == done
    r = subprocess.run([PY, '-m', 'lmlit.rl', '-p', 'run', 'killed', '-p', 'resume', 'true', *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at step {done[-1]}" in r.stdout, r.stdout[-2000:]
    got, want = _records(killed/'rl'), _records(ref/'rl')
    print(f"\nkilled at checkpoint {done[-1]}; losses {[round(x, 5) for x in got]}")
    assert len(want) == 8 and any(x != 0.0 for x in want), want
    assert got == want                                                      # bit-identical on CPU
    assert _records(killed/'rl', 'rl', 'reward') == _records(ref/'rl', 'rl', 'reward')
    assert _records(killed/'rl', 'eval', 'pass@1') == _records(ref/'rl', 'eval', 'pass@1')

@pytest.mark.timeout(200)
def test_bad_input_is_refused_before_any_step(sft_run, tmp_path):
    env = _env(sft_run, tmp_path)
    (tmp_path/'runs').mkdir()
    (tmp_path/'runs'/'empty').mkdir()
    r = subprocess.run([*LMLIT, 'rl', '--run', 'empty'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no checkpoint to start rl from" in r.stderr, r.stderr
    ok = _copy(sft_run, tmp_path, 'ok')
    cases = [(['-p', 'samples', '1'], "a group of one has no baseline"),
             (['-p', 'max_new_tokens', '4096'], "exceeds the model's context"),
             (['-p', 'reward', 'rl_test_rewards:broken'], "reward function broken raised ValueError: verifier offline"),
             (['-p', 'reward', 'rl_test_rewards:wordy'], "reward function wordy returned 'yes' (str); it must return a finite number"),
             (['-p', 'reward', 'rl_test_rewards:nothing'], "reward 'rl_test_rewards:nothing' cannot be loaded")]
    for extra, message in cases:
        r = subprocess.run([*LMLIT, 'rl', '--run', 'ok', *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stdout[-1500:], r.stderr[-1500:])
    assert not (ok/'rl').exists()                                   # refused before anything was written
    assert (ok/'sft'/'checkpoints').exists()                         # nothing lost
