"""Chat evaluation (lmlit.chat_eval): scoring with scripted models and replies, the GSM8K gold solutions
through the extraction, HumanEval's canonical solutions in the sandbox, coverage when a task is missing,
and a 2-rank run equal to a 1-rank run. The file is also the 2-rank worker."""
import os, sys, json, re, subprocess
from pathlib import Path
import pytest
import torch

pytestmark = pytest.mark.timeout(120)


def _tok():
    from lmlit.tokenizer import Tokenizer
    return Tokenizer({bytes([i]): i for i in range(256)})      # bytes only: every letter is one token


class Prefers(torch.nn.Module):
    "Logits favouring `letter` right after <|assistant_start|>, and 'D' everywhere else (a padded position would show)."
    def __init__(self, tok, letter):
        super().__init__(); self.tok, self.letter = tok, letter
    def forward(self, idx):
        out = torch.zeros(*idx.shape, self.tok.vocab_size)
        out[..., self.tok.encode('D')[0]] = 1.0
        out[idx == self.tok.encode_special('<|assistant_start|>'), self.tok.encode(self.letter)[0]] = 5.0
        return out


def test_the_right_letter_scores():
    from lmlit.chat_eval import run_chat_eval, load_items
    tok = _tok()
    res = run_chat_eval(Prefers(tok, 'C'), tok, ['arc_challenge'], max_per_task=60, batch_size=7, progress=False)
    recs = res.tasks['arc_challenge'].records
    assert len(recs) == 60 and {r['pred'] for r in recs} == {'C'}
    assert [r['score'] for r in recs] == [float(r['gold'] == 'C') for r in recs]
    assert 0 < res.tasks['arc_challenge'].accuracy < 1          # some gold C, some not: the score depends on the item
    assert res.tasks['arc_challenge'].diagnostics['predicted']['C'] == 1.0


def test_right_number_in_the_wrong_format_is_a_format_failure():
    from lmlit.chat_eval import run_chat_eval, scripted_generator, load_items
    tok = _tok()
    gold = {it['question']: it['gold'] for it in load_items('gsm8k')[0]}
    def reply(fmt): return scripted_generator(tok, lambda q: fmt.format(g=gold[q]))
    plain = run_chat_eval(None, tok, ['gsm8k'], reply("The answer is {g}."), max_per_task=20, progress=False).tasks['gsm8k']
    assert plain.accuracy == 0 and plain.diagnostics['format_failure_rate'] == 1.0
    ok = run_chat_eval(None, tok, ['gsm8k'], reply("work... #### {g}"), max_per_task=20, progress=False).tasks['gsm8k']
    assert ok.accuracy == 1.0 and ok.diagnostics['format_failure_rate'] == 0
    # GSM8K's official rule compares strings: these are wrong (or no answer) there, right only in the lenient reading
    for fmt, failure in [("#### {g}.0", 0), ("#### {g}.", 0), ("#### ${g}", 1), ("####{g}", 1)]:
        off = run_chat_eval(None, tok, ['gsm8k'], reply(fmt), max_per_task=20, progress=False).tasks['gsm8k']
        assert off.accuracy == 0 and off.diagnostics['format_failure_rate'] == failure, fmt
        assert off.diagnostics['lenient_accuracy'] == 1.0, fmt
    wrong = run_chat_eval(None, tok, ['gsm8k'], reply("#### 1{g}7"), max_per_task=20, progress=False).tasks['gsm8k']
    assert wrong.accuracy == 0 and wrong.diagnostics['format_failure_rate'] == 0     # wrong, but well-formed


def test_thousands_separator_and_letters():
    from lmlit.chat_data import gsm8k_answer, lenient_answer
    from lmlit.chat_eval import parse_letter
    assert gsm8k_answer("#### 1,800") == '1800' and gsm8k_answer("#### 1800.00") == '1800.00'
    assert lenient_answer("#### 1,800") == 1800 and lenient_answer("#### 1800.00") == 1800
    assert gsm8k_answer("18") is None and lenient_answer("18") is None
    assert parse_letter("B) because", 4) == 'B' and parse_letter("because B", 4) is None and parse_letter("E", 4) is None


def test_gsm8k_gold_solutions_score_all_1319():
    from lmlit.chat_eval import run_chat_eval, scripted_generator, load_items
    tok = _tok()
    solutions = {it['question']: it['solution'] for it in load_items('gsm8k')[0]}
    res = run_chat_eval(None, tok, ['gsm8k'], scripted_generator(tok, solutions.__getitem__), progress=False,
                        batch_size=64, max_tokens=dict(gsm8k=4096)).tasks['gsm8k']
    assert (res.n, round(res.accuracy * res.n)) == (1319, 1319)
    assert res.diagnostics['truncated_rate'] == 0


@pytest.mark.timeout(240)
def test_humaneval_canonical_solutions_pass_and_a_wrong_one_fails():
    from lmlit.chat_eval import run_chat_eval, scripted_generator, load_items, user_text, CHAT_TASKS
    tok = _tok()
    items = load_items('humaneval')[0]
    canon = {user_text(CHAT_TASKS['humaneval'], it): it['canonical_solution'] for it in items}
    res = run_chat_eval(None, tok, ['humaneval'], scripted_generator(tok, canon.__getitem__), progress=False, batch_size=16,
                        workers=4, max_tokens=dict(humaneval=8192)).tasks['humaneval']
    failed = [(r['task_id'], r['statuses'], r['error']) for r in res.records if r['c'] != 1]
    assert res.n == 164 and not failed, failed
    # the first problem asks whether two numbers are closer than a threshold: answering "never" fails its tests
    wrong = run_chat_eval(None, tok, ['humaneval'], scripted_generator(tok, lambda q: "    return False\n"), progress=False,
                          max_per_task=1, max_tokens=dict(humaneval=8192)).tasks['humaneval']
    fenced = run_chat_eval(None, tok, ['humaneval'], scripted_generator(tok, lambda q: "```python\n" + items[0]['prompt'] + items[0]['canonical_solution'] + "```"),
                           progress=False, max_per_task=1, max_tokens=dict(humaneval=8192)).tasks['humaneval']
    i = wrong.records[0]['i']
    assert wrong.accuracy == 0 and wrong.records[0]['statuses'] == ['error'] and 'AssertionError' in wrong.records[0]['error']
    assert fenced.records[0]['i'] == i and (fenced.accuracy == 1.0) == (i == 0)


def test_pass_at_k_from_samples():
    from lmlit.chat_eval import run_chat_eval, scripted_generator, load_items, user_text, CHAT_TASKS
    tok = _tok()
    items = load_items('humaneval')[0]
    calls = {}
    def reply(q):                                  # of 4 samples per problem, exactly 1 is right
        calls[q] = calls.get(q, 0) + 1
        it = next(x for x in items if user_text(CHAT_TASKS['humaneval'], x) == q)
        return it['canonical_solution'] if calls[q] == 1 else "    raise ValueError\n"
    res = run_chat_eval(None, tok, ['humaneval'], scripted_generator(tok, reply), progress=False, max_per_task=3, samples=4,
                        max_tokens=dict(humaneval=8192)).tasks['humaneval']
    assert [r['c'] for r in res.records] == [1, 1, 1]
    assert res.diagnostics['pass@1'] == pytest.approx(0.25) and res.diagnostics['pass@4'] == pytest.approx(1.0)


def test_a_missing_task_is_reported_in_the_coverage(monkeypatch):
    from lmlit import chat_eval as C
    from lmlit.core import LmlitError
    tok = _tok()
    real = C.load_items
    def no_mmlu(data):
        if data == 'mmlu': raise LmlitError("MMLU: not offline, and the hub is off")
        return real(data)
    monkeypatch.setattr(C, 'load_items', no_mmlu)
    res = C.run_chat_eval(Prefers(tok, 'A'), tok, ['arc_easy', 'mmlu'], max_per_task=8, progress=False)
    assert res.label == 'lmlit-ChatCORE (1/6 tasks; missing: arc_challenge, mmlu, gsm8k, humaneval, spelling)'
    assert 'not run: MMLU: not offline' in res.table() and 'mmlu' not in res.tasks


def test_spelling_items_are_held_out_and_counted():
    from lmlit.chat_eval import load_items, spelling_split
    items = load_items('spelling')[0]
    assert len(items) == 1000 and all(spelling_split(it['word']) == 'test' for it in items)
    assert all(int(it['gold']) == it['word'].count(it['letter']) for it in items)
    zeros = sum(it['gold'] == '0' for it in items)
    assert 100 < zeros < 300                       # one item in five asks for an absent letter


def test_cli_writes_the_stage_files_and_table(tmp_path, capsys):
    from lmlit.chat_eval import cli_chat_eval
    tok = _tok()
    run = tmp_path/'r'; (run/'sft').mkdir(parents=True)
    rc = cli_chat_eval(['--run', str(run), '--stage', 'sft', '--tasks', 'arc_easy', '--max-per-task', '5', '--device', 'cpu'],
                       load=lambda run, step, dev, stage: (Prefers(tok, 'B'), tok, dict(step=3, stage=stage)))
    out = capsys.readouterr().out
    assert rc == 0 and (run/'sft'/'eval'/'chat.json').exists() and (run/'sft'/'eval'/'chat.png').exists()
    assert 'lmlit-ChatCORE (1/6 tasks; missing: arc_challenge, mmlu, gsm8k, humaneval, spelling)' in out and '| task | chance | sft |' in out


# ---------------------------------------------------------------- 2 ranks == 1 rank
TASKS = ['arc_easy', 'arc_easy_gen', 'spelling', 'gsm8k']

def worker(out):
    from lmlit.core import dist_setup, dist_teardown, dist_env
    from lmlit.model import GPTConfig, build_model
    from lmlit.chat_eval import run_chat_eval
    info = dist_setup('cpu')
    torch.manual_seed(0)
    tok = _tok()
    model = build_model(GPTConfig.from_depth(2, vocab_size=tok.vocab_size, sequence_len=1024, aspect_ratio=32, head_dim=32), 'cpu')
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.3)      # not the zero-init: replies that vary by item
    res = run_chat_eval(model, tok, TASKS, max_per_task=5, batch_size=2, progress=False, max_tokens=dict(arc_easy_gen=4, spelling=6, gsm8k=6))
    if info.rank == 0:
        Path(out).write_text(json.dumps({n: t.records for n, t in res.tasks.items()}))
    import torch.distributed as dist
    if dist.is_initialized(): dist.barrier()
    dist_teardown()

def _launch(tmp, nproc):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import free_port, child_env
    out = Path(tmp)/f'ranks{nproc}.json'
    cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--master_port={free_port()}', __file__, 'worker', str(out)]
    r = subprocess.run(cmd, env=child_env(PYTHONPATH=str(Path(__file__).parents[1])), capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())

@pytest.mark.timeout(200)
def test_two_ranks_equal_one_rank(tmp_path):
    one, two = _launch(tmp_path, 1), _launch(tmp_path, 2)
    assert list(one) == TASKS and all(len(one[n]) == 5 for n in TASKS)
    assert len({r['reply'] for r in one['spelling']}) > 1          # the replies differ by item: a real comparison
    assert one == two

if __name__ == '__main__' and sys.argv[1:2] == ['worker']: worker(sys.argv[2])


def test_spelling_eval_words_never_appear_in_sft_training():
    # chat eval scores the SFT spelling task's held-out words: none may be a training word of that task
    from lmlit.chat_eval import load_items
    from lmlit.chat_data import get_task, task_words
    train = task_words(get_task('spelling')['train'])
    words = {it['word'] for it in load_items('spelling')[0]}
    assert len(words) == 1000 and len(train) > 10_000
    assert not words & train, sorted(words & train)[:10]
