"`lmlit serve` over HTTP: every route and limit (httpx), streaming, n, stop, seed, concurrency, disconnects, the official openai client; `lmlit chat -p` on a trained run."
import json, os, subprocess, sys, threading, time
from pathlib import Path
import httpx
import pytest
from conftest import ROOT, child_env, free_port
from serve_fixtures import scripted_engine, LiveServer, HOSTILE
from lmlit.serve import make_app, Limits

pytestmark = pytest.mark.timeout(300)

@pytest.fixture(scope='module')
def live():
    engine, model, tok = scripted_engine()
    limits = Limits(max_messages=6, max_message_chars=200, max_total_chars=500, max_tokens=100, max_n=3)
    with LiveServer(make_app(engine, 'scripted', limits)) as server:
        server.model, server.tok = model, tok
        yield server

def _chat(live, **body):
    body.setdefault('messages', [dict(role='user', content='Hello')])
    return httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)

def test_health_models_and_page(live):
    assert httpx.get(f"{live.url}/health").json()['status'] == 'ok'
    models = httpx.get(f"{live.url}/v1/models").json()
    assert models['object'] == 'list' and models['data'][0]['id'] == 'scripted'
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and 'lmlit chat' in page.text and 'http' not in page.text.split('<script>')[1]   # no CDN

def test_non_streamed_completion(live):
    r = _chat(live, temperature=0.0, max_tokens=100)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out['object'] == 'chat.completion'
    assert out['choices'][0]['message']['content'] == 'A' + HOSTILE
    assert out['choices'][0]['finish_reason'] == 'stop' and out['usage']['prompt_tokens'] > 0

def test_streamed_completion_is_sse_deltas(live):
    with httpx.stream('POST', f"{live.url}/v1/chat/completions", timeout=60,
                      json=dict(messages=[dict(role='user', content='Hi')], stream=True, temperature=0)) as r:
        assert r.headers['content-type'].startswith('text/event-stream')
        lines = [l for l in r.iter_lines() if l.startswith('data: ')]
    assert lines[-1] == 'data: [DONE]'
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert len(chunks) > 5                                     # many deltas, not one blob
    text = ''.join(c['choices'][0]['delta'].get('content', '') for c in chunks)
    assert text == 'A' + HOSTILE and chunks[-1]['choices'][0]['finish_reason'] == 'stop'

def test_n_seed_stop_max_tokens(live):
    out = _chat(live, n=3, seed=5, temperature=1.0).json()
    again = _chat(live, n=3, seed=5, temperature=1.0).json()
    firsts = [c['message']['content'] for c in out['choices']]
    assert len(firsts) == 3 and firsts == [c['message']['content'] for c in again['choices']]   # same seed, same samples
    assert len({f.split()[0] for f in [_chat(live, seed=s, temperature=1.0).json()['choices'][0]['message']['content'] for s in range(8)]}) > 1
    stopped = _chat(live, temperature=0, stop=['<img']).json()['choices'][0]
    assert stopped['message']['content'] == 'A' + HOSTILE.split('<img')[0] and stopped['finish_reason'] == 'stop'
    short = _chat(live, temperature=0, max_tokens=3).json()['choices'][0]
    assert short['finish_reason'] == 'length' and len(live.tok.encode(short['message']['content'])) <= 3

@pytest.mark.parametrize('body, says', [
    (dict(messages=[dict(role='user', content='x')] * 7), 'at most 6 messages'),
    (dict(messages=[dict(role='user', content='x' * 201)]), 'at most 200'),
    (dict(messages=[dict(role='user', content='x' * 150), dict(role='assistant', content='y' * 150),
                    dict(role='user', content='z' * 150), dict(role='assistant', content='y' * 150)] + [dict(role='user', content='w')]), 'at most 500'),
    (dict(temperature=2.5), 'temperature must be between 0 and 2'),
    (dict(top_p=0), 'top_p must be between'),
    (dict(top_k=500), 'top_k must be between 0 and 200'),
    (dict(max_tokens=101), 'max_tokens must be between 1 and 100'),
    (dict(max_tokens=0), 'max_tokens must be between 1 and 100'),
    (dict(n=4), 'n must be between 1 and 3'),
    (dict(seed='x'), 'seed must be an integer'),
    (dict(stop=['a'] * 5), 'stop must be'),
    (dict(messages=[dict(role='robot', content='x')]), "message 0 must be"),
    (dict(messages=[dict(role='user', content=5)]), "messages[0].content must be"),
    (dict(messages=[]), 'messages must be a non-empty list'),
    (dict(messages=[dict(role='user', content='a'), dict(role='assistant', content='b')]), "last message must be the user's"),
])
def test_limits_give_clear_400(live, body, says):
    r = _chat(live, **body)
    assert r.status_code == 400 and says in r.json()['error']['message'], r.text

def test_bad_json_is_400(live):
    r = httpx.post(f"{live.url}/v1/chat/completions", content=b'{not json', headers={'content-type': 'application/json'})
    assert r.status_code == 400 and 'not valid JSON' in r.json()['error']['message']

def test_concurrent_requests_all_answered(live):
    results = {}
    def ask(i): results[i] = _chat(live, messages=[dict(role='user', content=f'question {i}')], temperature=0)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads: t.start()
    for t in threads: t.join(60)
    assert sorted(results) == list(range(6))
    assert all(r.status_code == 200 and r.json()['choices'][0]['message']['content'] == 'A' + HOSTILE for r in results.values())

def test_disconnecting_client_stops_its_generation():
    engine, model, tok = scripted_engine(delay_s=0.05)
    with LiveServer(make_app(engine, 'slow', Limits(max_tokens=400))) as server:
        with httpx.stream('POST', f"{server.url}/v1/chat/completions", timeout=60,
                          json=dict(messages=[dict(role='user', content='Hi')], stream=True, max_tokens=400, temperature=0)) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 6: break
        time.sleep(1.0)
        steps_after_close = len(model.calls)
        time.sleep(1.0)
        assert len(model.calls) == steps_after_close            # nothing more computed for the gone client
        assert steps_after_close < 60                            # far fewer than the 400 tokens it asked for
        assert httpx.get(f"{server.url}/health").json()['status'] == 'ok'

# ---- the official openai client
def _openai():
    try:
        import openai
        return openai
    except ImportError:
        if os.environ.get('CI'): raise
        pytest.skip("the openai package is not installed (CI installs it)")

def test_official_openai_client_streamed_and_not(live):
    openai = _openai()
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key='unused')
    assert [m.id for m in client.models.list().data] == ['scripted']
    done = client.chat.completions.create(model='scripted', messages=[dict(role='user', content='Hello')], temperature=0, max_tokens=100)
    assert done.choices[0].message.content == 'A' + HOSTILE and done.choices[0].finish_reason == 'stop'
    stream = client.chat.completions.create(model='scripted', messages=[dict(role='user', content='Hello')], temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or '' for c in stream if c.choices]
    assert ''.join(pieces) == 'A' + HOSTILE and len(pieces) > 5
    with pytest.raises(openai.BadRequestError, match='temperature'):
        client.chat.completions.create(model='scripted', messages=[dict(role='user', content='x')], temperature=2.5)

# ---- a trained checkpoint: `lmlit chat -p` and `lmlit serve`
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    args = [sys.executable, '-m', 'lmlit.train', '-p', 'run', 'tiny', '-p', 'steps', '4', '-p', 'sample_every', '0', '-p', 'plots', 'False']
    r = subprocess.run(args, cwd=root, env=child_env(LMLIT_RUNS=root/'runs'), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root/'runs'

def test_chat_one_shot_and_serve_on_a_trained_run(trained):
    env = child_env(LMLIT_RUNS=trained)
    r = subprocess.run([sys.executable, '-m', 'lmlit.cli', 'chat', '--run', 'tiny', '-p', 'What is the king?', '--max-tokens', '12'],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    bad = subprocess.run([sys.executable, '-m', 'lmlit.cli', 'chat', '--run', 'nosuchrun', '-p', 'x'], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and 'error' in bad.stderr and 'Traceback' not in bad.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, '-m', 'lmlit.cli', 'serve', '--run', 'tiny', '--port', str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            assert time.time() < deadline and server.poll() is None, server.stderr.read() if server.poll() is not None else 'timeout'
            time.sleep(0.3)
        out = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                         json=dict(messages=[dict(role='user', content='Speak')], max_tokens=10)).json()
        assert out['choices'][0]['finish_reason'] in ('stop', 'length') and out['model'] == 'tiny-base'
    finally:
        server.terminate(); server.wait(20)
