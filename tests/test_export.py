"""`lmlit export` / `lmlit import` (13_export) against transformers' own NanoChatForCausalLM: logits, greedy tokens,
tokenizer ids, chat-template ids, round trips, refusals, and a push to / pull from a local stand-in Hub."""
import base64, hashlib, io, json, os, pickle, subprocess, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlparse, unquote
import pytest
import torch
from conftest import child_env

transformers = pytest.importorskip('transformers', reason='transformers >= 5 is not installed (pip install "lmlit[hf]")')
if not hasattr(transformers, 'NanoChatForCausalLM'):
    pytest.skip(f'transformers {transformers.__version__} has no NanoChatForCausalLM (needs >= 5)', allow_module_level=True)
from transformers import AutoModelForCausalLM, AutoTokenizer, NanoChatConfig, NanoChatForCausalLM
from lmlit import export as X, model as M, tokenizer as T
from lmlit.checkpoint import load_model, save_checkpoint, model_shape
from lmlit.cli import main as lmlit_main
from lmlit.engine import Engine, Request
from lmlit import chat_data as C

pytestmark = pytest.mark.timeout(300)
TOL = 1e-4

def byte_tokenizer() -> T.Tokenizer:
    "256 byte tokens + lmlit's nine specials: 265 ids, which the model pads to 320 rows."
    return T.Tokenizer({bytes([i]): i for i in range(256)})

# ---- fixtures: a trained SFT run (smoke-sized), a random GQA run, both exported in float32
@pytest.fixture(scope='session')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')/'runs'
    env = child_env(LMLIT_RUNS=root)
    steps = [[sys.executable, '-m', 'lmlit.train', '-p', 'run', 'tiny', '-p', 'steps', '4', '-p', 'sample_every', '0', '-p', 'plots', 'False'],
             [sys.executable, '-m', 'lmlit.sft', '-p', 'run', 'tiny', '-p', 'steps', '2', '-p', 'sample_every', '-1', '-p', 'plots', 'False',
              '-p', 'eval_every', '-1']]
    for args in steps:
        r = subprocess.run(args, cwd=root.parent, env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    torch.manual_seed(0)
    cfg = M.GPTConfig(sequence_len=64, vocab_size=265, n_layer=3, n_head=4, n_kv_head=2, n_embd=64)   # GQA: 2 query heads per kv head
    model = M.build_model(cfg)
    with torch.no_grad():
        for p in model.parameters(): p.normal_(0, 0.2)       # large random weights: every path shows in the logits
    tok = byte_tokenizer()
    save_checkpoint(root/'gqa', 3, model.state_dict(), None, {}, dict(model_shape=model_shape(cfg), tokenizer_hash=tok.hash()))
    tok.save(root/'gqa'/'tokenizer')
    return root

@pytest.fixture(scope='session')
def exported(runs):
    os.environ['LMLIT_RUNS'] = str(runs)
    out = {name: X.export_hf(name, out=runs.parent/f'hf-{name}', dtype='float32') for name in ('tiny', 'gqa')}
    return out

@pytest.fixture(autouse=True)
def _runs_env(request, monkeypatch):
    if 'runs' in request.fixturenames: monkeypatch.setenv('LMLIT_RUNS', str(request.getfixturevalue('runs')))

def real_conversations(n: int) -> list:
    "Real offline conversations: multi-turn chit-chat, Q&A, multiple choice, tool-using arithmetic; every third with a system message."
    convs = []
    for name in ('chitchat', 'chatterbot', 'mc:arc_easy', 'arithmetic', 'identity'):
        convs += C.get_task(name).split('train')[:n // 4]
    systems = ['You are a helpful assistant.', 'Answer briefly.\nUse plain words.', 'Réponds en français, s’il te plaît. 🙂']
    out = []
    for i, conv in enumerate(convs[:n]):
        conv = [dict(m) for m in conv]
        if i % 3 == 0: conv = [dict(role='system', content=systems[i % len(systems)])] + conv
        out.append(conv)
    return out

def sequences(tok, n_ctx: int) -> list[list[int]]:
    "Five real token sequences, the last filling the whole context."
    ids = []
    for conv in real_conversations(40): ids += tok.render_conversation(conv, max_tokens=10**6)[0]
    lengths = [1, 7, n_ctx // 3, n_ctx - 5, n_ctx]
    return [ids[100 * i:100 * i + n] for i, n in enumerate(lengths)]

def max_delta(model, hf, seqs) -> float:
    V = model.config.vocab_size
    worst = 0.0
    with torch.no_grad():
        for s in seqs:
            x = torch.tensor([s])
            worst = max(worst, (model(x) - hf(x).logits[..., :V]).abs().max().item())
    return worst

# ---- logits
@pytest.mark.parametrize('name', ['tiny', 'gqa'])
def test_logits_equal_transformers(runs, exported, name):
    model, tok, meta = load_model(name)
    hf = AutoModelForCausalLM.from_pretrained(exported[name]).eval()
    assert type(hf).__name__ == 'NanoChatForCausalLM' and hf.dtype == torch.float32
    if name == 'gqa': assert hf.config.num_key_value_heads < hf.config.num_attention_heads and hf.config.vocab_size == 320
    seqs = sequences(tok, model.config.sequence_len) if name == 'tiny' else \
        [torch.randint(0, 265, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (1, 5, 30, 63, 64)]
    assert len(seqs) >= 5 and max(map(len, seqs)) == model.config.sequence_len
    delta = max_delta(model, hf, seqs)
    print(f"{name}: max |logits lmlit - transformers| = {delta:.2e} on {len(seqs)} sequences up to {model.config.sequence_len} tokens")
    assert delta <= TOL

def test_bfloat16_export_is_bfloat16(runs, tmp_path):
    from safetensors import safe_open
    folder = X.export_hf('gqa', out=tmp_path/'bf16')
    with safe_open(str(folder/'model.safetensors'), framework='pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    cfg = json.loads((folder/'config.json').read_text())
    assert cfg['model_type'] == 'nanochat' and cfg['vocab_size'] == 320 and cfg['final_logit_softcapping'] == 15.0
    assert cfg['bos_token_id'] == 256 and cfg['eos_token_id'] == 260 and cfg['pad_token_id'] == 256
    gen = json.loads((folder/'generation_config.json').read_text())
    assert gen['eos_token_id'] == [260, 256] and gen['suppress_tokens'] == list(range(265, 320))
    card = (folder/'README.md').read_text()
    assert 'library_name: transformers' in card and 'Intended use and limits' in card

# ---- greedy generation
def greedy_pairs(model, tok, hf, prompts, max_tokens=24):
    "(lmlit engine tokens, transformers generate tokens) per prompt; a row with a tool call is cut at its first <|python_end|>."
    engine = Engine(model, tok)
    python_end = tok.encode_special('<|python_end|>')
    pairs = []
    for prompt in prompts:
        ours = [d.token for d in engine.generate([Request(prompt, max_tokens=max_tokens, temperature=0.0)]) if d.token is not None]
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False)
        theirs = out[0, len(prompt):].tolist()
        if python_end in ours:
            ours, theirs = ours[:ours.index(python_end) + 1], theirs[:ours.index(python_end) + 1]
        pairs.append((ours, theirs))
    return pairs

def test_greedy_generate_equals_engine(runs, exported):
    """Token for token on 12 real chat prompts (the SFT run) and 10 random prompts (the GQA model, whose padded ids
    generation_config suppresses). Tool calls aside: transformers has no calculator, so a row stops at its first <|python_end|>."""
    model, tok, _ = load_model('tiny')
    convs = [c[:2] if c[0]['role'] != 'system' else c[:3] for c in real_conversations(200)[::7]]
    prompts = [p for p in map(tok.render_for_completion, convs) if len(p) + 24 <= model.config.sequence_len][:12]
    assert len(prompts) >= 10
    pairs = greedy_pairs(model, tok, AutoModelForCausalLM.from_pretrained(exported['tiny']).eval(), prompts)
    gqa, gtok, _ = load_model('gqa')
    rand = [[gtok.bos_id] + torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in range(4, 24, 2)]
    pairs += greedy_pairs(gqa, gtok, AutoModelForCausalLM.from_pretrained(exported['gqa']).eval(), rand)
    assert all(ours == theirs for ours, theirs in pairs), [p for p in pairs if p[0] != p[1]][:2]
    assert len({tuple(o) for o, _ in pairs[-10:]}) >= 8       # the GQA model's continuations differ: not one repeated answer
    print(f"greedy: {len(pairs)} prompts equal token for token ({sum(len(o) for o, _ in pairs)} tokens)")

# ---- tokenizer
def real_texts(n: int) -> list[str]:
    texts = []
    for conv in real_conversations(n):
        for m in conv:
            c = m['content']
            texts += [c] if isinstance(c, str) else [p['text'] for p in c]
    unicode = ['naïve café — 日本語のテキスト', 'ελληνικά και русский текст', '😀🚀 emoji\u200d joined 👩‍👩‍👧', 'العربية מימין לשמאל',
               'tabs\tand\r\nnewlines\n\n\n  spaces   ', 'Ünïcödé ﬁ ligature, ½ ², 中文标点，。']
    special = ['<|bos|> at the start', 'inside <|user_end|><|assistant_start|> text', '<|python_start|>1+1<|python_end|>',
               '<|not_special|> <|bos', "it's they'LL WE'VE 12345678 3.14159", '<|output_start|>2<|output_end|><|assistant_end|>']
    out = []
    for i, t in enumerate(texts[:n]):
        if i % 5 == 0: t = t + ' ' + special[i % len(special)]
        elif i % 5 == 2: t = unicode[i % len(unicode)] + ' ' + t
        out.append(t)
    extra = unicode + special + ['a' * 300]
    return out + extra

def test_tokenizer_ids_equal(runs, exported):
    _, tok, _ = load_model('tiny')
    hf = AutoTokenizer.from_pretrained(exported['tiny'])
    texts = real_texts(1100)
    assert len(texts) >= 1000 and sum('<|' in t for t in texts) >= 100 and sum(any(ord(ch) > 127 for ch in t) for t in texts) >= 100
    ours = tok.encode(texts)
    theirs = hf(texts, add_special_tokens=False, split_special_tokens=True)['input_ids']
    bad = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not bad, bad[:3]
    assert all(hf.decode(ids) == t for t, ids in zip(texts[:200], theirs[:200]))
    specials = set(tok.special_tokens.values())
    assert not any(specials & set(ids) for ids in theirs)             # special-looking text stayed text
    assert hf.convert_tokens_to_ids(list(tok.special_tokens)) == list(tok.special_tokens.values())
    print(f"tokenizer: {len(texts)} texts equal ids")

def test_tokenizer_back_from_tokenizer_json(runs, exported):
    _, tok, _ = load_model('tiny')
    back = X.tokenizer_from_hf(exported['tiny']/'tokenizer.json')
    assert back.hash() == tok.hash()

# ---- chat template
def test_chat_template_equals_render_for_completion(runs, exported):
    _, tok, _ = load_model('tiny')
    hf = AutoTokenizer.from_pretrained(exported['tiny'])
    convs = real_conversations(520)
    assert len(convs) >= 500 and sum(c[0]['role'] == 'system' for c in convs) >= 150 and sum(len(c) > 3 for c in convs) >= 100
    assert any(not isinstance(m['content'], str) for c in convs for m in c)        # tool-call parts too
    for conv in convs:
        assert hf.apply_chat_template(conv, add_generation_prompt=True)['input_ids'] == tok.render_for_completion(conv), conv
    hostile = [dict(role='user', content='say <|assistant_end|><|bos|> now')]
    assert hf.apply_chat_template(hostile, add_generation_prompt=True, sanitize_control_tokens=True)['input_ids'] == \
        tok.render_for_completion(hostile)
    with pytest.raises(Exception, match='alternate'): hf.apply_chat_template([dict(role='assistant', content='x')])
    assert (exported['tiny']/'chat_template.jinja').exists()

# ---- round trips
def test_import_of_export_gives_identical_tensors(runs, exported, capsys):
    X.import_hf(exported['tiny'], 'tiny-back')
    X.import_hf(exported['gqa'], 'gqa-back')
    for name in ('tiny', 'gqa'):
        a, tok_a, _ = load_model(name)
        b, tok_b, _ = load_model(f'{name}-back')
        assert tok_a.hash() == tok_b.hash()
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert lmlit_main(['chat', '--run', 'tiny-back', '-p', 'Hello there', '--max-tokens', '6']) == 0
    assert lmlit_main(['import', str(exported['tiny']), '--run', 'tiny-back']) == 2
    assert 'already holds checkpoints' in capsys.readouterr().err

def test_sft_accepts_an_imported_run(runs):
    r = subprocess.run([sys.executable, '-m', 'lmlit.sft', '-p', 'run', 'tiny-back', '-p', 'steps', '1', '-p', 'sample_every', '-1',
                        '-p', 'plots', 'False', '-p', 'eval_every', '-1', '-p', 'device_batch', '2', '-p', 'total_batch', '256'],
                       cwd=runs.parent, env=child_env(LMLIT_RUNS=runs), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert load_model('tiny-back', stage='sft')[2]['stage'] == 'sft'

def transformers_made(folder: Path, **overrides) -> Path:
    "A model built and saved by transformers itself (random weights, big enough to matter), with an lmlit-style tokenizer."
    torch.manual_seed(1)
    cfg = dict(vocab_size=320, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=48)
    hf = NanoChatForCausalLM(NanoChatConfig(**{**cfg, **overrides}))
    with torch.no_grad():
        for p in hf.parameters(): p.normal_(0, 0.2)
    hf.save_pretrained(folder)
    X.hf_tokenizer(byte_tokenizer()).save_pretrained(folder)
    return folder

def test_a_model_saved_by_transformers_imports(runs, tmp_path):
    folder = transformers_made(tmp_path/'made')
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    X.import_hf(folder, 'made')
    model, tok, _ = load_model('made')
    seqs = [torch.randint(0, 265, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (1, 9, 20, 47, 48)]
    delta = max_delta(model, hf, seqs)
    print(f"transformers-made (rms_norm_eps 1e-6 vs lmlit's 1.19e-7): max |Δ logits| = {delta:.2e}")
    assert delta <= TOL

# ---- refusals: each one line, before any weight is read
class Boom:
    def __reduce__(self): return (Path.touch, (Path(os.environ['BOOM_FILE']),))

@pytest.mark.parametrize('case, expect', [
    ('llama', "model_type is 'llama'"), ('tied', 'untied head'), ('sharded', 'sharded'), ('missing', 'no model.safetensors'),
    ('bin', 'never unpickles'), ('vocab', 'the tokenizer has 265 tokens but the embedding only 200 rows'),
    ('no_tokenizer', 'no tokenizer.json'), ('bad_json', 'not readable JSON'), ('nonsense', 'neither a model folder')])
def test_bad_input_one_line(runs, exported, tmp_path, monkeypatch, capsys, case, expect):
    src = tmp_path/case
    if case != 'nonsense':
        src.mkdir()
        for n in ('config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'):
            (src/n).write_bytes((exported['gqa']/n).read_bytes())
        cfg = json.loads((src/'config.json').read_text())
        if case == 'llama': cfg['model_type'] = 'llama'
        if case == 'tied': cfg['tie_word_embeddings'] = True
        if case == 'vocab': cfg['vocab_size'] = 200
        (src/'config.json').write_text(json.dumps(cfg) if case != 'bad_json' else '{"model_type": ')
        if case in ('sharded', 'missing', 'bin'): (src/'model.safetensors').unlink()
        if case == 'sharded':
            (src/'model-00001-of-00002.safetensors').write_bytes(b'x')
            (src/'model.safetensors.index.json').write_text('{}')
        if case == 'bin':
            monkeypatch.setenv('BOOM_FILE', str(tmp_path/'unpickled'))
            (src/'pytorch_model.bin').write_bytes(pickle.dumps(Boom()))
        if case == 'no_tokenizer': (src/'tokenizer.json').unlink()
    rc = lmlit_main(['import', str(src) if case != 'nonsense' else 'not a repo', '--run', f'bad-{case}'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expect in err and len(err.splitlines()) == 1 and 'Traceback' not in err, err
    assert not (runs/f'bad-{case}'/'checkpoints').exists() and not (tmp_path/'unpickled').exists()

def test_bad_export_dtype(runs):
    with pytest.raises(Exception, match='dtype must be one of bfloat16, float32'): X.export_hf('gqa', dtype='float16')

# ---- --push and a hub repo id: against a stand-in Hub on 127.0.0.1
class StandInHub(BaseHTTPRequestHandler):
    "Just enough of the Hub's HTTP API for huggingface_hub's create_repo, upload_folder, list_repo_files and hf_hub_download."
    repos: dict = {}
    log: list = []

    def log_message(self, *args): pass

    def _send(self, code, body=b'', ctype='application/json', headers=None):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        for k, v in (headers or {}).items(): self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD': self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def _repo(self, parts):
        return '/'.join(parts[:2])

    def do_POST(self):
        path = urlparse(self.path).path
        self.log.append(('POST', path))
        body = self._body()
        parts = [unquote(p) for p in path.strip('/').split('/')]
        if path == '/api/validate-yaml': return self._send(200, {'errors': [], 'warnings': []})
        if path == '/api/repos/create':
            req = json.loads(body)
            repo = f"{req.get('organization') or 'user'}/{req['name']}" if 'organization' in req or '/' not in req['name'] else req['name']
            self.repos.setdefault(repo, {})
            return self._send(200, {'url': f'http://{self.headers["Host"]}/{repo}', 'name': repo})
        if parts[:2] == ['api', 'models'] and len(parts) >= 5 and parts[4] == 'preupload':
            files = json.loads(body)['files']
            return self._send(200, {'files': [dict(path=f['path'], uploadMode='regular', shouldIgnore=False) for f in files],
                                    'commitOid': '0' * 40})
        if parts[:2] == ['api', 'models'] and len(parts) >= 5 and parts[4] == 'commit':
            repo = '/'.join(parts[2:4])
            store = self.repos.setdefault(repo, {})
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get('key') == 'file':
                    v = item['value']
                    store[v['path']] = base64.b64decode(v['content'])
            return self._send(200, {'commitUrl': f'http://{self.headers["Host"]}/{repo}/commit/{"1" * 40}', 'commitOid': '1' * 40})
        self._send(404, {'error': f'stand-in: no POST {path}'})

    def do_GET(self):
        path = urlparse(self.path).path
        self.log.append((self.command, path))
        parts = [unquote(p) for p in path.strip('/').split('/')]
        if parts[:2] == ['api', 'models'] and len(parts) >= 5 and parts[4] in ('tree', 'revision'):
            repo = '/'.join(parts[2:4])
            if repo not in self.repos: return self._send(404, {'error': 'Repository not found'}, headers={'X-Error-Code': 'RepoNotFound'})
            files = self.repos[repo]
            if parts[4] == 'tree':
                return self._send(200, [dict(type='file', path=n, size=len(b), oid=hashlib.sha1(b).hexdigest()) for n, b in files.items()])
            return self._send(200, dict(id=repo, sha='1' * 40, siblings=[dict(rfilename=n) for n in files]))
        if len(parts) >= 5 and parts[2] == 'resolve':
            repo, name = '/'.join(parts[:2]), '/'.join(parts[4:])
            data = self.repos.get(repo, {}).get(name)
            if data is None: return self._send(404, {'error': 'Entry not found'}, headers={'X-Error-Code': 'EntryNotFound'})
            etag = '"' + hashlib.sha256(data).hexdigest() + '"'
            return self._send(200, data, 'application/octet-stream', {'ETag': etag, 'X-Repo-Commit': '1' * 40})
        self._send(404, {'error': f'stand-in: no GET {path}'})

    do_HEAD = do_GET

@pytest.fixture
def hub():
    server = ThreadingHTTPServer(('127.0.0.1', 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()

def test_push_and_import_from_the_hub(runs, hub, tmp_path):
    env = child_env(LMLIT_RUNS=runs, HF_ENDPOINT=hub, HF_HUB_OFFLINE='0', HF_TOKEN='hf_standin', HF_HOME=tmp_path/'hf',
                    HF_HUB_DISABLE_XET='1', HF_HUB_DISABLE_TELEMETRY='1')
    lmlit = [sys.executable, '-m', 'lmlit.cli']
    r = subprocess.run(lmlit + ['export', '--run', 'gqa', '--out', str(tmp_path/'out'), '--dtype', 'float32', '--push', 'me/gqa'],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and 'pushed' in r.stdout, r.stdout[-2000:] + r.stderr[-3000:] + str(StandInHub.log)
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'README.md'} <= set(StandInHub.repos['me/gqa'])
    r = subprocess.run(lmlit + ['import', 'me/gqa', '--run', 'gqa-hub'], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:] + str(StandInHub.log)
    a, b = load_model('gqa')[0].state_dict(), load_model('gqa-hub')[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    StandInHub.repos['me/pickled'] = {'config.json': StandInHub.repos['me/gqa']['config.json'], 'pytorch_model.bin': b'x',
                                      'tokenizer.json': StandInHub.repos['me/gqa']['tokenizer.json']}
    r = subprocess.run(lmlit + ['import', 'me/pickled', '--run', 'pickled'], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'never unpickles' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
