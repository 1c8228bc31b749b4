"""The sandbox that runs model-written code (lmlit.sandbox): limits, output, stdin, the per-run token that makes a pass
mean "check() returned", and failing closed when a layer is missing. The attacks (files, signals, sockets, /proc,
escaping grandchildren, /tmp, disk, memory, forks), as root and as an unprivileged user, are in tests/test_security.py."""
import os, sys
import pytest
import lmlit.sandbox as sandbox
from lmlit.core import LmlitError
from lmlit.sandbox import run_sandboxed, sandbox_layers, require_sandbox

pytestmark = pytest.mark.timeout(60)


def test_a_program_runs_and_fails_as_it_should():
    ok = run_sandboxed("print(sum(range(10)))")
    bad = run_sandboxed("assert 1 + 1 == 3")
    assert (ok.status, ok.stdout, ok.isolated, ok.missing) == ('ok', '45\n', True, {}), ok
    assert bad.status == 'error' and 'AssertionError' in bad.stderr, bad


def test_infinite_loop_stops_at_its_time_limit():
    r = run_sandboxed("while True: pass", timeout_s=1)
    assert r.status == 'timeout' and r.seconds < 3, r


def test_4gb_allocation_meets_the_memory_limit():
    r = run_sandboxed("x = bytearray(4 << 30)\nprint('allocated')", memory_mb=512)
    assert r.status == 'memory' and 'allocated' not in r.stdout, r


def test_huge_output_is_capped():
    r = run_sandboxed("while True: print('x' * 10_000)", max_output=200_000, timeout_s=5)
    assert r.status == 'output_limit' and len(r.stdout) <= 200_000 and r.seconds < 4, (r.status, len(r.stdout))


def test_reading_stdin_gets_end_of_file_at_once():
    read_end, write_end = os.pipe()                 # the parent's stdin holds data: the program must not see it
    os.write(write_end, b'parent input\n')
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    os.close(read_end)
    try: r = run_sandboxed("import sys\ndata = sys.stdin.read()\nprint(repr(data))\ninput()", timeout_s=5)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    assert r.stdout.strip() == "''" and 'EOFError' in r.stderr and r.seconds < 4, r


SOLVED = "def add(a, b):\n    return a + b\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n\n{early}check(add)\n"

@pytest.mark.parametrize('early', ["import os\nos._exit(0)\n", "raise SystemExit(0)\n", "import sys\nsys.exit(0)\n",
                                   "import os, secrets\nfor fd in range(3, 64):\n    try: os.write(fd, secrets.token_hex(16).encode())\n"
                                   "    except OSError: pass\nos._exit(0)\n",
                                   "print('0' * 32)\nimport os\nos._exit(0)\n"],
                         ids=['os._exit', 'SystemExit', 'sys.exit', 'guessed-token-on-every-fd', 'printed-token'])
def test_exiting_before_check_returns_is_not_a_pass(early):
    "HumanEval forgery: a program that leaves with status 0 before check() returns must not pass."
    wrong = SOLVED.replace('return a + b', 'return 0').replace('{early}', early)
    r = run_sandboxed(wrong)
    assert r.returncode == 0 and r.status == 'early_exit' and not r.passed, r
    right = run_sandboxed(SOLVED.replace('{early}', ''))
    assert right.passed, right


def test_the_always_equal_object_still_passes():
    "The documented limit: check() runs in the candidate's own process, so an object equal to everything passes."
    cheat = "class Yes:\n    def __eq__(self, other): return True\n\ndef add(a, b):\n    return Yes()\n\n" \
            "def check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n"
    assert run_sandboxed(cheat).passed


def test_a_missing_layer_refuses_unless_unsafe(monkeypatch):
    monkeypatch.setattr(sandbox, 'sandbox_layers', lambda: {**sandbox_layers(), 'network namespace': 'no (test)'})
    with pytest.raises(LmlitError, match=r'network namespace.*--unsafe-sandbox'):
        run_sandboxed("print('ran')")
    r = run_sandboxed("print('ran')", unsafe=True)
    assert r.passed and not r.isolated and r.missing == {'network namespace': 'no (test)'}, r


def test_without_bwrap_every_namespace_layer_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, 'which', lambda name: None)
    sandbox.sandbox_layers.cache_clear()
    try:
        layers = sandbox.sandbox_layers()
        assert all('bubblewrap' in layers[name] for name in sandbox.REQUIRED), layers
        with pytest.raises(LmlitError, match='bwrap not found'): require_sandbox()
    finally: sandbox.sandbox_layers.cache_clear()


def test_limits_too_small_are_refused_before_running():
    with pytest.raises(LmlitError, match='memory_mb=10'): run_sandboxed("print(1)", memory_mb=10)


def test_chat_eval_fails_closed_and_its_table_names_the_missing_layers(monkeypatch):
    from lmlit.chat_eval import run_chat_eval, load_items, user_text, scripted_generator, CHAT_TASKS
    from lmlit.tokenizer import Tokenizer
    tok = Tokenizer({bytes([i]): i for i in range(256)})
    item = load_items('humaneval')[0][0]
    answer = {user_text(CHAT_TASKS['humaneval'], item): item['canonical_solution']}
    generate = scripted_generator(tok, lambda q: answer.get(q, '    return None\n'))
    monkeypatch.setattr(sandbox, 'sandbox_layers', lambda: {**sandbox_layers(), 'pid namespace': 'no (test)'})
    refused = run_chat_eval(None, tok, ['humaneval'], generate, progress=False, max_per_task=1, max_tokens=dict(humaneval=8192))
    assert 'humaneval' not in refused.tasks and 'pid namespace' in refused.missing['humaneval'], refused.missing
    assert '--unsafe-sandbox' in refused.table()
    unsafe = run_chat_eval(None, tok, ['humaneval'], generate, progress=False, max_per_task=1, max_tokens=dict(humaneval=8192),
                           sandbox_kw=dict(unsafe=True))
    assert 'UNSAFE sandbox' in unsafe.table() and 'pid namespace' in unsafe.table(), unsafe.table()
    assert any('UNSAFE' in line for line in unsafe.notes())
