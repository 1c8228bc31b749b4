"The engine: a scripted model forces known sequences (tool use, batching, seeds, stops, limits); a real GPT checks cached logits; the calculator is fuzzed."
import ast, random, time, string
import pytest
import torch
from lmlit.core import LmlitError
from lmlit.engine import (Engine, Request, ScriptedModel, scripted_step, model_step, calculate, fit_conversation,
                          complete, CALC_SECONDS, MAX_EXPR_CHARS)
from lmlit.model import GPTConfig, build_model, KVCache
from lmlit.tokenizer import get_tokenizer

pytestmark = pytest.mark.timeout(300)

@pytest.fixture(scope='module')
def tok():
    return get_tokenizer('shakespeare', vocab_size=512, max_chars=200_000)

def _onehot(tok, nxt, strength=10.0):
    logits = torch.full((tok.vocab_size,), -strength)
    logits[nxt] = strength
    return logits

def _said(tok, tokens):
    "The tokens after the last <|assistant_start|>."
    k = len(tokens) - tokens[::-1].index(tok.encode_special('<|assistant_start|>'))
    return tokens[k:]

def _prompt(tok, text): return tok.render_for_completion([dict(role='user', content=text)])

# ---- tool use, end to end
def test_tool_call_forces_output_in_one_chunk_then_continues(tok):
    S = tok.encode_special
    call = [S('<|python_start|>')] + tok.encode("(17+4)*2") + [S('<|python_end|>')]
    after = tok.encode(" so 42.") + [S('<|assistant_end|>')]
    seen_after_output = []
    def script(tokens):
        said = _said(tok, tokens)
        if S('<|output_end|>') in said:
            tail = said[said.index(S('<|output_end|>')) + 1:]
            seen_after_output.append(said[said.index(S('<|output_start|>')):said.index(S('<|output_end|>')) + 1])
            return _onehot(tok, after[len(tail)])
        assert len(said) < len(call), "the model must never be asked to go on inside the forced output"
        return _onehot(tok, call[len(said)])
    model = ScriptedModel(script, tok.vocab_size)
    engine = Engine(model, tok, step=scripted_step)
    deltas = list(engine.generate([Request(_prompt(tok, "twice 17+4?"), max_tokens=64, temperature=0)]))
    forced_ids = [S('<|output_start|>')] + tok.encode('42') + [S('<|output_end|>')]
    tokens = [d.token for d in deltas]
    assert tokens == call + forced_ids + after
    assert [d.token for d in deltas if d.forced] == forced_ids
    assert deltas[-1].finish == 'stop'
    # the step after <|python_end|> fed it and the whole forced output together, as one chunk
    assert (1, 1 + len(forced_ids)) in model.calls
    assert seen_after_output[0] == forced_ids
    text = ''.join(t for _, _, t, _ in complete(Engine(ScriptedModel(script, tok.vocab_size), tok, step=scripted_step),
                                                 [Request(_prompt(tok, "twice 17+4?"), max_tokens=64, temperature=0)]))
    assert text == "<<(17+4)*2=42>> so 42."

def test_failed_tool_call_forces_nothing(tok):
    S = tok.encode_special
    call = [S('<|python_start|>')] + tok.encode("9**9**9") + [S('<|python_end|>'), S('<|assistant_end|>')]
    engine = Engine(ScriptedModel(lambda t: _onehot(tok, call[len(_said(tok, t))]), tok.vocab_size), tok, step=scripted_step)
    deltas = list(engine.generate([Request(_prompt(tok, "big"), max_tokens=64, temperature=0)]))
    assert [d.token for d in deltas] == call and not any(d.forced for d in deltas)

# ---- batching
def _story_script(tok):
    "Greedy continuation that depends on the prompt: next = (sum of the last 3 tokens * 7 + len) mod a range of text tokens."
    end = tok.encode_special('<|assistant_end|>')
    def script(tokens):
        said = _said(tok, tokens)
        if len(said) >= 5 + len(tokens) % 7: return _onehot(tok, end)
        return _onehot(tok, 40 + (sum(tokens[-3:]) * 7 + len(tokens)) % 200)
    return script

def test_batched_prompts_of_different_lengths_equal_each_alone(tok):
    prompts = [_prompt(tok, t) for t in ("Hi", "Tell me of the king and his three daughters", "What light through yonder window?")]
    assert len({len(p) for p in prompts}) == 3
    def run(reqs):
        model = ScriptedModel(_story_script(tok), tok.vocab_size)
        out = {}
        for d in Engine(model, tok, step=scripted_step).generate(reqs): out.setdefault(d.request, []).append(d.token)
        return out, model.calls
    together, calls = run([Request(p, max_tokens=30, temperature=0) for p in prompts])
    alone = [run([Request(p, max_tokens=30, temperature=0)])[0][0] for p in prompts]
    assert [together[i] for i in range(3)] == alone
    assert len({len(a) for a in alone}) > 1                      # rows end at different steps ...
    sizes = [b for b, _ in calls]
    assert sizes[0] == 3 and sizes[-1] < 3 and sizes == sorted(sizes, reverse=True)   # ... and then leave the batch

def test_real_gpt_batched_greedy_equals_alone(tok):
    torch.manual_seed(0)
    model = build_model(GPTConfig(sequence_len=128, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.2)
    engine = Engine(model, tok)
    prompts = [_prompt(tok, t) for t in ("Hi", "Tell me of the king and his three daughters", "Speak.")]
    def tokens(reqs):
        out = {}
        for d in engine.generate(reqs): out.setdefault(d.request, []).append(d.token)
        return out
    together = tokens([Request(p, max_tokens=24, temperature=0) for p in prompts])
    for i, p in enumerate(prompts): assert together[i] == tokens([Request(p, max_tokens=24, temperature=0)])[0]

# ---- seeds
def _soft_script(tok):
    "A spread-out distribution that depends on the context, so sampling really chooses."
    def script(tokens):
        g = torch.Generator().manual_seed(sum(tokens[-4:]) * 31 + len(tokens))
        return torch.randn(tok.vocab_size, generator=g) * 2
    return script

def test_same_seed_same_sample_whatever_the_batch(tok):
    p = _prompt(tok, "Sing")
    def samples(reqs, which=0):
        out = {}
        engine = Engine(ScriptedModel(_soft_script(tok), tok.vocab_size), tok, step=scripted_step)
        for d in engine.generate(reqs): out.setdefault((d.request, d.sample), []).append(d.token)
        return out
    alone = samples([Request(p, max_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=7, n=2)])
    crowd = samples([Request(_prompt(tok, "Other things entirely"), max_tokens=9, temperature=0.8, seed=1, n=3),
                     Request(p, max_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=7, n=2),
                     Request(_prompt(tok, "x"), max_tokens=30, temperature=1.3, seed=99)])
    assert alone[(0, 0)] == crowd[(1, 0)] and alone[(0, 1)] == crowd[(1, 1)]
    assert alone[(0, 0)] != alone[(0, 1)]                                       # the n samples differ
    other = samples([Request(p, max_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=8)])
    assert other[(0, 0)] != alone[(0, 0)]                                      # another seed, another text

def test_n_samples_share_one_prefill(tok):
    model = ScriptedModel(_soft_script(tok), tok.vocab_size)
    list(Engine(model, tok, step=scripted_step).generate([Request(_prompt(tok, "Sing"), max_tokens=5, n=4)]))
    assert model.calls[0] == (1, len(_prompt(tok, "Sing")))   # one row prefilled ...
    assert model.calls[1][0] == 4                              # ... then four rows decode

# ---- stops and limits
def test_stop_tokens_and_max_tokens(tok):
    S = tok.encode_special
    stream = tok.encode(" the quick brown fox jumps over the lazy dog again and again")
    for stop_name in ('<|assistant_end|>', '<|bos|>'):
        seq = stream[:4] + [S(stop_name)] + stream[4:]
        engine = Engine(ScriptedModel(lambda t: _onehot(tok, seq[len(_said(tok, t))]), tok.vocab_size), tok, step=scripted_step)
        deltas = list(engine.generate([Request(_prompt(tok, "go"), max_tokens=50, temperature=0)]))
        assert [d.token for d in deltas] == seq[:5] and deltas[-1].finish == 'stop'
    engine = Engine(ScriptedModel(lambda t: _onehot(tok, stream[len(_said(tok, t))]), tok.vocab_size), tok, step=scripted_step)
    deltas = list(engine.generate([Request(_prompt(tok, "go"), max_tokens=6, temperature=0, stop_ids=(stream[8],))]))
    assert [d.token for d in deltas] == stream[:6] and deltas[-1].finish == 'length'
    deltas = list(engine.generate([Request(_prompt(tok, "go"), max_tokens=50, temperature=0, stop_ids=(stream[3],))]))
    assert [d.token for d in deltas] == stream[:4] and deltas[-1].finish == 'stop'
    text = ''.join(t for _, _, t, _ in complete(engine, [Request(_prompt(tok, "go"), max_tokens=50, temperature=0)], stop=[['fox']]))
    assert text == " the quick brown "

def test_max_tokens_cuts_inside_forced_output(tok):
    S = tok.encode_special
    call = [S('<|python_start|>')] + tok.encode("123456*789") + [S('<|python_end|>')]
    engine = Engine(ScriptedModel(lambda t: _onehot(tok, call[len(_said(tok, t))]), tok.vocab_size), tok, step=scripted_step)
    deltas = list(engine.generate([Request(_prompt(tok, "go"), max_tokens=len(call) + 2, temperature=0)]))
    assert len(deltas) == len(call) + 2 and deltas[-1].finish == 'length' and deltas[-1].forced

def test_cancel_stops_generation(tok):
    req = Request(_prompt(tok, "go"), max_tokens=100, temperature=1.0)
    engine = Engine(ScriptedModel(_soft_script(tok), tok.vocab_size), tok, step=scripted_step)
    got = []
    for d in engine.generate([req]):
        got.append(d)
        if len(got) == 3: req.cancelled = True
    assert len(got) == 4 and got[-1].finish == 'cancelled'

# ---- context
def test_context_overflow_truncates_oldest_turns_as_documented(tok):
    system = dict(role='system', content='You are terse.')
    turns = []
    for i in range(6):
        turns += [dict(role='user', content=f'question number {i} ' * 6), dict(role='assistant', content=f'answer {i} ' * 6)]
    last = dict(role='user', content='and now?')
    msgs = [system] + turns + [last]
    full = tok.render_for_completion(msgs)
    context = len(full) - 10
    ids, budget, dropped = fit_conversation(tok, msgs, 16, context)
    assert dropped % 2 == 0 and dropped >= 2
    assert ids == tok.render_for_completion([system] + turns[dropped:] + [last])          # the system message stays, oldest pairs go
    assert len(ids) + budget <= context and budget == 16
    assert len(tok.render_for_completion([system] + turns[dropped - 2:] + [last])) + 16 > context   # no more dropped than needed
    # only the system message and the last question left: max_tokens shrinks to the room left
    ids, budget, dropped = fit_conversation(tok, msgs, 10_000, context)
    assert ids == tok.render_for_completion([system, last]) and budget == context - len(ids)
    with pytest.raises(LmlitError, match='shorter message'):
        fit_conversation(tok, [dict(role='user', content='word ' * 400)], 8, context=64)
    engine = Engine(ScriptedModel(_soft_script(tok), tok.vocab_size, sequence_len=64), tok, step=scripted_step)
    with pytest.raises(LmlitError, match="exceeds the model's context of 64"):
        list(engine.generate([Request(full, max_tokens=8)]))

def test_kept_cache_prefills_only_the_new_turn(tok):
    torch.manual_seed(0)
    model = build_model(GPTConfig(sequence_len=256, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.2)
    engine = Engine(model, tok)
    cache = KVCache.for_model(model, 1, 256)
    first = _prompt(tok, "Hi")
    a = [d.token for d in engine.generate([Request(first, max_tokens=8, temperature=0)], cache=cache)]
    assert cache.tokens[0] == first + a[:-1]          # the last sampled token is chosen, not yet fed
    follow = cache.tokens[0] + [a[-1]] + tok.encode(" more")
    b = [d.token for d in engine.generate([Request(follow, max_tokens=8, temperature=0)], cache=cache)]
    assert cache.tokens[0][:len(follow)] == follow
    fresh = [d.token for d in engine.generate([Request(follow, max_tokens=8, temperature=0)])]
    assert b == fresh
    with pytest.raises(LmlitError, match='prefix'):
        list(engine.generate([Request(_prompt(tok, "different"), max_tokens=4)], cache=cache))

# ---- a real GPT: cached decode equals the full forward
def test_cached_decode_logits_equal_full_forward_over_64_tokens():
    torch.manual_seed(0)
    model = build_model(GPTConfig(sequence_len=128, vocab_size=300, n_layer=3, n_head=4, n_kv_head=2, n_embd=64)).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.15)
    prompts = [[1, 5, 9, 200, 17], [3, 4], [250, 2, 8, 8, 8, 9, 10, 11]]
    cache = KVCache.for_model(model, 3, 100)
    logits = model_step(model, cache, prompts)
    seqs = [list(p) for p in prompts]
    worst = 0.0
    for step in range(64):
        full = torch.stack([model(torch.tensor([s]))[0, -1] for s in seqs])
        worst = max(worst, (logits - full).abs().max().item())
        nxt = [int(torch.multinomial(torch.softmax(l, -1), 1, generator=torch.Generator().manual_seed(step * 3 + b))) for b, l in enumerate(full)]
        for s, t in zip(seqs, nxt): s.append(t)
        logits = model_step(model, cache, [[t] for t in nxt])
    print(f"\nmax |cached - full| logit over 64 steps x 3 rows: {worst:.2e} (tolerance 1e-4, float32)")
    assert worst < 1e-4

# ---- the calculator, fuzzed
def _whitelisted(expr: str) -> bool:
    "An independent check: does `expr` parse into only numbers, arithmetic and 'str'.count('str')?"
    try: tree = ast.parse(expr.strip(), mode='eval')
    except Exception: return False
    ok = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
          ast.Pow, ast.UAdd, ast.USub, ast.Call, ast.Attribute, ast.Load)
    for node in ast.walk(tree):
        if not isinstance(node, ok): return False
        if isinstance(node, ast.Attribute) and node.attr != 'count': return False
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, (int, float, str))): return False
    return True

ESCAPED = []

def _hostile_expressions(n_random: int = 1200) -> list[str]:
    rng = random.Random(0)
    fixed = ["__import__('os').system('true')", "().__class__.__bases__[0].__subclasses__()", "(1).__class__",
             "open('/etc/passwd').read()", "lambda: 1", "(lambda x: x)(1)", "[x for x in range(10**9)]", "9**9**9",
             "10**10**10", "2**100000", "(-8)**0.5", "1e308*10", "1/0", "5%0", "5//0", "'a'*10**9", "'a'.count('a'*10)",
             "'x'.__len__()", "'x'.count", "'x'.upper()", "'abc'.count(x)", "globals()", "ESCAPED.append(1)",
             "import os", "exec('1')", "eval('1')", "__builtins__", "a", "True+1", "None", "1j*1j", "b'x'.count(b'x')",
             "f'{1}'", "[1,2]", "{1:2}", "(1,2)", "1 if 1 else 2", "1<2", "1 and 2", "~1", "1<<1000", "1|2", "x:=1",
             "ＥＳＣＡＰＥＤ.append(1)", "ℯ", "１+１", "\u202e1+1", "1\x00+1", "'\\N{SNOWMAN}'.count('☃')", "", " ", "(", ")",
             "((((((((((1))))))))))", "(" * 200 + "1" + ")" * 200, "-" * 250 + "1", "1" + "+1" * 200, "9" * 400,
             "1" * 100 + "*" + "1" * 100, "(10**59)*(10**59)", "2**199.5", "0**-1", "(-1)**0.5", "1e400", "float('inf')",
             "(2**30)**(2**30)", "'a'.count('a', 1)", "'a'.count(sep='a')", "str.count('a','a')", "''.count('')"]
    atoms = ["1", "0", "-3", "2.5", "1e300", "9", "99999", "'ab'", "x", "__class__", "()", "[]", "os", "'a'.count('a')",
             "__import__", "lambda:0", "getattr", "ESCAPED", "𝟗", "ﬁ", "\u200b", "1_000"]
    ops = ["+", "-", "*", "/", "//", "%", "**", ".", "(", ")", ",", "[", "]", " ", "@", "**-", "=", ";", "\n"]
    out = list(fixed)
    for _ in range(n_random):
        k = rng.randint(1, 12)
        out.append(''.join(rng.choice(atoms) + rng.choice(ops) for _ in range(k)) + rng.choice(atoms))
    for d in (20, 41, 60, 150):
        out.append("(" * d + "2" + ")" * d)
        out.append("2" + "**2" * d)
        out.append("-" * d + "(1+" * d + "1" + ")" * d)
    out.append("1+" * (MAX_EXPR_CHARS // 2) + "1")
    out.append("'" + "x" * 5000 + "'.count('x')")
    out.append(''.join(rng.choice(string.printable) for _ in range(200)))
    return out

def test_calculator_fuzz_nothing_escapes_nothing_raises_all_bounded():
    exprs = _hostile_expressions()
    assert len(exprs) >= 1000
    worst = 0.0
    results = []
    for e in exprs:
        t0 = time.perf_counter()
        r = calculate(e)                       # must never raise
        took = time.perf_counter() - t0
        worst = max(worst, took)
        assert took < CALC_SECONDS + 0.2, (e[:80], took)
        if r is not None:
            assert _whitelisted(e), f"{e!r} is outside the whitelist but gave {r!r}"
            float(r)                            # a number, as text
            assert len(r) < 80
        results.append(r)
    assert not ESCAPED
    assert calculate("9**9**9") is None and calculate("2**100000") is None
    print(f"\n{len(exprs)} expressions, {sum(r is not None for r in results)} computed, slowest {worst * 1e3:.2f} ms")

def test_hostile_tool_calls_never_raise_out_of_the_engine(tok):
    S = tok.encode_special
    for expr in _hostile_expressions(150)[:200]:
        call = [S('<|python_start|>')] + tok.encode(expr)[:100] + [S('<|python_end|>'), S('<|assistant_end|>')]
        def script(tokens, call=call):
            said = _said(tok, tokens)
            if S('<|output_end|>') in said: return _onehot(tok, S('<|assistant_end|>'))
            return _onehot(tok, call[min(len(said), len(call) - 1)])
        engine = Engine(ScriptedModel(script, tok.vocab_size), tok, step=scripted_step)
        deltas = list(engine.generate([Request(_prompt(tok, "?"), max_tokens=160, temperature=0)]))
        assert deltas[-1].finish in ('stop', 'length')

def test_calculator_numbers_are_formatted_sanely():
    assert calculate("0.1+0.2") == '0.3'
    assert calculate("2/3") == '0.666666666667'
    assert calculate("6/3") == '2'
    assert calculate("-7//2") == '-4'
    assert calculate("2**-2") == '0.25'
    assert calculate("10**20") == '100000000000000000000'
    assert calculate("'Mississippi'.count('ss')") == '2'

# ---- one generation path: every former path, greedy, equals a plain full-forward decoder
def _plain_greedy(model, prompt, max_tokens, ends=()):
    "The reference: a full forward over the whole sequence for every token, stopping after an end token."
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
            if ids[-1] in ends: break
    return ids[len(prompt):]

def test_every_generation_path_gives_the_plain_greedy_decode(tok):
    "Engine, chat eval, GPT.generate (the model's own cached loop, same sampler), base-model samples and SFT replies."
    from lmlit.chat_eval import engine_generator
    from lmlit.eval import sample_completions
    from lmlit.sft import chat_reply
    S = tok.encode_special
    ends, tools = {S('<|assistant_end|>'), tok.bos_id}, {S('<|python_start|>'), S('<|output_start|>')}
    prompt = _prompt(tok, "What is 2 + 2?")
    for seed in range(20):                     # random weights whose greedy reply makes no tool call (the reference runs none)
        torch.manual_seed(seed)
        model = build_model(GPTConfig(sequence_len=128, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)).eval()
        for p in model.parameters(): torch.nn.init.normal_(p, std=0.3)
        want = _plain_greedy(model, prompt, 20, ends)
        if not set(want) & tools: break
    assert not set(want) & tools and len(want) > 5
    assert [d.token for d in Engine(model, tok).generate([Request(prompt, max_tokens=20, temperature=0)])] == want
    assert engine_generator(model, tok)([prompt, prompt], 20, 0.0) == [want, want]                # chat eval
    assert list(model.generate(prompt, 20, temperature=0)) == _plain_greedy(model, prompt, 20)   # GPT.generate: no stops
    ids = tok.encode("The king", prepend=tok.bos_id)                                             # base-model samples
    plain = _plain_greedy(model, ids, 12, {tok.bos_id})
    assert sample_completions(model, tok, ["The king"], max_tokens=12)[0]['greedy'] == tok.decode([t for t in plain if t != tok.bos_id])
    # sampled paths: the same engine and seed give the same reply (SFT's samples are the engine's, not a sampler of their own)
    request = Request(prompt, max_tokens=24, temperature=0.7, top_k=50, seed=42)
    direct = [d.token for d in Engine(model, tok).generate([request]) if d.token is not None and d.finish != 'stop']
    assert chat_reply(model, tok, "What is 2 + 2?", 24, seed=42) == tok.decode(direct)

def test_generation_sees_weights_an_optimizer_wrote_through_p_data(tok):
    "Muon writes `p.data`, which leaves the tensors' version counters alone: the next generation must still use the new weights."
    torch.manual_seed(5)
    model = build_model(GPTConfig(sequence_len=64, vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.3)
    prompt = [1, 2, 3, 4]
    engine = Engine(model, None)
    before = [d.token for d in engine.generate([Request(prompt, max_tokens=12, temperature=0)])]
    for block in model.blocks:
        for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v): lin.weight.data.mul_(-1.7).add_(0.05)
    after = [d.token for d in engine.generate([Request(prompt, max_tokens=12, temperature=0)])]
    assert after == _plain_greedy(model, prompt, 12) and after != before

def test_gpt_generate_gives_the_engines_tokens_greedy_and_seeded():
    "GPT.generate (chapter 02, no engine import) and the engine share the forward, the sampler and the seed rule."
    torch.manual_seed(3)
    model = build_model(GPTConfig(sequence_len=64, vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)).eval()
    for p in model.parameters(): torch.nn.init.normal_(p, std=0.2)
    engine = Engine(model, None)
    prompt = [5, 17, 42, 9]
    runs = {}
    settings = dict(greedy=dict(temperature=0), t1=dict(temperature=1.0, seed=11),
                    topk=dict(temperature=1.0, top_k=30, seed=11), cool=dict(temperature=0.7, top_k=50, seed=4))
    for name, kw in settings.items():
        runs[name] = list(model.generate(prompt, 24, **kw))
        assert [d.token for d in engine.generate([Request(prompt, max_tokens=24, **kw)])] == runs[name], name
    assert runs['t1'] != runs['greedy'] and runs['t1'] != runs['topk']      # the seeded runs really sampled
    assert list(model.generate(prompt, 24, temperature=1.0, seed=12)) != runs['t1']   # and the seed matters
