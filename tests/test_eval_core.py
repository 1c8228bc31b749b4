"CORE evaluation across processes and from the command line: 2 ranks give the 1-rank result; bad input fails clearly."
import json, subprocess, sys, textwrap
from pathlib import Path
import pytest
from conftest import free_port, child_env, ROOT

WORKER = textwrap.dedent('''
    import json, sys, torch
    from lmlit.core import dist_setup, dist_teardown, dist_env
    from lmlit.model import GPTConfig, build_model
    from lmlit.tokenizer import get_tokenizer
    from lmlit.eval import run_core
    info = dist_setup('cpu')
    tok = get_tokenizer('shakespeare', 512)
    torch.manual_seed(0)
    model = build_model(GPTConfig(sequence_len=192, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_kv_head=2, n_embd=64), 'cpu')
    with torch.no_grad(): model.lm_head.weight.normal_(0, 0.5)      # a model with opinions, so ties are rare
    res = run_core(model, tok, 'cpu', tasks=['arc_easy', 'winogrande', 'boolq', 'lambada_openai'], max_per_task=int(sys.argv[2]),
                   batch_size=int(sys.argv[3]), progress=False)
    if info.is_main:
        out = {n: [dict(r) for r in t.records] for n, t in res.tasks.items()}
        out['_core'] = res.core; out['_label'] = res.label
        open(sys.argv[1], 'w').write(json.dumps(out))
    dist_teardown()
''')

def _run(tmp_path, nproc, batch, n=10):
    script = tmp_path/'worker.py'; script.write_text(WORKER)
    out = tmp_path/f'out{nproc}_{batch}.json'
    cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', '--master_addr=127.0.0.1',
           f'--master_port={free_port()}', str(script), str(out), str(n), str(batch)]
    r = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout + r.stderr

@pytest.mark.timeout(300)
def test_two_ranks_equal_one(tmp_path):
    one, log1 = _run(tmp_path, 1, 4)
    two, log2 = _run(tmp_path, 2, 16)          # other ranks *and* other batch packing
    assert one['_label'] == two['_label'] and one['_label'].startswith('CORE (4/22 tasks')
    for task in ('arc_easy', 'winogrande', 'boolq', 'lambada_openai'):
        a, b = one[task], two[task]
        assert [r['i'] for r in a] == [r['i'] for r in b] and len(a) == 10
        assert [r['correct'] for r in a] == [r['correct'] for r in b], task
        for ra, rb in zip(a, b):
            assert ra.get('pred') == rb.get('pred')
            la, lb = ra.get('losses', [ra.get('loss')]), rb.get('losses', [rb.get('loss')])
            assert max(abs(x - y) for x, y in zip(la, lb)) < 1e-4
    assert abs(one['_core'] - two['_core']) < 1e-12
    # boolq prompts (passages + 10 examples) exceed 192 tokens: cut from the left, said once per run
    for log in (log1, log2): assert log.count('cut from the left') == 1 and 'boolq 20' in log, log[-2000:]

def _lmlit(*args, env=None):
    return subprocess.run([sys.executable, '-c', 'import sys; from lmlit.cli import main; sys.exit(main(sys.argv[1:]))', *args],
                          cwd=ROOT, env=env or child_env(), capture_output=True, text=True, timeout=120)

@pytest.mark.timeout(120)
def test_cli_bad_input(tmp_path, run_root):
    (run_root/'r').mkdir(parents=True)
    env = child_env(LMLIT_RUNS=run_root)
    r = _lmlit('eval', '--run', 'r', '--tasks', 'arc_easy,mmlu', env=env)
    assert r.returncode == 2 and 'unknown CORE task(s) mmlu' in r.stderr and 'arc_challenge' in r.stderr
    r = _lmlit('eval', '--run', 'nope', env=env)
    assert r.returncode == 2 and 'no run folder' in r.stderr
    r = _lmlit('eval', '--run', 'r', '--checkpoint', 'best', env=env)
    assert r.returncode == 2 and 'step_N' in r.stderr

@pytest.mark.timeout(120)
def test_bundle_missing_files(tmp_path):
    from lmlit.core import LmlitError
    from lmlit.eval import load_bundle, run_core
    b = tmp_path/'bundle'; (b/'eval_data').mkdir(parents=True)
    (b/'core.yaml').write_text('icl_tasks:\n-\n  label: copa\n  dataset_uri: commonsense_reasoning/copa.jsonl\n  num_fewshot: [0]\n  icl_task_type: multiple_choice\n')
    with pytest.raises(LmlitError, match='eval_meta_data.csv'): load_bundle(b)
    (b/'eval_meta_data.csv').write_text('Eval Task,Random baseline\ncopa,50\n')
    with pytest.raises(LmlitError, match='copa.jsonl'): run_core(None, None, tasks=['copa'], bundle=b)
    (b/'eval_data'/'commonsense_reasoning').mkdir()
    (b/'eval_data'/'commonsense_reasoning'/'copa.jsonl').write_text(json.dumps(dict(query='The man fell because', choices=['he slipped', 'he sang'], gold=0)) + '\n')
    t = load_bundle(b)['copa']
    assert (t.kind, t.baseline, t.shots, len(t)) == ('mc', 0.5, 0, 1)
