"""The chat page in a real headless Chromium (Debian's, driven by Playwright) against `lmlit serve`'s app on a scripted,
slow engine (a fixed delay per step, so a reply takes seconds and can be stopped, replaced or scrolled mid-stream):
one reply at a time, Stop/Esc, Regenerate/Send/Edit mid-stream, errors as page state, follow-scroll, storage across a
reload, markdown through the vendored libraries, hostile model text inert, focus and labels, dark mode."""
import json, os, time
from importlib import resources
from pathlib import Path
import pytest
import torch
from starlette.staticfiles import StaticFiles
from serve_fixtures import LiveServer, TOOL_PARTS, tool_plan
from lmlit.engine import Engine, ScriptedModel, scripted_step
from lmlit.serve import make_app
from lmlit.tokenizer import get_tokenizer

pytestmark = pytest.mark.timeout(120)
CHROMIUM = '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
SHOTS = Path(os.environ.get('LMLIT_UI_SHOTS', '/work/notes/shots'))     # where screenshots go, when that folder exists

MARKDOWN = """Here is a list:

- first item
- second item

| name | value |
|------|-------|
| pi   | 3.14  |

See [the docs](https://example.com/docs) and
```python
def add(a, b):
    return a + b
```
Hostile: <script>window.pwned=1</script> <img src=x onerror="window.pwned=2"> [click me](javascript:window.pwned=3)
<svg onload="window.pwned=4"><circle r="9"/></svg> done."""
REPLIES = {'long': '\n'.join(f'line {i}' for i in range(300)), 'markdown': MARKDOWN, 'short': 'Alpha beta.',
           'tool': 'Let me add.'}

def slow_engine():
    "A scripted model whose reply is REPLIES[first word of the last user message] (else 'short'; 'calc': tool_plan), one token per step."
    tok = get_tokenizer('shakespeare', vocab_size=512, max_chars=200_000)
    S = tok.encode_special
    start, user_start, user_end = S('<|assistant_start|>'), S('<|user_start|>'), S('<|user_end|>')
    scripts = {key: tok.encode(text) + [S('<|assistant_end|>')] for key, text in REPLIES.items()}
    scripts['calc'] = tool_plan(tok)              # two calculator calls (special tokens), see serve_fixtures
    pace = dict(delay=0.02)
    prompts = []
    def script(tokens):
        time.sleep(pace['delay'])
        k = len(tokens) - tokens[::-1].index(start)
        u = len(tokens) - tokens[::-1].index(user_start)
        asked = tok.decode(tokens[u:tokens.index(user_end, u)]).split()
        reply = scripts.get(asked[0] if asked else '', scripts['short'])
        if len(tokens) == k: prompts.append(list(tokens))     # what the model was asked, as rendered
        logits = torch.full((tok.vocab_size,), -30.0)
        logits[reply[min(len(tokens) - k, len(reply) - 1)]] = 30.0
        return logits
    model = ScriptedModel(script, tok.vocab_size, sequence_len=4096)
    model.prompts = prompts
    return Engine(model, tok, step=scripted_step), model, pace

def with_static(app):
    "The page's vendored libraries under /static (mounted here when the app does not serve them itself yet)."
    if not any(getattr(route, 'path', None) == '/static' for route in app.routes):
        app.mount('/static', StaticFiles(directory=str(resources.files('lmlit') / 'static')), name='static')
    return app

@pytest.fixture(scope='module')
def served():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get('CI'): raise
        pytest.skip("playwright is not installed (CI installs it)")
    if not Path(CHROMIUM).exists():
        if os.environ.get('CI'): raise AssertionError(f"{CHROMIUM} is missing under CI; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    engine, model, pace = slow_engine()
    with LiveServer(with_static(make_app(engine, 'scripted'))) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield dict(server=server, browser=browser, model=model, pace=pace, tok=engine.tokenizer)
        browser.close()

@pytest.fixture
def page(served):
    "A fresh browser context (empty localStorage) on the page; posts and dialogs recorded."
    context = served['browser'].new_context(viewport=dict(width=1100, height=700))
    page = context.new_page()
    page.posts = []
    page.on('request', lambda r: page.posts.append(json.loads(r.post_data)) if r.method == 'POST' else None)
    page.dialogs = []
    page.on('dialog', lambda d: (page.dialogs.append(d.type), d.accept()))
    page.goto(served['server'].url + '/')
    _wait(page, "document.getElementById('status').dataset.state === 'ok'")
    yield page
    context.close()

@pytest.fixture
def fast(served):
    "Replies at full speed, for the tests that do not stop or race a reply."
    served['pace']['delay'] = 0.0
    yield
    served['pace']['delay'] = 0.02

def _wait(page, expression: str, timeout_s: float = 30):
    "Poll `expression` in the page (the page's CSP forbids wait_for_function's eval)."
    deadline = time.time() + timeout_s
    while not page.evaluate(expression):
        assert time.time() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.03)

def _idle(page): _wait(page, "document.body.dataset.idle === '1'")

def _streaming(page, at_least: int = 30):
    "Wait until a reply is streaming and shows at least `at_least` characters."
    _wait(page, f"(document.querySelector('.streaming .body') || {{}}).textContent?.length >= {at_least}")

def _ask(page, text: str):
    page.fill('#input', text)
    page.press('#input', 'Enter')

def _stored(page) -> list:
    "The current conversation as the page stored it."
    return page.evaluate("(() => { const s = JSON.parse(localStorage.getItem('lmlit.chat.v1')); return s.conversations[s.current].messages; })()")

def _steps_stop(model, settle_s: float = 0.5) -> bool:
    "True when the engine takes at most one more step in `settle_s` (its rows were cancelled)."
    before = len(model.calls)
    time.sleep(settle_s)
    return len(model.calls) - before <= 1

def test_stop_and_esc_end_the_reply_and_the_server_stops_stepping(page, served):
    _ask(page, 'long answer please')
    _streaming(page)
    _shoot(page, 'desktop-streaming-stop')
    assert page.inner_text('#send') == 'Stop' and page.get_attribute('#send', 'aria-label') == 'Stop the reply'
    page.click('#send')
    _idle(page)
    assert _steps_stop(served['model'])
    assert page.inner_text('#send') == 'Send'
    kept = _stored(page)
    assert [m['role'] for m in kept] == ['user', 'assistant'] and 0 < len(kept[1]['content']) < len(REPLIES['long']) / 2
    assert 'stopped: by you' in page.inner_text('.msg.assistant .stats')
    _ask(page, 'long again')
    _streaming(page)
    page.keyboard.press('Escape')
    _idle(page)
    assert _steps_stop(served['model'])
    assert len(_stored(page)) == 4

def test_regenerate_send_and_edit_mid_stream_replace_the_reply(page, served):
    model = served['model']
    _ask(page, 'long one')
    _streaming(page)
    page.evaluate("document.querySelector('.streaming').dataset.old = '1'")   # the old reply's element, to tell it apart
    page.click('.streaming .regenerate')                 # regenerate mid-stream: the old reply stops, a new one streams
    # A new element replaces the old one. (Waiting for its body to be empty raced: on a loaded machine the first
    # tokens could land between two polls.)
    _wait(page, "document.querySelectorAll('.streaming').length === 1 && "
                "!document.querySelector('.streaming').dataset.old", 10)
    _streaming(page)                                     # the new reply streams at once: the server let the old one go
    assert page.locator('.msg.assistant').count() == 1 and max(batch for batch, _ in model.calls[-5:]) == 1
    _ask(page, 'short question')                         # send mid-stream: the reply ends, the new question is answered
    _idle(page)
    kept = _stored(page)
    assert [m['role'] for m in kept] == ['user', 'assistant', 'user', 'assistant'] and kept[3]['content'] == 'Alpha beta.'
    assert kept[1]['stats']['finish'] == 'by you' and page.locator('.streaming').count() == 0
    assert len(page.posts) == 3 and [m['role'] for m in page.posts[2]['messages']] == ['user', 'assistant', 'user']
    page.click('.msg.assistant >> nth=1 >> .regenerate')
    _idle(page)
    _ask(page, 'long three')
    _streaming(page)
    page.click('.msg.user >> nth=2 >> .edit')             # edit mid-stream: the reply stops, the question returns to the box
    _idle(page)
    assert _steps_stop(model)
    assert page.input_value('#input') == 'long three' and len(_stored(page)) == 4 and page.locator('.msg').count() == 4

def test_errors_are_page_state_never_history(page, served, fast):
    _ask(page, 'x' * 9000)                               # over the server's per-message limit: a 400 with a message
    _wait(page, "!document.getElementById('alert').hidden")
    alert = page.locator('[role=alert]')
    assert 'characters' in alert.inner_text() and alert.locator('#retry').is_visible()
    assert [m['role'] for m in _stored(page)] == ['user']
    page.click('.msg.user .edit')
    page.route('**/v1/chat/completions', lambda route: route.abort())     # the connection drops
    _ask(page, 'short please')
    _wait(page, "!document.getElementById('alert').hidden")
    _shoot(page, 'desktop-error-retry')
    assert 'connection' in page.inner_text('#alert-text') and [m['role'] for m in _stored(page)] == ['user']
    page.unroute('**/v1/chat/completions')
    page.click('#retry')
    _idle(page)
    _wait(page, "document.getElementById('alert').hidden")
    assert [m['content'] for m in _stored(page)] == ['short please', 'Alpha beta.']
    assert 'connection' not in json.dumps(page.posts[-1]) and 'characters' not in json.dumps(page.posts[-1])

def test_server_down_on_load_is_said(served):
    context = served['browser'].new_context()
    page = context.new_page()
    page.route('**/health', lambda route: route.abort())
    page.goto(served['server'].url + '/')
    _wait(page, "!document.getElementById('alert').hidden")
    assert 'not reachable' in page.inner_text('[role=alert]') and page.get_attribute('#status', 'data-state') == 'down'
    context.close()

def test_the_view_follows_the_stream_unless_the_user_scrolls_up(page, served):
    page.set_viewport_size(dict(width=700, height=420))
    _ask(page, 'long scroll')
    distance = "(() => { const s = document.getElementById('scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight; })()"
    _wait(page, "document.getElementById('scroller').scrollHeight > document.getElementById('scroller').clientHeight + 200")
    assert page.evaluate(distance) < 40                  # following the bottom
    page.mouse.move(350, 250)
    page.mouse.wheel(0, -5000)                           # the user scrolls up to read
    _wait(page, "document.getElementById('scroller').scrollTop === 0", 5)
    grown = page.evaluate("document.getElementById('scroller').scrollHeight")
    _wait(page, f"document.getElementById('scroller').scrollHeight > {grown} + 100")
    assert page.evaluate("document.getElementById('scroller').scrollTop") == 0     # left where they are
    assert page.locator('header').bounding_box()['y'] == 0 and page.locator('#new').is_visible()    # header stays
    page.keyboard.press('Escape')
    _idle(page)
    assert page.evaluate("document.getElementById('scroller').scrollTop") == 0     # no jump at the end

def test_reload_keeps_conversations_settings_and_warns_of_a_draft(page, served, fast):
    page.fill('#temperature', '0.3')
    page.dispatch_event('#temperature', 'change')
    _ask(page, 'short first')
    _idle(page)
    assert page.inner_text('.msg.assistant .stats').endswith('stopped: stop')
    stats = page.inner_text('.msg.assistant .stats')
    assert stats.split(' tokens · ')[0].isdigit() and ' tok/s · ' in stats
    page.reload()
    _idle(page)
    assert page.inner_text('.msg.assistant .body') == 'Alpha beta.' and page.input_value('#temperature') == '0.3'
    page.click('#new')
    assert page.locator('.msg').count() == 0 and page.locator('#chats li').count() == 2
    _ask(page, 'markdown second')
    _idle(page)
    page.click('#chats li >> nth=1 >> .open')           # back to the first conversation
    assert page.inner_text('.msg.user .body') == 'short first'
    page.click('#chats li >> nth=0 >> .delete')         # delete the second (confirmed)
    assert page.dialogs == ['confirm'] and page.locator('#chats li').count() == 1
    warns = ("(() => { const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); "
             "return e.defaultPrevented; })()")
    assert not page.evaluate(warns)                      # nothing unsent: leaving is quiet
    page.fill('#input', 'an unsent draft')
    assert page.evaluate(warns)                          # the browser asks before the draft is lost
    page.reload()
    assert page.input_value('#input') == 'an unsent draft'     # and a reload keeps it anyway

def test_markdown_is_rendered_and_hostile_text_is_inert(page, served, fast):
    page.fill('#maxtokens', '600')
    _ask(page, 'markdown please')
    _idle(page)
    body = page.locator('.msg.assistant .body')
    assert body.locator('ul > li').count() == 2 and body.locator('table td').first.inner_text() == 'pi'
    link = body.locator('a', has_text='the docs')
    assert link.get_attribute('href') == 'https://example.com/docs' and 'noopener' in link.get_attribute('rel')
    code = body.locator('pre > code')
    assert 'language-python' in code.get_attribute('class') and 'hljs' in code.get_attribute('class')
    assert code.locator('span').count() > 0 and code.inner_text().startswith('def add(a, b):')    # highlighted, first line intact
    assert body.locator('pre .copy-code').count() == 1
    text = body.inner_text()
    assert '<script>window.pwned=1</script>' in text and 'onerror="window.pwned=2"' in text and '<svg onload' in text
    assert page.locator('#log script, #log img, #log svg, #log [onerror], #log [onload]').count() == 0
    clicked = body.locator('a', has_text='click me')
    assert clicked.count() == 0 or not (clicked.get_attribute('href') or '').lower().startswith('javascript')
    if clicked.count(): clicked.click()
    time.sleep(0.2)
    assert page.evaluate("window.pwned === undefined") and page.dialogs == []
    _shoot(page, 'desktop-light')
    page.set_viewport_size(dict(width=390, height=800))
    _shoot(page, 'phone-light')

def test_without_the_vendored_libraries_the_page_shows_plain_text(page, served, fast):
    page.route('**/static/vendor/**', lambda route: route.abort())
    page.reload()
    _wait(page, "document.getElementById('status').dataset.state === 'ok'")
    assert page.evaluate("typeof window.marked") == 'undefined'
    page.fill('#maxtokens', '600')
    _ask(page, 'markdown without libraries')
    _idle(page)
    text = page.inner_text('.msg.assistant .body')
    assert '- first item' in text and '<script>window.pwned=1</script>' in text
    assert page.locator('#log script, #log img, #log svg, #log ul, #log a').count() == 0 and page.evaluate("window.pwned === undefined")

def test_focus_labels_and_dark_mode(served, fast):
    context = served['browser'].new_context(color_scheme='dark', viewport=dict(width=1100, height=700))
    page = context.new_page()
    page.goto(served['server'].url + '/')
    _wait(page, "document.getElementById('status').dataset.state === 'ok'")
    assert page.evaluate("document.activeElement.id") == 'input'
    assert page.get_by_label('Message').get_attribute('id') == 'input'
    assert page.get_attribute('#log', 'role') == 'log' and page.get_attribute('#log', 'aria-live') == 'polite'
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == 'rgb(13, 17, 23)'
    _ask(page, 'markdown in the dark')
    _idle(page)
    assert page.evaluate("document.activeElement.id") == 'input'
    assert page.get_attribute('.msg.assistant .regenerate', 'aria-label') == 'Regenerate this reply'
    _shoot(page, 'desktop-dark')
    page.set_viewport_size(dict(width=390, height=800))
    page.click('#chats-toggle')
    _shoot(page, 'phone-dark-chats')
    context.close()

def _tool_blocks(page) -> list:
    return page.evaluate("""[...document.querySelectorAll('.msg.assistant:last-of-type .toolcall')].map((b) => ({
        state: b.dataset.state, expr: b.querySelector('.expr').textContent, result: b.querySelector('.result').textContent,
        label: b.getAttribute('aria-label')}))""")

def test_a_tool_call_is_a_block_and_goes_back_as_the_models_tokens(page, served, fast):
    "The server's part deltas drawn as tool-call blocks (result, no result, unclosed); sent back as parts, the model's ids."
    _ask(page, 'calc please')
    _idle(page)
    assert _tool_blocks(page) == [dict(state='result', expr='2+3', result='= 5', label='tool call'),
                                  dict(state='no-result', expr='abs(', result='no result', label='tool call')]
    body = page.inner_text('.msg.assistant .body')
    assert 'so 5 << 6;' in body and 'gave nothing.' in body and '<<2+3' not in body and '<<abs' not in body
    assert _stored(page)[1]['content'] == TOOL_PARTS
    _shoot(page, 'desktop-tool-calls')
    _ask(page, 'short follow-up')
    _idle(page)
    assert page.posts[-1]['messages'][1]['content'] == TOOL_PARTS
    prompt, plan = served['model'].prompts[-1], tool_plan(served['tok'])
    at = prompt.index(served['tok'].encode_special('<|assistant_start|>')) + 1
    assert prompt[at:at + len(plan)] == plan                   # the turn went back as the tokens the model produced

def test_a_reply_that_ends_inside_a_call_shows_an_unclosed_call(page, served, fast):
    plan, end = tool_plan(served['tok']), served['tok'].encode_special('<|python_end|>')
    inside = [i for i, t in enumerate(plan) if t == end][1]      # max tokens: the reply stops before the 2nd call ends
    page.fill('#maxtokens', str(inside))
    page.dispatch_event('#maxtokens', 'change')
    _ask(page, 'calc but short')
    _idle(page)
    blocks = _tool_blocks(page)
    assert blocks[-1] == dict(state='unclosed', expr='abs(', result='unclosed: the reply ended inside this call',
                              label='unclosed tool call')
    assert not page.inner_text('.msg.assistant .body').rstrip().endswith('<<')       # never a dangling <<
    assert _stored(page)[1]['content'][-1] == dict(type='python', text='abs(', closed=False)

def test_an_api_key_is_asked_for_and_sent(page, served, fast):
    "`lmlit serve --api-key K`: a 401 reveals the key field; the retry carries `Authorization: Bearer K`."
    seen = []
    def guard(route):
        seen.append(route.request.headers.get('authorization'))
        if seen[-1] != 'Bearer sesame':
            route.fulfill(status=401, content_type='application/json',
                          body=json.dumps({'error': {'message': 'Incorrect or missing API key', 'type': 'invalid_request_error'}}))
        else: route.continue_()
    page.route('**/v1/chat/completions', guard)
    _ask(page, 'short with a key')
    _wait(page, "!document.getElementById('alert').hidden")
    assert 'API key' in page.inner_text('[role=alert]') and page.locator('#apikey').is_visible()
    page.fill('#apikey', 'sesame')
    page.dispatch_event('#apikey', 'change')
    page.click('#retry')
    _idle(page)
    assert seen == [None, 'Bearer sesame'] and [m['role'] for m in _stored(page)] == ['user', 'assistant']

def _shoot(page, name: str):
    "A screenshot for the closing note, when the notes folder exists (never inside the repository)."
    if SHOTS.parent.exists():
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f'{name}.png'))

def test_an_inline_script_in_the_page_is_blocked_by_its_policy(served):
    "A `<script>` that got into the page (here: added to the served HTML on its way) does not run; the page's own do."
    context = served['browser'].new_context()
    page = context.new_page()
    refusals = []
    page.on('console', lambda m: refusals.append(m.text) if 'Content Security Policy' in m.text else None)
    def inject(route):
        answer = route.fetch()
        html = answer.text().replace('</body>', '<script>window.inlineRan = 1</script></body>')
        assert 'inlineRan' in html
        route.fulfill(response=answer, body=html)
    page.route(served['server'].url + '/', inject)
    page.goto(served['server'].url + '/')
    _wait(page, "document.getElementById('status').dataset.state === 'ok'")     # chat.js ran: it asked /health
    assert page.evaluate("window.inlineRan") is None
    _wait(page, "true")
    assert any('inline script' in text for text in refusals), refusals
    context.close()

def test_shift_enter_breaks_the_line_enter_sends(page, served, fast):
    page.fill('#input', 'first line')
    page.press('#input', 'Shift+Enter')
    page.type('#input', 'second line')
    assert page.locator('.msg.user').count() == 0                # nothing sent yet
    page.press('#input', 'Enter')
    _idle(page)
    assert _stored(page)[0]['content'] == 'first line\nsecond line'
