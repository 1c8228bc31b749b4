"`lmlit serve` through the official `openai` client: content parts, developer role, merged turns, max_completion_tokens, include_usage, models.retrieve, unknown models, the API key, and every error parsed as an APIError."
import os, threading, time
import httpx
import pytest
from serve_fixtures import scripted_engine, tool_engine, LiveServer, HOSTILE, TOOL_PARTS
from lmlit.serve import make_app, Limits

pytestmark = pytest.mark.timeout(120)
KEY = 'sk-lmlit-test'
HELLO = [dict(role='user', content='Hello')]

@pytest.fixture(scope='module')
def openai():
    try:
        import openai
        return openai
    except ImportError:
        if os.environ.get('CI'): raise
        pytest.skip("the openai package is not installed (CI installs it)")

@pytest.fixture(scope='module')
def live():
    engine, model, tok = scripted_engine()
    limits = Limits(max_tokens=100, max_body_bytes=20_000)
    with LiveServer(make_app(engine, 'scripted', limits, stage='sft', step=12, api_key=KEY), limits) as server:
        server.tok = tok
        server.model = model
        yield server

@pytest.fixture
def client(openai, live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)

def _prompt_tokens(live, messages) -> int:
    return len(live.tok.render_for_completion(messages))

def _asked(live, messages) -> bool:
    "Was the model's last prompt exactly `messages` as lmlit renders them?"
    return live.model.prompts[-1] == live.tok.render_for_completion(messages)

def _reply_tokens(live) -> int:
    "The scripted reply in tokens, as generated: its first token, HOSTILE, and <|assistant_end|>."
    return 1 + len(live.tok.encode(HOSTILE)) + 1

def test_content_parts_are_joined(client, live):
    parts = [dict(type='text', text='Hello'), dict(type='text', text='there')]
    done = client.chat.completions.create(model='scripted', messages=[dict(role='user', content=parts)], temperature=0)
    assert done.choices[0].message.content == 'A' + HOSTILE
    assert done.usage.prompt_tokens == _prompt_tokens(live, [dict(role='user', content='Hello\nthere')])
    assert _asked(live, [dict(role='user', content='Hello\nthere')])

def test_developer_role_is_system_and_same_role_turns_merge(client, live, openai):
    messages = [dict(role='developer', content='Be brief.'), dict(role='user', content='Hi'), dict(role='user', content='Who?')]
    done = client.chat.completions.create(model='scripted', messages=messages, temperature=0)
    expected = [dict(role='system', content='Be brief.'), dict(role='user', content='Hi\n\nWho?')]
    assert done.usage.prompt_tokens == _prompt_tokens(live, expected) and _asked(live, expected)
    with pytest.raises(openai.BadRequestError, match='only come first'):     # a system turn later on is not silently moved
        client.chat.completions.create(model='scripted', messages=[dict(role='user', content='Hi'),
                                                                   dict(role='developer', content='Now be rude.')])

def test_max_completion_tokens_and_exact_usage(client, live):
    short = client.chat.completions.create(model='scripted', messages=HELLO, temperature=0, max_completion_tokens=3)
    assert short.choices[0].finish_reason == 'length' and short.usage.completion_tokens == 3
    assert short.usage.total_tokens == short.usage.prompt_tokens + 3
    whole = client.chat.completions.create(model='scripted', messages=HELLO, temperature=0)
    assert whole.usage.completion_tokens == _reply_tokens(live)

def test_stream_include_usage_ends_with_a_usage_chunk(client, live):
    chunks = list(client.chat.completions.create(model='scripted', messages=HELLO, temperature=0, stream=True,
                                                 stream_options=dict(include_usage=True)))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == _reply_tokens(live)
    assert chunks[-1].usage.prompt_tokens == _prompt_tokens(live, HELLO)
    assert ''.join(c.choices[0].delta.content or '' for c in chunks[:-1]) == 'A' + HOSTILE
    plain = list(client.chat.completions.create(model='scripted', messages=HELLO, temperature=0, stream=True))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)

def test_models_list_and_retrieve(client, openai):
    listed = client.models.list().data
    assert [m.id for m in listed] == ['scripted']
    card = client.models.retrieve('scripted')
    assert card.id == 'scripted' and card.owned_by == 'lmlit'
    assert (card.model_extra['stage'], card.model_extra['step'], card.model_extra['context_length']) == ('sft', 12, 512)
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve('gpt-4o')
    assert info.value.code == 'model_not_found' and "'gpt-4o' does not exist" in info.value.body['message']

def test_unknown_model_in_a_request_is_404(client, openai):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model='gpt-4o', messages=HELLO)
    assert info.value.param == 'model' and 'scripted' in info.value.body['message']

def test_api_key_401_without_200_with(client, openai, live):
    assert httpx.get(f"{live.url}/v1/models").status_code == 401
    stranger = openai.OpenAI(base_url=f"{live.url}/v1", api_key='sk-wrong', max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        stranger.chat.completions.create(model='scripted', messages=HELLO)
    assert info.value.code == 'invalid_api_key' and 'Bearer' in info.value.body['message']
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    assert client.chat.completions.create(model='scripted', messages=HELLO, temperature=0).choices[0].message.content == 'A' + HOSTILE
    assert httpx.get(f"{live.url}/health").status_code == 200          # only /v1 needs the key

@pytest.mark.parametrize('ask, status', [
    (lambda c: c.get('/nowhere', cast_to=object), 404),
    (lambda c: c.delete('/models', cast_to=object), 405),
    (lambda c: c.chat.completions.create(model='scripted', messages=[dict(role='user', content='x' * 30_000)]), 413),
    (lambda c: c.post('/chat/completions', cast_to=object, content=b'{"messages": []}',
                      options=dict(headers={'Content-Type': 'text/plain'})), 415),
    (lambda c: c.chat.completions.create(model='scripted', messages=HELLO, tools=[dict(type='function', function=dict(name='f'))]), 400),
    (lambda c: c.chat.completions.create(model='scripted', messages=HELLO, temperature=2.5), 400),
    (lambda c: c.chat.completions.create(model='scripted', messages=HELLO, logprobs=True), 400),
])
def test_every_error_is_an_openai_api_error_with_a_message(client, openai, ask, status):
    with pytest.raises(openai.APIStatusError) as info:
        ask(client)
    error = info.value
    assert isinstance(error, openai.APIError) and error.status_code == status
    assert isinstance(error.body, dict) and error.body['message'] and error.type       # OpenAI's shape, not {"detail": …}

def test_429_is_a_rate_limit_error_with_retry_after(openai):
    engine, model, tok = scripted_engine(delay_s=0.1)        # a reply takes ~3 s
    limits = Limits(max_tokens=400, max_queued_rows=1, max_batch=1)   # one running row: the next request waits
    with LiveServer(make_app(engine, 'slow', limits), limits) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key='x', max_retries=0, timeout=30)
        body = dict(messages=HELLO, stream=True, max_tokens=400, temperature=0)
        with httpx.stream('POST', f"{server.url}/v1/chat/completions", json=body, timeout=30) as running:
            running_lines = running.iter_lines()             # kept: a dropped iterator closes the stream
            next(running_lines)
            while httpx.get(f"{server.url}/health").json()['running'] < 1: time.sleep(0.02)   # the first is generating
            with httpx.stream('POST', f"{server.url}/v1/chat/completions", json=body, timeout=30) as queued:
                queued_lines = queued.iter_lines()
                next(queued_lines)                               # the second waits in the queue (1 row: full)
                with pytest.raises(openai.RateLimitError) as info:
                    client.chat.completions.create(model='slow', messages=HELLO)
        assert int(info.value.response.headers['retry-after']) >= 1 and 'busy' in info.value.body['message']

def test_tool_parts_reach_the_openai_client_and_go_back(openai):
    "The official client keeps `lmlit_parts` (an extra field) in whole and streamed answers; sent back, the model's ids."
    engine, model, tok = tool_engine()
    with LiveServer(make_app(engine, 'scripted')) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key='unused', max_retries=0)
        asked = [dict(role='user', content='Add')]
        message = client.chat.completions.create(model='scripted', messages=asked).choices[0].message
        assert message.content.startswith('Two and three: <<2+3=5>>') and message.model_extra['lmlit_parts'] == TOOL_PARTS
        parts = {}
        for chunk in client.chat.completions.create(model='scripted', messages=asked, stream=True):
            for d in (chunk.choices[0].delta.model_extra or {}).get('lmlit_parts', []) if chunk.choices else []:
                parts.setdefault(d['index'], dict(type=d['type'], text=''))['text'] += d['text']
        assert [parts[k] for k in sorted(parts)] == TOOL_PARTS
        history = asked + [dict(role='assistant', content=TOOL_PARTS), dict(role='user', content='Again')]
        client.chat.completions.create(model='scripted', messages=history)
        at = model.prompts[-1].index(tok.encode_special('<|assistant_start|>')) + 1
        assert model.prompts[-1][at:at + len(model.plan)] == model.plan
