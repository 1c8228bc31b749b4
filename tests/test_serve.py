"`lmlit serve` over HTTP: every route and limit (httpx), streaming, n, stop, seed, concurrency, disconnects, the official openai client; `lmlit chat -p` on a trained run."
import json, os, subprocess, sys, threading, time
from pathlib import Path
import httpx
import pytest
from conftest import ROOT, child_env, free_port
from serve_fixtures import scripted_engine, tool_engine, LiveServer, HOSTILE, TOOL_PARTS
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
    assert page.status_code == 200 and 'lmlit chat' in page.text
    for own in ('/static/chat.js', '/static/chat.css'):               # no CDN: the page's own files name no URL
        assert f'"{own}"' in page.text and 'http' not in httpx.get(f"{live.url}{own}").text

def test_the_page_is_served_under_a_strict_policy(live):
    "No inline script or style in the page; a CSP that forbids them, plugins, <base> and framing; nosniff everywhere."
    page = httpx.get(f"{live.url}/")
    assert '<script>' not in page.text and '<style>' not in page.text and ' style=' not in page.text
    rules = dict(rule.strip().split(' ', 1) for rule in page.headers['content-security-policy'].split(';'))
    assert rules['script-src'] == "'self'" and rules['style-src'] == "'self'" and rules['object-src'] == "'none'"
    assert rules['base-uri'] == "'none'" and rules['frame-ancestors'] == "'none'" and rules['default-src'] == "'self'"
    for path in ('/', '/static/chat.js', '/health', '/nowhere'):
        assert httpx.get(f"{live.url}{path}").headers['x-content-type-options'] == 'nosniff', path

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

# ---- refusing strangers (raw HTTP: what a hostile page or client would send)
def test_host_allow_list_against_dns_rebinding(live):
    url = f"{live.url}/v1/chat/completions"
    body = dict(messages=[dict(role='user', content='Hi')], max_tokens=2)
    foreign = httpx.post(url, json=body, headers={'Host': f'evil.example:{live.port}'})
    assert foreign.status_code == 400 and foreign.json()['error']['code'] == 'host_not_allowed', foreign.text
    assert 'evil.example' in foreign.json()['error']['message'] and '--allow-host' in foreign.json()['error']['message']
    assert httpx.get(f"{live.url}/", headers={'Host': 'evil.example'}).status_code == 400      # the page too
    assert httpx.post(url, json=body, headers={'Host': f'localhost:{live.port}'}).status_code == 200

@pytest.mark.parametrize('content_type', ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', None])
def test_post_bodies_must_be_json(live, content_type):
    headers = {'Content-Type': content_type} if content_type else {}
    r = httpx.post(f"{live.url}/v1/chat/completions", content=json.dumps(dict(messages=[dict(role='user', content='Hi')])),
                   headers=headers)
    assert r.status_code == 415 and 'application/json' in r.json()['error']['message'], r.text

def test_oversized_body_refused_before_it_is_read(live):
    import socket
    with socket.create_connection(('127.0.0.1', live.port), timeout=10) as sock:     # claims 200 MB, sends none of it
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 200000000\r\n\r\n".encode())
        started = time.time()
        answer = b''
        while b'at most' not in answer and time.time() - started < 5:   # the head and the body may come in separate packets
            chunk = sock.recv(4096)
            if not chunk: break
            answer += chunk
        answer = answer.decode()
    assert answer.startswith('HTTP/1.1 413') and time.time() - started < 5 and 'at most' in answer, answer
    def chunks():                                                                      # chunked: no Content-Length to check
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(200): yield b'x' * 10_000
        yield b'"}]}'
    r = httpx.post(f"{live.url}/v1/chat/completions", content=chunks(), headers={'Content-Type': 'application/json'}, timeout=30)
    assert r.status_code == 413 and r.json()['error']['code'] == 'request_too_large'

def test_deep_nesting_and_wrong_types_are_400_not_500(live):
    url = f"{live.url}/v1/chat/completions"
    deep = httpx.post(url, content=b'[' * 100_000, headers={'Content-Type': 'application/json'})
    assert deep.status_code == 400 and 'not valid JSON' in deep.json()['error']['message']
    nested = httpx.post(url, json=dict(messages=[dict(role='user', content=[[[['x']]]])]))
    assert nested.status_code == 400
    as_text = _chat(live, stream='false')                         # a string is not a boolean: no stream, a 400
    assert as_text.status_code == 400 and as_text.json()['error']['param'] == 'stream'
    assert not as_text.headers['content-type'].startswith('text/event-stream')

@pytest.mark.parametrize('field, value', [('tools', [dict(type='function', function=dict(name='f'))]), ('logprobs', True),
                                          ('response_format', dict(type='json_object')), ('frequency_penalty', 0.5),
                                          ('presence_penalty', 1), ('logit_bias', {'1': 5}), ('bogus_field', 1)])
def test_unsupported_features_name_the_field(live, field, value):
    r = _chat(live, **{field: value})
    assert r.status_code == 400 and r.json()['error']['param'] == field and field in r.json()['error']['message'], r.text

def test_neutral_values_of_unsupported_features_are_accepted(live):
    assert _chat(live, logprobs=False, presence_penalty=0, frequency_penalty=0, tools=None, max_tokens=2).status_code == 200

def test_docs_off_unless_asked_and_cors_off_unless_named():
    engine, model, tok = scripted_engine()
    origin = 'http://localhost:3000'
    with LiveServer(make_app(engine, 'scripted')) as plain, LiveServer(make_app(engine, 'scripted', docs=True, cors=origin)) as opened:
        assert httpx.get(f"{plain.url}/docs").status_code == 404 and httpx.get(f"{plain.url}/openapi.json").status_code == 404
        assert httpx.get(f"{opened.url}/openapi.json").status_code == 200 and httpx.get(f"{opened.url}/docs").status_code == 200
        preflight = dict(Origin=origin, **{'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type'})
        assert 'access-control-allow-origin' not in httpx.options(f"{plain.url}/v1/chat/completions", headers=preflight).headers
        assert 'access-control-allow-origin' not in httpx.get(f"{plain.url}/v1/models", headers=dict(Origin=origin)).headers
        allowed = httpx.options(f"{opened.url}/v1/chat/completions", headers=preflight)
        assert allowed.status_code == 200 and allowed.headers['access-control-allow-origin'] == origin
        other = httpx.options(f"{opened.url}/v1/chat/completions", headers=dict(preflight, Origin='http://evil.example'))
        assert other.headers.get('access-control-allow-origin') != 'http://evil.example'

def test_bounded_queue_429_with_retry_after():
    engine, model, tok = scripted_engine(delay_s=0.1)
    limits = Limits(max_tokens=400, max_queued_rows=2, max_batch=2)   # 1 row runs, 1 free: the n=2 request waits
    with LiveServer(make_app(engine, 'slow', limits), limits) as server:
        url = f"{server.url}/v1/chat/completions"
        body = dict(messages=[dict(role='user', content='Hi')], stream=True, max_tokens=400)
        with httpx.stream('POST', url, json=body, timeout=30) as running:
            running_lines = running.iter_lines()
            next(running_lines)
            while httpx.get(f"{server.url}/health").json()['running'] < 1: time.sleep(0.02)   # its first step is done
            with httpx.stream('POST', url, json=dict(body, n=2), timeout=30) as queued:
                queued_lines = queued.iter_lines()
                opening = next(queued_lines)
                health = httpx.get(f"{server.url}/health").json()
                assert health['queued'] == 2, (health, opening, model.calls)
                refused = httpx.post(url, json=dict(messages=[dict(role='user', content='Hi')]), timeout=30)
                assert refused.status_code == 429 and int(refused.headers['Retry-After']) >= 1
                assert refused.json()['error']['code'] == 'rate_limit_exceeded'
            deadline = time.time() + 5
            while httpx.get(f"{server.url}/health").json()['queued'] and time.time() < deadline: time.sleep(0.05)
            assert httpx.get(f"{server.url}/health").json()['queued'] == 0     # the client that left no longer counts

def test_non_streamed_request_cancelled_when_its_client_leaves():
    engine, model, tok = scripted_engine(delay_s=0.05)
    with LiveServer(make_app(engine, 'slow', Limits(max_tokens=400))) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", timeout=httpx.Timeout(30, read=1.0),
                       json=dict(messages=[dict(role='user', content='Hi')], max_tokens=400, temperature=0))
        time.sleep(0.5)
        steps_after_close = len(model.calls)
        time.sleep(1.0)
        assert len(model.calls) == steps_after_close and steps_after_close < 40     # stopped, far short of its 75 tokens

def test_slow_request_heads_are_cut_and_health_still_answers():
    import socket
    engine, model, tok = scripted_engine()
    limits = Limits(header_timeout_s=1.5)
    with LiveServer(make_app(engine, 'scripted', limits), limits) as server:
        idle = []
        for _ in range(300):                                        # slowloris: heads that never end
            sock = socket.create_connection(('127.0.0.1', server.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            idle.append(sock)
        started = time.time()
        assert httpx.get(f"{server.url}/health", timeout=5).json()['status'] == 'ok'
        assert time.time() - started < 2
        time.sleep(2.0)
        closed = sum(sock.recv(1) == b'' for sock in idle)         # the server hung up on every one
        for sock in idle: sock.close()
        assert closed == len(idle)

def test_tokenising_a_long_conversation_does_not_stall_health():
    engine, model, tok = scripted_engine()
    turns = [dict(role='user' if i % 2 == 0 else 'assistant', content=f'line {i} of a long talk ' * 2) for i in range(299)]
    with LiveServer(make_app(engine, 'scripted')) as server:
        done = []
        asker = threading.Thread(target=lambda: done.append(httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                                                                       json=dict(messages=turns, max_tokens=2))))
        asker.start()
        waits = []
        while asker.is_alive():
            started = time.time()
            httpx.get(f"{server.url}/health", timeout=10)
            waits.append(time.time() - started)
        asker.join()
        assert done[0].status_code == 200, done[0].text
        assert max(waits) < 0.5, waits

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
    # from a folder holding a checkout named `lmlit` (the page is found through the package, not the cwd), with a key,
    # on any free port: the URL is printed once the port listens
    here = trained.parent/'holder'
    here.mkdir(exist_ok=True)
    if not (here/'lmlit').exists(): (here/'lmlit').symlink_to(ROOT)
    server = subprocess.Popen([sys.executable, '-m', 'lmlit.cli', 'serve', '--run', 'tiny', '--port', '0', '--api-key', 'k1'],
                              env=env, cwd=here, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stdout.readline()
        assert banner.startswith('lmlit serve: http://127.0.0.1:'), banner + server.stderr.read() if server.poll() is not None else banner
        url = banner.split()[2].rstrip('/')
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200           # listening when it said so
        assert 'lmlit chat' in httpx.get(f"{url}/", timeout=5).text
        ask = dict(messages=[dict(role='user', content='Speak')], max_tokens=10)
        assert httpx.post(f"{url}/v1/chat/completions", timeout=60, json=ask).status_code == 401
        out = httpx.post(f"{url}/v1/chat/completions", timeout=60, json=ask, headers={'Authorization': 'Bearer k1'}).json()
        assert out['choices'][0]['finish_reason'] in ('stop', 'length') and out['model'] == 'tiny-base'
        assert out['usage']['completion_tokens'] <= 10
        card = httpx.get(f"{url}/v1/models/tiny-base", timeout=5, headers={'Authorization': 'Bearer k1'}).json()
        assert card['stage'] == 'base' and card['step'] == 4 and card['context_length'] > 0
        busy = subprocess.run([sys.executable, '-m', 'lmlit.cli', 'serve', '--run', 'tiny', '--port', url.rsplit(':', 1)[1]],
                              env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and 'pick another --port' in busy.stderr and len(busy.stderr.strip().splitlines()) == 1, busy.stderr
    finally:
        server.terminate()
        server.wait(20)

def test_a_second_request_is_answered_while_the_first_still_streams():
    "Continuous batching through the real server: the second request joins the running batch, it does not wait for it."
    engine, model, tok = scripted_engine(delay_s=0.1)            # the first reply takes ~4 s
    with LiveServer(make_app(engine, 'slow', Limits(max_tokens=400))) as server:
        url = f"{server.url}/v1/chat/completions"
        stamps = []
        def read_first():
            body = dict(messages=[dict(role='user', content='Hi')], stream=True, max_tokens=400, temperature=0)
            with httpx.stream('POST', url, json=body, timeout=30) as first:
                for line in first.iter_lines(): stamps.append((time.time(), line))
        reader = threading.Thread(target=read_first)
        reader.start()
        while len(stamps) < 3: time.sleep(0.01)                   # the first is streaming
        second = httpx.post(url, json=dict(messages=[dict(role='user', content='Hello')], max_tokens=3, temperature=0),
                            timeout=30)
        answered = time.time()
        reader.join()
        assert second.status_code == 200 and second.json()['usage']['completion_tokens'] == 3
        done = next(t for t, line in stamps if '[DONE]' in line)
        later = [line for t, line in stamps if t > answered and '"content"' in line]
        assert answered < done and len(later) >= 5, (answered, done, len(later))

@pytest.fixture(scope='module')
def tools():
    engine, model, tok = tool_engine()
    with LiveServer(make_app(engine, 'scripted')) as server:
        server.model, server.tok = model, tok
        yield server

def _first_reply(tok, prompt: list[int], length: int) -> list[int]:
    at = prompt.index(tok.encode_special('<|assistant_start|>')) + 1
    return prompt[at:at + length]

def test_a_tool_call_comes_as_parts_and_goes_back_as_the_models_own_tokens(tools):
    "Whole answer: `lmlit_parts` beside the text; sent back as the content, they render to exactly the ids the model produced."
    asked = [dict(role='user', content='Add')]
    answer = httpx.post(f"{tools.url}/v1/chat/completions", json=dict(messages=asked), timeout=60).json()
    message = answer['choices'][0]['message']
    assert message['content'] == 'Two and three: <<2+3=5>> so 5 << 6; <<abs( gave nothing.'      # the text, unchanged
    assert message['lmlit_parts'] == TOOL_PARTS
    history = asked + [dict(role='assistant', content=message['lmlit_parts']), dict(role='user', content='Again')]
    assert httpx.post(f"{tools.url}/v1/chat/completions", json=dict(messages=history), timeout=60).status_code == 200
    assert _first_reply(tools.tok, tools.model.prompts[-1], len(tools.model.plan)) == tools.model.plan
    flat = asked + [dict(role='assistant', content=message['content']), dict(role='user', content='Again')]
    httpx.post(f"{tools.url}/v1/chat/completions", json=dict(messages=flat), timeout=60)
    assert _first_reply(tools.tok, tools.model.prompts[-1], len(tools.model.plan)) != tools.model.plan   # text is not

def test_streamed_part_deltas_build_the_same_parts_and_mark_an_unclosed_call(tools):
    "Streamed: each delta's `lmlit_parts` append to part `index`; a call gets `closed`; a reply cut inside one has none."
    def stream(max_tokens):
        body = dict(messages=[dict(role='user', content='Add')], stream=True, max_tokens=max_tokens)
        with httpx.stream('POST', f"{tools.url}/v1/chat/completions", json=body, timeout=60) as r:
            chunks = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith('data: {')]
        text, parts, closed = '', {}, set()
        for chunk in chunks:
            delta = chunk['choices'][0]['delta']
            text += delta.get('content', '')
            assert ''.join(d['text'] for d in delta.get('lmlit_parts', [])) in delta.get('content', '')
            for d in delta.get('lmlit_parts', []):
                parts.setdefault(d['index'], dict(type=d['type'], text=''))['text'] += d['text']
                if d.get('closed'): closed.add(d['index'])
        return text, [parts[k] for k in sorted(parts)], closed
    text, parts, closed = stream(100)
    assert parts == TOOL_PARTS and closed == {1, 4} and text.endswith('<<abs( gave nothing.')
    ends = [i for i, t in enumerate(tools.model.plan) if t == tools.tok.encode_special('<|python_end|>')]
    text, parts, closed = stream(ends[1])                   # max_tokens: the reply ends before the second call's end
    assert parts[-1] == dict(type='python', text='abs(') and closed == {1} and text.endswith('; <<abs(')
    whole = httpx.post(f"{tools.url}/v1/chat/completions", timeout=60,
                       json=dict(messages=[dict(role='user', content='Add')], max_tokens=ends[1])).json()
    assert whole['choices'][0]['message']['lmlit_parts'][-1] == dict(type='python', text='abs(', closed=False)
