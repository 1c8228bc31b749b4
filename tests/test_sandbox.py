"""The sandbox that runs model-written code (lmlit.sandbox): each attack stays inside its limits and
leaves the machine as it was. Forks are bounded in the programs themselves (at most 50), so even a
broken sandbox cannot take the machine down; the tests run as root, where RLIMIT_NPROC alone would not
apply — the fresh uid is what makes it apply."""
import os, sys, time, signal, socket, threading, tempfile, shutil
from pathlib import Path
import pytest
from lmlit.sandbox import run_sandboxed

pytestmark = pytest.mark.timeout(60)
ROOT = os.geteuid() == 0


def _alive(pid: int) -> bool:
    "True while `pid` exists and is not a zombie."
    try: state = [l for l in open(f'/proc/{pid}/status') if l.startswith('State:')][0].split()[1]
    except (OSError, IndexError): return False
    return state not in 'ZX'


def test_infinite_loop_stops_at_its_time_limit():
    r = run_sandboxed("while True: pass", timeout_s=1)
    assert r.status == 'timeout' and r.seconds < 3, r


FORKS = """
import os, time
pids = []
for i in range(50):                      # bounded here, whatever the sandbox does
    try: pid = os.fork()
    except OSError: break
    if pid == 0:
        while True: time.sleep(0.05)
    pids.append(pid)
print(len(pids), *pids, flush=True)
while True: time.sleep(0.05)
"""

@pytest.mark.skipif(not ROOT, reason="the process limit binds only a fresh uid, which needs root")
def test_fork_loop_is_capped_and_every_child_killed():
    r = run_sandboxed(FORKS, timeout_s=2, max_procs=8)
    n, *pids = map(int, r.stdout.split())
    assert r.status == 'timeout'
    assert n < 8, f"{n} forks succeeded under a limit of 8 processes"
    assert pids and not any(_alive(p) for p in pids), [p for p in pids if _alive(p)]


def test_4gb_allocation_meets_the_memory_limit():
    r = run_sandboxed("x = bytearray(4 << 30)\nprint('allocated')", memory_mb=512)
    assert r.status == 'memory' and 'allocated' not in r.stdout, r


@pytest.mark.skipif(not ROOT, reason="file ownership protects the file only under a fresh uid")
def test_cannot_delete_a_file_outside_its_folder():
    folder = Path(tempfile.mkdtemp(prefix='lmlit-victim-')); folder.chmod(0o755)
    victim = folder/'precious.txt'; victim.write_text('keep me'); victim.chmod(0o644)
    try:
        r = run_sandboxed(f"import os, shutil\nprint(open({str(victim)!r}).read())\nos.remove({str(victim)!r})\n"
                          f"shutil.rmtree({str(folder)!r})")
        assert r.stdout.strip() == 'keep me'          # it could see the file: only the deletion was refused
        assert r.status == 'error' and 'PermissionError' in r.stderr, r
        assert victim.read_text() == 'keep me'
    finally: shutil.rmtree(folder)


def test_cannot_read_a_secret_from_the_parents_environment(monkeypatch):
    monkeypatch.setenv('LMLIT_TEST_SECRET', 'hunter2-do-not-leak')
    r = run_sandboxed("import os\nprint(os.environ.get('LMLIT_TEST_SECRET'))\nprint(sorted(os.environ))\n"
                      "print(open(f'/proc/{os.getppid()}/environ', 'rb').read())")
    assert 'hunter2' not in r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == 'None'
    if ROOT: assert 'PermissionError' in r.stderr         # the parent's /proc environ belongs to another uid


def test_cannot_connect_to_a_local_port():
    listener = socket.socket(); listener.bind(('127.0.0.1', 0)); listener.listen(1); listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        r = run_sandboxed(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
        assert 'connected' not in r.stdout and r.status == 'error', r
        with pytest.raises(socket.timeout): listener.accept()     # nobody knocked
    finally: listener.close()


def test_reading_stdin_gets_end_of_file_at_once():
    read_end, write_end = os.pipe()                 # the parent's stdin holds data: the program must not see it
    os.write(write_end, b'parent input\n'); os.close(write_end)
    saved = os.dup(0); os.dup2(read_end, 0); os.close(read_end)
    try: r = run_sandboxed("import sys\ndata = sys.stdin.read()\nprint(repr(data))\ninput()", timeout_s=5)
    finally: os.dup2(saved, 0); os.close(saved)
    assert r.stdout.strip() == "''" and 'EOFError' in r.stderr and r.seconds < 4, r


def test_cannot_signal_its_parent():
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(1))   # the same permission check as SIGKILL, but survivable
    try:
        r = run_sandboxed("import os, signal\nos.kill(os.getppid(), signal.SIGUSR1)\nprint('sent')")
        time.sleep(0.2)
        assert not got, "the sandboxed program signalled its parent"
        assert r.status == 'error' and 'sent' not in r.stdout, r
    finally: signal.signal(signal.SIGUSR1, old)


def test_huge_output_is_capped():
    r = run_sandboxed("while True: print('x' * 10_000)", max_output=200_000, timeout_s=5)
    assert r.status == 'output_limit' and len(r.stdout) <= 200_000 and r.seconds < 4, (r.status, len(r.stdout))


ESCAPE = """
import os, time
pid = os.fork()
if pid == 0:
    os.setsid()                           # leave the process group
    if os.fork() == 0:
        time.sleep(1000); os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
print(*[p for p in map(int, filter(str.isdigit, os.listdir('/proc'))) if p != os.getpid()
        and open(f'/proc/{p}/status').read().count(f'Uid:\\t{os.getuid()}\\t')], flush=True)
{tail}
"""

@pytest.mark.skipif(not ROOT, reason="a grandchild that left the session is found by its uid, which needs root")
@pytest.mark.parametrize('tail', ['', 'time.sleep(1000)'], ids=['program-exits', 'program-times-out'])
def test_no_process_outlives_the_time_limit(tail):
    r = run_sandboxed(ESCAPE.replace('{tail}', tail), timeout_s=2)
    pids = [int(p) for p in r.stdout.split()]
    assert pids, f"the escaped grandchild was not started: {r}"
    assert r.status == ('ok' if not tail else 'timeout'), r
    assert not any(_alive(p) for p in pids), f"still running after the sandbox returned: {pids}"


def test_without_a_fresh_uid_python_guards_stand_in():
    r = run_sandboxed("import os\nos.kill(os.getpid(), 0)", isolate=False)
    assert r.status == 'error' and 'NoneType' in r.stderr and not r.isolated, r
