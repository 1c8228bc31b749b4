"The launcher is generic over the stage notebook: a tiny notebook on two ranks under torchrun, and a failing rank ending the job."
import json, os, sys, time, signal, socket, subprocess, textwrap
from pathlib import Path
import pytest
from conftest import ROOT, child_env, free_port

PY = sys.executable

def _notebook(path: Path, body: str) -> Path:
    cells = [dict(cell_type='code', id='p0', metadata=dict(tags=['parameters']), outputs=[], execution_count=None,
                  source="value = 1\nout = '.'\nfail_rank = -1"),
             dict(cell_type='code', id='b0', metadata={}, outputs=[], execution_count=None, source=body)]
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3'),
                                         language_info=dict(name='python')), nbformat=4, nbformat_minor=5)
    path.write_text(json.dumps(nb)); return path

BODY = textwrap.dedent("""
    import os, json, pathlib, torch, torch.distributed as dist
    from lmlit.core import dist_setup, dist_teardown
    info = dist_setup('cpu')
    if info.rank == fail_rank: raise RuntimeError(f'rank {info.rank} fails on purpose')
    t = torch.tensor([float(value * (info.rank + 1))]); dist.all_reduce(t)
    pathlib.Path(out, f'rank{info.rank}.json').write_text(json.dumps(dict(rank=info.rank, world=info.world_size, total=t.item())))
    dist_teardown()""")

def _launch(tmp_path, **params):
    code = (f"import sys; from lmlit.launch import launch; "
            f"sys.exit(launch({str(tmp_path/'tiny.ipynb')!r}, {params!r}, {str(tmp_path/'notebooks')!r}, nproc=2))")
    return subprocess.run([PY, '-c', code], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=240)

@pytest.mark.timeout(260)
def test_tiny_notebook_on_two_ranks(tmp_path):
    _notebook(tmp_path/'tiny.ipynb', BODY)
    r = _launch(tmp_path, value=5, out=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    got = [json.loads((tmp_path/f'rank{i}.json').read_text()) for i in (0, 1)]
    assert got == [dict(rank=i, world=2, total=5.0 * 1 + 5.0 * 2) for i in (0, 1)]     # the ranks met in a collective
    for i in (0, 1): assert (tmp_path/'notebooks'/f'tiny.rank{i}.ipynb').exists()     # each rank's executed notebook kept

@pytest.mark.timeout(260)
def test_a_failing_rank_ends_the_job(tmp_path):
    _notebook(tmp_path/'tiny.ipynb', BODY)
    r = _launch(tmp_path, value=5, out=str(tmp_path), fail_rank=1)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'rank 1 failed' in r.stderr and 'fails on purpose' in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'rank0.json').exists()       # rank 0 never got past the collective its peer left
    left = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                if 'ipykernel' in open(f'/proc/{d}/cmdline', 'rb').read().decode(errors='replace') and \
                   os.path.realpath(f'/proc/{d}/cwd') == os.path.realpath(tmp_path): left.append(d)
            except OSError: pass
    assert not left, f"kernels left running: {left}"

# ---------------------------------------------------------------------------------------------------------------------
# One job per run folder; nothing outlives the launcher; one notebook per rank per segment; two "nodes" (issues 18, 19)

LMLIT = [PY, '-c', 'import sys; from lmlit.cli import main; sys.exit(main())']   # the `lmlit` console script
QUICK = ['-p', 'eval_every', '-1', '-p', 'sample_every', '0', '-p', 'plots', 'false']
SLEEPY = textwrap.dedent("""
    import os, pathlib, time
    pathlib.Path(out, f"pid{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    for _ in range(int(seconds * 10)): time.sleep(0.1)""")

def _sleepy(tmp_path, seconds=60):
    cells = [dict(cell_type='code', id='p0', metadata=dict(tags=['parameters']), outputs=[], execution_count=None,
                  source="out = '.'\nseconds = 1"),
             dict(cell_type='code', id='b0', metadata={}, outputs=[], execution_count=None, source=SLEEPY)]
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3'),
                                         language_info=dict(name='python')), nbformat=4, nbformat_minor=5)
    (tmp_path/'sleepy.ipynb').write_text(json.dumps(nb))
    code = (f"import sys; from lmlit.launch import launch; from lmlit.core import LmlitError\n"
            f"try: sys.exit(launch({str(tmp_path/'sleepy.ipynb')!r}, dict(out={str(tmp_path)!r}, seconds={seconds}), "
            f"{str(tmp_path/'stage'/'notebooks')!r}, nproc=NPROC))\n"
            f"except LmlitError as e: print(e, file=sys.stderr); sys.exit(2)")
    return code

def _alive(pid: int) -> bool:
    try: state = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]
    except OSError: return False
    return state != 'Z'

def _ours(tmp_path) -> list[str]:
    "Processes still running that this test started: rank workers (their out folder is in tmp_path) and kernels (cwd tmp_path)."
    left = []
    for d in os.listdir('/proc'):
        if not d.isdigit() or not _alive(int(d)): continue
        try:
            cmd = open(f'/proc/{d}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace')
            cwd = os.path.realpath(f'/proc/{d}/cwd')
        except OSError: continue
        if ('--rank-worker' in cmd and str(tmp_path) in cmd) or ('ipykernel' in cmd and cwd == os.path.realpath(tmp_path)):
            left.append(f"{d}: {cmd[:120]}")
    return left

def _kill_ours(tmp_path) -> list[str]:
    "Kill what `_ours` finds (so a red test leaves nothing running) and return what it found."
    left = _ours(tmp_path)
    for entry in left:
        try: os.kill(int(entry.split(':')[0]), signal.SIGKILL)
        except ProcessLookupError: pass
    return left

def _wait_for(path: Path, timeout: float, proc=None):
    t0 = time.time()
    while not path.exists():
        if proc is not None and proc.poll() is not None: raise AssertionError(f"launcher ended early: {proc.communicate()}")
        assert time.time() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)

@pytest.mark.timeout(200)
def test_second_job_on_a_run_folder_is_refused_naming_the_holder(tmp_path):
    code = _sleepy(tmp_path, seconds=60).replace('NPROC', '1')
    first = subprocess.Popen([PY, '-c', code], cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path/'pid0', 120, first)
        second = subprocess.run([PY, '-c', code], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        msg = second.stderr.strip().splitlines()
        assert len(msg) == 1 and f"is in use by pid {first.pid} on host {socket.gethostname()}" in msg[0], second.stderr
        assert not (tmp_path/'stage'/'notebooks'/'sleepy.rank0.2.ipynb').exists()      # the second job started nothing
    finally:
        first.kill(); first.wait()
    # the first launcher died by SIGKILL (its lock is stale): the next job takes it over with a note
    time.sleep(1.0)
    third = subprocess.run([PY, '-c', code.replace('seconds=60', 'seconds=0')], cwd=tmp_path, env=child_env(),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"was locked by pid {first.pid}" in third.stderr and 'taking the lock over' in third.stderr
    assert not (tmp_path/'stage'/'lmlit.lock').exists()

@pytest.mark.timeout(200)
def test_sigkill_of_the_launcher_leaves_no_rank_or_kernel(tmp_path):
    launcher = subprocess.Popen([PY, '-c', _sleepy(tmp_path, seconds=120).replace('NPROC', '2')], cwd=tmp_path, env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(tmp_path/'pid0', 150, launcher)
    _wait_for(tmp_path/'pid1', 30, launcher)
    kernels = [int((tmp_path/f'pid{r}').read_text()) for r in (0, 1)]
    assert _ours(tmp_path) and all(_alive(k) for k in kernels)
    launcher.kill(); launcher.wait()           # no handler runs: only PR_SET_PDEATHSIG can end the chain
    t0 = time.time()
    while _ours(tmp_path) and time.time() - t0 < 20: time.sleep(0.25)
    print(f"\nafter SIGKILL of the launcher, its ranks and kernels were gone in {time.time() - t0:.1f} s")
    left = _kill_ours(tmp_path)
    assert not left, left
    assert not any(_alive(k) for k in kernels)

@pytest.mark.timeout(300)
def test_sighup_of_the_launcher_checkpoints_and_leaves_nothing_running(tmp_path):
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    p = subprocess.Popen([*LMLIT, 'train', '--run', 'hup', '-p', 'steps', '300', '-p', 'loader_delay_s', '0.05', *QUICK],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = []
    for line in p.stdout:
        log.append(line)
        if 'step     2/300' in line: break
    p.send_signal(signal.SIGHUP)               # the terminal closed: checkpoint, stop, leave nothing behind
    log.append(p.communicate(timeout=90)[0])
    out = ''.join(log)
    assert 'stopped by signal at step' in out, out[-3000:]
    time.sleep(0.5)
    left = _kill_ours(tmp_path)
    assert not left, left
    from lmlit.checkpoint import complete_checkpoints
    rd = tmp_path/'runs'/'hup'
    last = complete_checkpoints(rd)[-1][0]
    assert 2 <= last < 300 and not (rd/'lmlit.lock').exists()
    assert [p.name for p in (rd/'notebooks').glob('*.ipynb')] == ['05_train.rank0.ipynb']
    # (a resume's own segment notebooks: test_two_nodes_with_a_shared_run_folder_train_then_resume)

def _two_nodes(tmp_path, runs: list[Path], *params, steps=3):   # 3 or more: 05_train's job cells show 3 windows of steps
    port = free_port()
    procs = []
    for node, root in enumerate(runs):
        args = [*LMLIT, 'train', '--nnodes', '2', '--node-rank', str(node), '--master-addr', '127.0.0.1', '--master-port', str(port),
                '--nproc', '1', '--run', 'n', '-p', 'steps', str(steps), '-p', 'device', 'cpu', *QUICK, *params]
        procs.append(subprocess.Popen(args, cwd=tmp_path, env=child_env(LMLIT_RUNS=root), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=280), *p.communicate()) for p in procs]

@pytest.mark.timeout(300)
def test_two_nodes_without_a_shared_run_folder_are_refused_in_one_line(tmp_path):
    results = _two_nodes(tmp_path, [tmp_path/'node0', tmp_path/'node1'])
    text = ''.join(out + err for _, out, err in results)
    assert all(rc != 0 for rc, _, _ in results), text[-3000:]
    assert "ranks on node 1 (rank 1 and 0 more) do not see node 0's run folder" in text, text[-3000:]
    assert 'put LMLIT_RUNS on a shared filesystem' in text
    assert not list((tmp_path/'node0'/'n'/'checkpoints').glob('*')), "nothing was trained"
    assert not _kill_ours(tmp_path)

@pytest.mark.timeout(420)
def test_two_nodes_with_a_shared_run_folder_train_then_resume(tmp_path):
    shared = tmp_path/'shared'
    results = _two_nodes(tmp_path, [shared, shared])
    assert all(rc == 0 for rc, _, _ in results), ''.join(o + e for _, o, e in results)[-4000:]
    results = _two_nodes(tmp_path, [shared, shared], '-p', 'resume', 'true', steps=6)
    assert all(rc == 0 for rc, _, _ in results), ''.join(o + e for _, o, e in results)[-4000:]
    from lmlit.loop import read_metrics
    rd = shared/'n'
    assert [r['step'] for r in read_metrics(rd/'metrics.jsonl')] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (rd/'notebooks').glob('*.ipynb')) == \
        ['05_train.rank0.ipynb', '05_train.rank0.step3.ipynb', '05_train.rank1.ipynb', '05_train.rank1.step3.ipynb']
    assert not (rd/'lmlit.lock').exists()

@pytest.mark.timeout(60)
def test_stage_notebook_found_when_the_working_folder_holds_an_lmlit_folder(tmp_path):
    "An `lmlit/` folder here makes `lmlit` a namespace package (editable installs resolve submodules after it): __file__ is None."
    (tmp_path/'lmlit').mkdir()
    src = str(ROOT/'lmlit')
    code = textwrap.dedent(f"""
        import sys, importlib.abc, importlib.util
        class Editable(importlib.abc.MetaPathFinder):   # what an editable install's finder does: map lmlit.* to the checkout
            def find_spec(self, name, path=None, target=None):
                if name.startswith('lmlit.'):
                    return importlib.util.spec_from_file_location(name, {src!r} + '/' + name.split('.', 1)[1].replace('.', '/') + '.py')
        sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in (getattr(f, '__module__', '') + type(f).__module__)]
        sys.meta_path.append(Editable())
        sys.path.insert(0, '')
        import lmlit
        from lmlit.launch import stage_notebook
        print(lmlit.__file__, stage_notebook('05_train').name)""")
    env = child_env()
    env['PYTHONPATH'] = ''
    r = subprocess.run([PY, '-I', '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ['None', '05_train.ipynb'], r.stdout
