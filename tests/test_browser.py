"The chat page in a real headless Chromium (Debian's, driven by Playwright): send, watch the reply stream, regenerate, edit; hostile model text stays text."
import os, shutil, tempfile, time
from pathlib import Path
import pytest
from serve_fixtures import scripted_engine, LiveServer, HOSTILE
from lmlit.serve import make_app

pytestmark = pytest.mark.timeout(240)
CHROMIUM = '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
SCREENSHOT = os.environ.get('LMLIT_UI_SCREENSHOT')    # where to save a picture of the page, if set

def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get('CI'): raise
        pytest.skip("playwright is not installed (CI installs it)")
    if not Path(CHROMIUM).exists():
        if os.environ.get('CI'): raise AssertionError(f"{CHROMIUM} is missing under CI; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    return sync_playwright

def _wait(page, expression: str, timeout_s: float = 60):
    "Poll `expression` in the page (the page's CSP forbids wait_for_function's eval)."
    deadline = time.time() + timeout_s
    while not page.evaluate(expression):
        assert time.time() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)

def test_chat_page_streams_regenerates_edits_and_shows_html_as_text(tmp_path):
    sync_playwright = _playwright()
    engine, model, tok = scripted_engine(delay_s=0.03)
    with LiveServer(make_app(engine, 'scripted')) as server, sync_playwright() as p:
        profile = tempfile.mkdtemp(dir=tmp_path)
        browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,   # a fresh profile
                                                       viewport=dict(width=1000, height=640))
        page = browser.new_page()
        posts = []
        page.on('request', lambda r: posts.append(r.url) if r.method == 'POST' else None)
        dialogs = []
        page.on('dialog', lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server.url + '/')
        page.fill('#input', 'Hello there, who are you?')
        page.press('#input', 'Enter')
        reply = page.locator('.msg.assistant .body').last
        lengths = []
        deadline = time.time() + 60
        while page.evaluate("document.body.dataset.idle") != '1':
            lengths.append(len(reply.inner_text()))
            assert time.time() < deadline, "the reply never finished"
            time.sleep(0.05)
        partial = sorted({n for n in lengths if n > 0})
        assert len(partial) >= 3, f"the reply did not stream (lengths seen: {partial})"
        shown = reply.inner_text()
        assert '<script>window.pwned=1</script>' in shown and '<img src=x onerror="window.pwned=2">' in shown
        assert page.locator('#log script').count() == 0 and page.locator('#log img').count() == 0
        assert page.evaluate("window.pwned === undefined") and not dialogs
        assert page.locator('#log strong').inner_text() == 'bold' and page.locator('#log code').inner_text() == 'code'
        first = shown
        # regenerate: the reply is asked for again and streamed anew in the same place
        page.click('.msg.assistant .regenerate')
        _wait(page, "document.body.dataset.idle === '1'")
        assert len(posts) == 2 and page.locator('.msg.assistant').count() == 1
        assert page.locator('.msg.assistant .body').inner_text().endswith(first[1:].strip()[-20:])
        # edit and resend: the question goes back to the box, the old turn is gone, the new one is answered
        page.click('.msg.user .edit')
        assert page.input_value('#input') == 'Hello there, who are you?' and page.locator('.msg').count() == 0
        page.fill('#input', 'Who are you, then?')
        page.press('#input', 'Enter')
        _wait(page, "document.body.dataset.idle === '1'")
        assert page.locator('.msg.user .body').inner_text() == 'Who are you, then?' and len(posts) == 3
        page.fill('#input', 'A second question')
        page.press('#input', 'Enter')
        _wait(page, "document.body.dataset.idle === '1' && document.querySelectorAll('.msg').length === 4")
        page.screenshot(path=str(tmp_path/'ui.png'))
        if SCREENSHOT: shutil.copy(tmp_path/'ui.png', SCREENSHOT)
        page.click('#new')
        assert page.locator('.msg').count() == 0
        browser.close()
