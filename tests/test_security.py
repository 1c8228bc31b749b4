"""Issue 19 §2, attacked as an attacker would: each case is a program that tries to do harm, and a check, made from
outside the sandbox, that the harm did not happen. The cases run in three settings, each in a subprocess that imports a
copy of lmlit/sandbox.py: as root, as an unprivileged user (uid 65534 through `setpriv`; the copy lies in a 0755
folder it can read), and where user namespaces are unavailable (`max_user_namespaces=0` set inside a namespace of its
own), where the sandbox must refuse and run nothing. Run this file as a script (`--drive`) to print one setting's
results as JSON."""
import os, sys, json, time, shutil, signal, socket, secrets, tempfile, subprocess
from pathlib import Path
try: import pytest                           # the driver runs under a system python3 that may lack it
except ImportError: pytest = None

if pytest: pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the attack driver
def _attack_cases(work: Path):
    "(name, program, check) triples; `check(result)` returns '' when contained, else what went wrong."
    from lmlit.sandbox import run_sandboxed
    victim = work/'precious.txt'
    victim.write_text('keep me')
    victim.chmod(0o644)
    secret_file = work/'id_ed25519'
    secret_file.write_text('SECRET-KEY-material')
    secret_file.chmod(0o600)
    marker = f'{secrets.randbelow(10**6) + 10**6}.{secrets.randbelow(10**6)}'

    def victim_kept(r): return '' if victim.exists() and victim.read_text() == 'keep me' else f'victim gone ({r.status})'
    def secret_kept(r): return 'secret read' if 'SECRET-KEY' in r.stdout + r.stderr else ''

    sleeper = subprocess.Popen(['sleep', '120'])
    got_signal = []
    signal.signal(signal.SIGUSR1, lambda *a: got_signal.append(1))
    def nobody_signalled(r):
        time.sleep(0.1)
        if sleeper.poll() is not None: return 'a process of the user outside was killed'
        return 'the parent got a signal' if got_signal else ''

    unix_dir = Path(tempfile.mkdtemp(prefix='lmlit-sock-', dir=work))
    unix_path = str(unix_dir/'docker.sock')
    unix_server = socket.socket(socket.AF_UNIX)
    unix_server.bind(unix_path)
    os.chmod(unix_path, 0o666)
    unix_server.listen(4)
    unix_server.settimeout(0.3)
    abstract_name = f'\0lmlit-{marker}'
    abstract_server = socket.socket(socket.AF_UNIX)
    abstract_server.bind(abstract_name)
    abstract_server.listen(4)
    abstract_server.settimeout(0.3)
    tcp_server = socket.socket()
    tcp_server.bind(('127.0.0.1', 0))
    tcp_server.listen(4)
    tcp_server.settimeout(0.3)
    port = tcp_server.getsockname()[1]
    def nobody_knocked(*servers):
        def check(r):
            for server in servers:
                try:
                    server.accept()
                    return f'a connection reached the {server.family.name} listener'
                except (socket.timeout, BlockingIOError): pass
            return ''
        return check

    os.environ['LMLIT_ATTACK_SECRET'] = 'hunter2-in-the-env'
    def env_kept(r): return 'parent env or memory read' if 'hunter2' in r.stdout + r.stderr else ''

    def no_marker_process(r):
        time.sleep(0.2)
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try: cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
            except OSError: continue
            if marker.encode() in cmdline and b'python' not in cmdline and b'bwrap' not in cmdline:
                os.kill(int(pid), signal.SIGKILL)
                return f'a grandchild outlived the sandbox (pid {pid})'
        return ''

    tmp_names = [f'/tmp/lmlit-attack-{marker}', f'/var/tmp/lmlit-attack-{marker}', f'/dev/shm/lmlit-attack-{marker}']
    def no_tmp_left(r):
        left = [p for p in tmp_names if os.path.exists(p)]
        for p in left: os.remove(p)
        return f'files persisted: {left}' if left else ''

    def disk_contained(r):
        if 'No space left' not in r.stderr and 'File too large' not in r.stderr: return f'the disk filled without an error ({r.status})'
        written = [int(x) for x in r.stdout.split()]
        return f'{written[-1]} MB written' if written and written[-1] > 80 else ''

    def memory_contained(r):
        held = r.stdout.split().count('held')
        return f'{held} children each held 150 MB under a 256 MB limit' if held > 2 else ''

    def forks_contained(r):
        forks = int(r.stdout.split()[0]) if r.stdout.split() else 0
        return f'{forks} forks succeeded under a 16-process limit' if forks >= 16 else ''

    hold_memory = """
import os, time
for i in range(4):
    if os.fork() == 0:
        block = bytearray(150 << 20)
        for k in range(0, len(block), 4096): block[k] = 1
        print('held', flush=True)
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"""
    fork_storm = """
import os, time
n = 0
for i in range(200):                      # bounded here, whatever the sandbox does
    try: pid = os.fork()
    except OSError: break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n, flush=True)
"""
    grandchild = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0: os.execv('/bin/sleep', ['sleep', '{marker}'])
    os._exit(0)
time.sleep(0.3)
print('spawned', flush=True)
"""
    return [
        ('unlink via posix', f"import posix\nposix.unlink({str(victim)!r})", victim_kept),
        ('truncate via open', f"open({str(victim)!r}, 'w').close()", victim_kept),
        ('read a 0600 file of the user', f"print(open({str(secret_file)!r}).read())", secret_kept),
        ('SIGKILL the parent and other processes',
         f"import posix, signal\nfor pid in ({sleeper.pid}, {os.getpid()}):\n    try: posix.kill(pid, signal.SIGKILL if pid == {sleeper.pid} "
         f"else signal.SIGUSR1)\n    except OSError as e: print(e)\nposix.kill(-1, signal.SIGKILL)", nobody_signalled),
        ('Unix sockets (path and abstract)',
         f"import _socket\nfor name in ({unix_path!r}, {abstract_name!r}):\n    s = _socket.socket(_socket.AF_UNIX)\n"
         f"    try: s.connect(name); print('connected')\n    except OSError as e: print(e)", nobody_knocked(unix_server, abstract_server)),
        ('TCP connect', f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))", nobody_knocked(tcp_server)),
        ('read parent memory and env',
         f"import os\nprint(os.environ.get('LMLIT_ATTACK_SECRET'))\nfor pid in ({os.getpid()}, os.getppid(), 1):\n"
         f"    for part in ('environ', 'mem', 'cmdline'):\n        try: print(open(f'/proc/{{pid}}/{{part}}', 'rb').read(4096))\n"
         f"        except OSError as e: print(e)\n"
         f"for pid in filter(str.isdigit, os.listdir('/proc')):\n    try: print(open(f'/proc/{{pid}}/environ', 'rb').read())\n"
         f"    except OSError: pass", env_kept),
        ('setsid grandchild outliving the limit (program exits)', grandchild, no_marker_process),
        ('setsid grandchild outliving the limit (program times out)', grandchild + "time.sleep(60)\n", no_marker_process),
        ('writes to /tmp, /var/tmp, /dev/shm persisting',
         f"for p in {tmp_names!r}:\n    try: open(p, 'w').write('x')\n    except OSError as e: print(e)", no_tmp_left),
        ('disk fill', "import os\nn = 0\nwhile n < 400:\n    with open(f'fill{n}', 'wb') as f: f.write(os.urandom(1 << 20) * 1)\n"
                      "    n += 1\n    print(n, flush=True)", disk_contained),
        ('memory via several children', hold_memory, memory_contained),
        ('fork storm', fork_storm, forks_contained),
    ], run_sandboxed, [sleeper, unix_server, abstract_server, tcp_server]


def drive(unsafe: bool = False, only: str | None = None) -> dict:
    "Run every case; {case: {'contained': bool, 'detail': str, 'status': str}} or {'refused': message}."
    from lmlit.core import LmlitError
    from lmlit.sandbox import sandbox_layers, run_sandboxed
    work = Path(tempfile.mkdtemp(prefix='lmlit-attack-'))
    work.chmod(0o755)
    out = dict(uid=os.getuid(), layers=sandbox_layers())
    try:
        try: run_sandboxed("print('ran')", unsafe=unsafe)
        except LmlitError as e:
            out['refused'] = str(e)
            return out
        cases, run, to_close = _attack_cases(work)
        try:
            for name, program, check in cases:
                if unsafe and name != 'unlink via posix': continue    # unsandboxed, kill(-1) would reach every process of the user
                if only and name != only: continue
                r = run(program, timeout_s=3, memory_mb=256, max_procs=16, disk_mb=32, unsafe=unsafe)
                detail = check(r)
                out[name] = dict(contained=not detail, detail=detail, status=r.status, isolated=r.isolated)
        finally:
            for thing in to_close: thing.kill() if hasattr(thing, 'kill') else thing.close()
    finally: shutil.rmtree(work, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- the settings
def _copy_package(dest: Path) -> Path:
    "lmlit/sandbox.py, this file and a one-class lmlit.core in a folder anyone can read (uid 65534 cannot enter /root)."
    (dest/'lmlit').mkdir(parents=True)
    shutil.copy(REPO/'lmlit'/'sandbox.py', dest/'lmlit'/'sandbox.py')
    (dest/'lmlit'/'__init__.py').write_text('')
    (dest/'lmlit'/'core.py').write_text('class LmlitError(Exception): pass\n')
    shutil.copy(__file__, dest/'drive.py')
    for p in [dest, *dest.rglob('*')]: p.chmod(0o755)
    return dest


def _system_python() -> str:
    for candidate in ('/usr/bin/python3', '/usr/local/bin/python3'):
        if os.path.exists(candidate): return candidate
    pytest.skip('no system python3 that uid 65534 can run')


SETTINGS = {
    'root': lambda py, drv: [py, drv, '--drive'],
    'nobody': lambda py, drv: ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups', py, drv, '--drive'],
    'no-userns': lambda py, drv: ['unshare', '--user', '--map-root-user', '--fork', 'sh', '-c',
                                  f'echo 0 > /proc/sys/user/max_user_namespaces && exec {py} {drv} --drive'],
    'no-userns-unsafe': lambda py, drv: ['unshare', '--user', '--map-root-user', '--fork', 'sh', '-c',
                                         f'echo 0 > /proc/sys/user/max_user_namespaces && exec {py} {drv} --drive --unsafe'],
}


_RESULTS = {}

def results(setting: str) -> dict:
    "One driver run per setting, shared by that setting's tests."
    if setting in _RESULTS: return _RESULTS[setting]
    if os.geteuid() != 0: pytest.skip('the settings switch users: run the suite as root (CI does)')
    if not shutil.which('bwrap'): pytest.fail('bwrap missing: apt-get install bubblewrap (the sandbox would refuse to run)')
    folder = _copy_package(Path(tempfile.mkdtemp(prefix='lmlit-sec-')))
    try:
        env = {'PATH': '/usr/bin:/bin', 'LANG': 'C.UTF-8', 'PYTHONPATH': str(folder), 'HOME': str(folder)}
        proc = subprocess.run(SETTINGS[setting](_system_python(), str(folder/'drive.py')), capture_output=True, text=True,
                              env=env, cwd=folder, timeout=200)
    finally: shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _RESULTS[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _RESULTS[setting]


CASES = ['unlink via posix', 'truncate via open', 'read a 0600 file of the user', 'SIGKILL the parent and other processes',
         'Unix sockets (path and abstract)', 'TCP connect', 'read parent memory and env',
         'setsid grandchild outliving the limit (program exits)', 'setsid grandchild outliving the limit (program times out)',
         'writes to /tmp, /var/tmp, /dev/shm persisting', 'disk fill', 'memory via several children', 'fork storm']


def _parametrize(*args):
    return pytest.mark.parametrize(*args) if pytest else (lambda f: f)


@_parametrize('case', CASES)
@_parametrize('setting', ['root', 'nobody'])
def test_attack_is_contained(setting, case):
    res = results(setting)
    assert 'refused' not in res, f"the sandbox refused as {setting}: {res['refused']}"
    assert res['uid'] == (0 if setting == 'root' else 65534)
    assert res[case]['isolated'], res[case]
    assert res[case]['contained'], f"{setting}: {case}: {res[case]['detail']}"


def test_without_user_namespaces_the_sandbox_refuses_and_names_the_layers():
    res = results('no-userns')
    assert 'refused' in res, "the sandbox ran model code without user namespaces"
    assert 'user namespace' in res['refused'] and '--unsafe-sandbox' in res['refused'], res['refused']
    assert res['layers']['user namespace'] != 'yes'
    assert len(res) == 3, "an attack ran although the sandbox refused"


def test_unsafe_mode_runs_and_says_it_is_not_isolated():
    "With --unsafe-sandbox it runs (RLIMITs only) and every result says so; the filesystem attacks then succeed."
    res = results('no-userns-unsafe')
    assert 'refused' not in res
    assert not res['unlink via posix']['isolated']
    assert not res['unlink via posix']['contained']        # what the refusal protects from


if __name__ == '__main__' and '--drive' in sys.argv:
    only = sys.argv[sys.argv.index('--case') + 1] if '--case' in sys.argv else None
    print(json.dumps(drive(unsafe='--unsafe' in sys.argv, only=only)))
