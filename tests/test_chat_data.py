"""Conversation data (lmlit.chat_data) and its loader (lmlit.chat_loader): rendering per task type with hand-checked
tokens and masks, splits that never leak (spelling by word, arithmetic by problem, no CORE / chat-eval test item in
any training task), the mixture, best-fit packing with masks, exact resume, streams, the global loss normalisation,
and bad input."""
import json, math
from pathlib import Path
import numpy as np, pytest, torch
import pyarrow as pa, pyarrow.parquet as pq
from lmlit.core import LmlitError
from lmlit.sources import HUB_TASKS
from lmlit.tokenizer import get_tokenizer
from lmlit.model import GPTConfig, build_model
import lmlit.chat_data as C
import lmlit.chat_loader as CL

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope='module')
def tok(): return get_tokenizer('shakespeare', 1024)

def S(tok, name): return tok.encode_special(name)


# ---------------------------------------------------------------- rendering, hand-checked per task type

def test_render_multiple_choice(tok):
    task = C.get_task('mc:arc_easy')
    conv = task['train'][0]
    user = conv[0]['content']
    assert user.startswith('Question: ') and '\nA. ' in user and '\nB. ' in user and user.endswith(C.MC_PROMPT)
    letter = conv[1]['content']
    assert letter in 'ABCD' and len(letter) == 1
    ids, mask = tok.render_conversation(conv)
    want = [tok.bos_id, S(tok, '<|user_start|>')] + tok.encode(user) + [S(tok, '<|user_end|>'), S(tok, '<|assistant_start|>')] \
        + tok.encode(letter) + [S(tok, '<|assistant_end|>')]
    assert ids == want
    n_ans = len(tok.encode(letter)) + 1
    assert mask == [0] * (len(want) - n_ans) + [1] * n_ans               # only the letter and <|assistant_end|> are trained
    x, y = CL.to_batch(np.array([ids + [tok.bos_id]]), np.array([mask + [0]]))
    assert [t for t in y[0].tolist() if t != -1] == tok.encode(letter) + [S(tok, '<|assistant_end|>')]


def test_render_arithmetic_tool_call(tok):
    p = C.arithmetic_problem(2, __import__('random').Random(3))          # a*b-c
    a, b, c = map(int, p['expr'].replace('*', ' ').replace('-', ' ').split())
    assert p['answer'] == str(a * b - c)                                 # computed, printed as the calculator would
    conv = C.arithmetic_conversation(p)
    ids, mask = tok.render_conversation(conv)
    parts = conv[1]['content']
    head = [tok.bos_id, S(tok, '<|user_start|>')] + tok.encode(p['question']) + [S(tok, '<|user_end|>'), S(tok, '<|assistant_start|>')]
    call = [S(tok, '<|python_start|>')] + tok.encode(p['expr']) + [S(tok, '<|python_end|>')]
    out = [S(tok, '<|output_start|>')] + tok.encode(p['answer']) + [S(tok, '<|output_end|>')]
    t0, t3 = tok.encode(parts[0]['text']), tok.encode(parts[3]['text'])
    assert ids == head + t0 + call + out + t3 + [S(tok, '<|assistant_end|>')]
    assert mask == [0] * len(head) + [1] * (len(t0) + len(call)) + [0] * len(out) + [1] * (len(t3) + 1)
    assert parts[3]['text'].endswith(f"#### {p['answer']}")


def test_render_spelling_and_counting(tok):
    conv = C.count_conversation('strawberry', 'r')
    parts = conv[1]['content']
    assert parts[1] == dict(type='python', text="'strawberry'.count('r')") and parts[2] == dict(type='python_output', text='3')
    assert parts[3]['text'].endswith('#### 3')
    ids, mask = tok.render_conversation(conv)
    out = [S(tok, '<|output_start|>')] + tok.encode('3') + [S(tok, '<|output_end|>')]
    k = next(i for i in range(len(ids)) if ids[i:i + len(out)] == out)
    assert mask[k:k + len(out)] == [0] * len(out)                        # the tool's output is not trained
    call = [S(tok, '<|python_start|>')] + tok.encode("'strawberry'.count('r')") + [S(tok, '<|python_end|>')]
    j = next(i for i in range(len(ids)) if ids[i:i + len(call)] == call)
    assert mask[j:j + len(call)] == [1] * len(call)                      # the call is
    spell = C.spell_conversation('cat')
    assert spell[1]['content'] == 'cat: c,a,t'
    ids, mask = tok.render_conversation(spell)
    ans = tok.encode('cat: c,a,t') + [S(tok, '<|assistant_end|>')]
    assert ids[-len(ans):] == ans and mask == [0] * (len(ids) - len(ans)) + [1] * len(ans)


def test_render_dialogue(tok):
    task = C.get_task('chitchat')
    conv = next(c for c in task['train'] if len(c) >= 4)
    assert [m['role'] for m in conv] == ['user', 'assistant'] * (len(conv) // 2)
    ids, mask = tok.render_conversation(conv, max_tokens=10**6)
    want_ids, want_mask = [tok.bos_id], [0]
    for m in conv:
        if m['role'] == 'user':
            seg = [S(tok, '<|user_start|>')] + tok.encode(m['content']) + [S(tok, '<|user_end|>')]; want_ids += seg; want_mask += [0] * len(seg)
        else:
            want_ids += [S(tok, '<|assistant_start|>')]; want_mask += [0]
            seg = tok.encode(m['content']) + [S(tok, '<|assistant_end|>')]; want_ids += seg; want_mask += [1] * len(seg)
    assert ids == want_ids and mask == want_mask
    raw = C.merge_speakers([[dict(text='hi', sender='a')], [dict(text='there', sender='a')], [dict(text='yo', sender='b')]])
    assert raw == ['hi\nthere', 'yo']                                    # one speaker's consecutive messages become one turn


# ---------------------------------------------------------------- splits never leak

def test_spelling_split_by_word():
    task = C.get_task('spelling')
    train, val, test = (C.task_words(task[s]) for s in ('train', 'validation', 'test'))
    assert len(test) > 300 and len(train) > 10_000
    assert not (test & train) and not (val & train) and not (test & val)
    assert all(C.split_of('word:' + w, 50, 50) == 'test' for w in test)


def test_arithmetic_split_by_problem():
    task = C.get_task('arithmetic')
    q = {s: {c[0]['content'] for c in task[s]} for s in ('train', 'validation', 'test')}
    assert len(q['test']) == 400 and len(q['train']) == 20_000
    assert not (q['test'] & q['train']) and not (q['validation'] & q['train'])
    for c in task['test'][:50]:                                          # answers are computed
        parts = c[1]['content']
        assert C.tool_output(parts[1]['text']) == parts[2]['text'] and parts[3]['text'].endswith('#### ' + parts[2]['text'])


def test_the_model_is_served_the_calculator_it_was_trained_on():
    "Every tool call in the SFT data (arithmetic, letter counting, GSM8K's marks): its output is what the engine's calculator says."
    from lmlit.engine import calculate
    assert C.tool_output.__globals__['calculate'] is calculate      # the data's outputs are written by the engine's calculator
    convs = [c for name in ('arithmetic', 'spelling') for s in ('train', 'test') for c in C.get_task(name)[s]]
    convs.append(C.gsm8k_conversation('q', 'Half of 48 is <<48/2=24>>24, plus 3 is <<24+3=27>>27.\n#### 27'))
    calls = [(a['text'], b['text']) for c in convs if isinstance(c[-1]['content'], list)
             for a, b in zip(c[-1]['content'], c[-1]['content'][1:]) if a['type'] == 'python']
    assert len(calls) > 20_000 and [(e, out) for e, out in calls if calculate(e) != out] == []


def test_index_covers_the_test_sets():
    ix = C.test_set_index()
    for name in ('arc_easy', 'arc_challenge', 'hellaswag', 'piqa', 'boolq', 'winogrande', 'commonsense_qa', 'openbook_qa', 'squad', 'coqa', 'lambada_openai', 'jeopardy', 'copa'):
        assert ix.sizes[name] > 0, name
    assert (ix.sizes['gsm8k_test'], ix.sizes['humaneval'], ix.sizes['mmlu_test'], ix.sizes['arc_easy'], ix.sizes['arc_challenge']) == (1319, 164, 14042, 2376, 1172)
    texts = C.eval_test_texts()
    # a test item slipped into training is caught, however it is dressed up
    arc_q, *arc_choices = texts['arc_easy'][0].split('\n')
    planted = [C.mc_conversation(arc_q, arc_choices, 0),
               C.gsm8k_conversation(texts['gsm8k_test'][5], 'It is 3.\n#### 3'),
               [dict(role='user', content='Please answer: ' + texts['mmlu_test'][100].split('\n')[0].upper()), dict(role='assistant', content='A')],
               [dict(role='user', content='Complete this code'), dict(role='assistant', content=texts['humaneval'][7])]]
    assert ix.hits(planted) == [0, 1, 2, 3]


def test_no_test_item_in_any_training_task():
    ix = C.test_set_index()
    for name in C.OFFLINE_TASKS:
        task = C.get_task(name)
        for split in ('train', 'validation'):
            assert ix.hits(task[split]) == [], (name, split)


# ---------------------------------------------------------------- the mixture

def test_mixture_epochs_and_order():
    mix = C.get_mixture({'identity': 2, 'chatterbot': 1, 'mc:arc_challenge': 0.5}, seed=3)
    n = {name: len(mix.tasks[name]['train']) for name in mix.names}
    order = mix.order(0)
    counts = {name: np.bincount([i for t, i in order if mix.names[t] == name], minlength=n[name]) for name in mix.names}
    assert (counts['chatterbot'] == 1).all() and (counts['identity'] == 2).all()
    assert counts['mc:arc_challenge'].max() == 1 and counts['mc:arc_challenge'].sum() == round(n['mc:arc_challenge'] / 2)
    assert order == mix.order(0) and order != mix.order(1) and len(order) == len(mix)
    assert order != C.get_mixture({'identity': 2, 'chatterbot': 1, 'mc:arc_challenge': 0.5}, seed=4).order(0)
    whole = C.get_mixture({'identity': 1, 'chatterbot': 1})            # whole epochs: only the shuffle changes between epochs
    assert sorted(whole.order(0)) == sorted(whole.order(1)) and whole.order(0) != whole.order(1)
    assert len({t for t, _ in whole.order(0)[:40]}) == 2                # tasks interleaved, not one after the other
    for name in ('sft-offline', 'mid-offline'):
        assert set(C.MIXTURES[name]) <= set(C.OFFLINE_TASKS)


def test_mixture_table(tok):
    mix = C.get_mixture({'identity': 2, 'chatterbot': 1})
    rows = C.mixture_table(mix, tok)
    assert [r['task'] for r in rows] == ['identity', 'chatterbot', 'total']
    assert rows[0]['rows'] == 2 * len(mix.tasks['identity']['train']) and rows[-1]['tokens'] == rows[0]['tokens'] + rows[1]['tokens']


# ---------------------------------------------------------------- packing

def _toy(lengths_and_sup):
    "Conversations (ids, mask) of given lengths, `sup` supervised tokens at the end of each."
    out, tokn = [], 10
    for L, sup in lengths_and_sup:
        ids = [0] + list(range(tokn, tokn + L - 1)); tokn += L
        out.append((ids, [0] * (L - sup) + [1] * sup))
    return out

class _FakeTok:
    "Renders conversation k of a list as fixed (ids, mask): the packer under test, without a tokenizer."
    bos_id = 0
    def __init__(self, table): self.table = table
    def render_conversation(self, conv, max_tokens=None): return self.table[conv[0]['content']]

def _fake_mixture(convs):
    msgs = [[dict(role='user', content=str(i)), dict(role='assistant', content='x')] for i in range(len(convs))]
    task = C.Task('toy', 'test', {'train': msgs, 'validation': msgs[:2]})
    return C.Mixture('toy', {'toy': task}, {'toy': 1}), _FakeTok({str(i): c for i, c in enumerate(convs)})


def test_overlong_cropped_or_dropped_and_counted():
    convs = _toy([(5, 2), (30, 25), (30, 2), (7, 3)])                    # row_len 17: #1 cropped (keeps supervised), #2 dropped
    mix, ft = _fake_mixture(convs)
    loader = CL.ChatLoader(mix, ft, batch_size=1, seq_len=16, epochs=1)
    rows = [x for x, _ in loader]
    st = loader.stats()
    assert (st['cropped'], st['dropped'], st['conversations']) == (1, 1, 4)
    assert rows[0][0].tolist() == convs[1][0][:16]                      # the crop keeps the conversation's beginning
    assert CL.admit(*convs[2], 17)[2] == 'dropped' and CL.admit(*convs[1], 17)[2] == 'cropped'


def test_stream_matches_reference_and_masks(tok):
    rng = np.random.default_rng(0)
    convs = _toy([(int(rng.integers(3, 40)), int(rng.integers(1, 3))) for _ in range(60)])
    mix, ft = _fake_mixture(convs)
    order = mix.order(0)
    ref = CL.pack_reference([convs[i] for _, i in order], 33, pad_id=0)
    stream = CL.ChatStream(mix, ft, batch_size=4, seq_len=32, buffer=1000, epochs=1)
    got = [(ids[b].tolist(), mask[b].tolist()) for ids, mask, _ in stream.batches() for b in range(4)]
    assert got[:len(ref)] == ref and all(sum(m) == 0 and all(t == 0 for t in i) for i, m in got[len(ref):])
    for ids, mask, _ in CL.ChatStream(mix, ft, batch_size=4, seq_len=32, buffer=8, epochs=1).batches():
        x, y = CL.to_batch(ids, mask)
        for b in range(4):
            assert y[b].tolist() == CL.row_targets(ids[b].tolist(), mask[b].tolist())[1]   # -1 where mask 0 or padding
        assert (y != -1).sum() > 0                                       # no micro-batch is all padding
        assert ids[:, 0].tolist() == [0] * 4 or (mask[:, 1:].sum(1) == 0).any()   # rows start at a BOS (or are padding)


def test_exact_resume(tok):
    mix = C.get_mixture({'identity': 3, 'chatterbot': 1, 'arithmetic': 0.02})
    a = CL.ChatLoader(mix, tok, batch_size=3, seq_len=96, buffer=16)
    for _ in range(7): next(a)
    state = json.loads(json.dumps(a.state_dict()))                      # through a checkpoint file
    after = [next(a) for _ in range(6)]
    b = CL.ChatLoader(mix, tok, batch_size=3, seq_len=96, buffer=16)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(after, [next(b) for _ in range(6)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    c = CL.ChatLoader(mix, tok, batch_size=3, seq_len=128, buffer=16)
    with pytest.raises(LmlitError, match='seq_len'): c.load_state_dict(state)


def test_streams_cover_each_example_once_and_ranks_agree(tok):
    mix = C.get_mixture({'identity': 1, 'chatterbot': 0.1})
    streams = 4
    shares = [CL.ChatStream(mix, tok, 2, 64, s, streams).share(0) for s in range(streams)]
    assert sorted(map(tuple, sum(shares, []))) == sorted(map(tuple, mix.order(0)))
    drained = [CL.ChatLoader(mix, tok, 2, 64, s, streams, epochs=1) for s in range(streams)]
    for ld in drained: list(ld)
    assert sum(ld.stats()['conversations'] for ld in drained) == len(mix)
    # 2 ranks x 1 micro-batch of B rows == 1 rank x 2 micro-batches: the same rows in the same order
    assert CL.rank_streams(0, 2, 2) == [0] and CL.rank_streams(1, 2, 2) == [1] and CL.rank_streams(0, 1, 2) == [0, 1]
    two_ranks = [torch.cat([next(CL.ChatLoader(mix, tok, 2, 64, s, 2))[0] for r in range(2) for s in CL.rank_streams(r, 2, 2)])]
    one_rank = [torch.cat([next(CL.ChatLoader(mix, tok, 2, 64, s, 2))[0] for s in CL.rank_streams(0, 1, 2)])]
    assert torch.equal(two_ranks[0], one_rank[0])
    with pytest.raises(LmlitError, match='multiple of the world size'): CL.rank_streams(0, 3, 4)


# ---------------------------------------------------------------- the loss: global normalisation

@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_model(GPTConfig(sequence_len=512, vocab_size=128, n_layer=1, n_head=2, n_kv_head=2, n_embd=32))

def _grads(model, batches, norm='global'):
    model.zero_grad()
    n_global, local = CL.global_token_count([y for _, y in batches])
    total = 0.0
    for (x, y), n in zip(batches, local):
        loss = CL.micro_batch_loss(model, x, y, n, n_global) if norm == 'global' else model(x, y) / len(batches)
        loss.backward(); total += float(loss.detach())
    return total, torch.cat([p.grad.flatten() for p in model.parameters()])

def test_global_normalisation_10_and_1000(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 128, (4, 512), generator=g); y = torch.randint(0, 128, (4, 512), generator=g)
    y1 = torch.full((2, 512), -1); y1[0, 100:105] = y[0, 100:105]; y1[1, 7:12] = y[1, 7:12]
    y2 = y[2:].clone(); y2[0, 500:] = -1; y2[1, :12] = -1                # 1000 supervised tokens
    assert ((y1 != -1).sum(), (y2 != -1).sum()) == (10, 1000)
    loss_two, g_two = _grads(model, [(x[:2], y1), (x[2:], y2)])
    loss_one, g_one = _grads(model, [(x, torch.cat([y1, y2]))])
    assert math.isclose(loss_two, loss_one, rel_tol=1e-5)
    assert torch.allclose(g_two, g_one, rtol=1e-4, atol=1e-8)
    _, g_naive = _grads(model, [(x[:2], y1), (x[2:], y2)], norm='per-micro-batch')
    assert not torch.allclose(g_naive, g_one, rtol=1e-2, atol=1e-6)      # the per-micro-batch mean over-weighs the 10 tokens


def test_all_padding_micro_batch_is_zero_not_nan(model):
    x = torch.randint(0, 128, (2, 512)); y = torch.full((2, 512), -1)
    for grad in (True, False):                                           # the fused CPU loss (training) and the plain path
        with torch.set_grad_enabled(grad):
            loss = CL.micro_batch_loss(model, x, y, 0, torch.tensor(0.))
        assert float(loss.detach()) == 0.0 and not torch.isnan(loss)
    model.zero_grad()
    CL.micro_batch_loss(model, x, y, 0, torch.tensor(37.)).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all() and float(grads.abs().max()) == 0.0


# ---------------------------------------------------------------- bad input: clear messages naming file and row

def test_bad_conversations_name_file_and_row(tmp_path):
    good = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello')]
    cases = {
        'roles.jsonl': ([good[0], good[0]], "row 2, message 1: role 'user' where 'assistant' was expected"),
        'empty.jsonl': ([good[0], dict(role='assistant', content=[dict(type='text', text=' ')])], 'row 2, message 1: empty assistant turn'),
        'part.jsonl': ([good[0], dict(role='assistant', content=[dict(type='code', text='1')])], "row 2, message 1, part 0: unknown part type 'code'"),
    }
    for name, (bad, msg) in cases.items():
        f = tmp_path/name
        f.write_text(json.dumps(good) + '\n' + json.dumps({'messages': bad}) + '\n')
        with pytest.raises(LmlitError, match=str(f).replace('.', r'\.') + ', ' + msg.replace('(', r'\(')): C.jsonl_task(f)


def test_bad_mixture_weight_names_file_and_row(tmp_path):
    f = tmp_path/'mix.txt'
    f.write_text('identity 1\nchatterbot 0\n')
    with pytest.raises(LmlitError, match=r"mix\.txt, row 2: task 'chatterbot' has weight 0.0; a weight .* must be > 0"): C.get_mixture(f)
    with pytest.raises(LmlitError, match="weight -1"): C.get_mixture({'identity': -1})
    with pytest.raises(LmlitError, match="unknown task 'nope'"): C.get_mixture({'nope': 1})


# ---------------------------------------------------------------- the hub route, on local files in the hub's layout

def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True); pq.write_table(table, path)

def test_hub_route_local_layout(tmp_path):
    root = tmp_path/'hub'
    msgs = [[dict(role='system', content='Be brief.'), dict(role='user', content=f'Question {i}?'), dict(role='assistant', content=f'Answer {i}.')] for i in range(60)]
    _write(root/'HuggingFaceTB/smol-smoltalk/data/train-00000-of-00001.parquet', pa.table({'messages': msgs}))
    _write(root/'HuggingFaceTB/smol-smoltalk/data/test-00000-of-00001.parquet', pa.table({'messages': msgs[:5]}))
    gsm_test_q = C.eval_test_texts()['gsm8k_test'][0]
    q = [f'Tom has {i} apples and buys 2 boxes of 3. How many apples now?' for i in range(59)] + [gsm_test_q]
    a = [f'Boxes: <<2*3=6>>6 apples. Total <<{i}+6={i + 6}>>{i + 6}.\n#### {i + 6}' for i in range(60)]
    _write(root/'openai/gsm8k/main/train-00000-of-00001.parquet', pa.table({'question': q, 'answer': a}))
    mmlu = [dict(question=f'Which number is {i}?', subject='', choices=[str(i), 'x', 'y', 'z'], answer=0) for i in range(50)]
    _write(root/'cais/mmlu/auxiliary_train/train-00000-of-00001.parquet', pa.table({'train': mmlu}))
    smol = C.hub_task('smoltalk', root)
    assert len(smol['validation']) == 5 and smol['train'][0] == msgs[0]
    gsm = C.hub_task('gsm8k', root)
    assert gsm.notes['dropped_as_test_overlap']['train'] + gsm.notes['dropped_as_test_overlap']['validation'] == 1   # the test question
    conv = next(c for c in gsm['train'] + gsm['validation'] if c[0]['content'].startswith('Tom has 4 '))
    assert conv[1]['content'] == [dict(type='text', text='Boxes: '), dict(type='python', text='2*3'), dict(type='python_output', text='6'),
                                  dict(type='text', text='6 apples. Total '), dict(type='python', text='4+6'), dict(type='python_output', text='10'),
                                  dict(type='text', text='10.\n#### 10')]
    mm = C.hub_task('mmlu_aux', root)
    assert len(mm['train']) + len(mm['validation']) == 50 and (mm['train'] + mm['validation'])[0][1]['content'] == 'A'
    mix = C.get_mixture({'smoltalk': 1, 'gsm8k': 4}, hub_root=root)
    assert len(mix) == len(smol['train']) + 4 * len(gsm['train'])
    # a dataset missing its column: the message names the folder, split and column
    _write(root/'bad/gsm8k/main/train-00000-of-00001.parquet', pa.table({'question': q}))
    HUB_TASKS['bad'] = ('bad/gsm8k', 'main', 'main', 'train', None, ('question', 'answer'))
    try:
        with pytest.raises(LmlitError, match=r"bad/gsm8k/main split train: no \['answer'\] column"): C.hub_task('bad', root)
    finally: del HUB_TASKS['bad']
