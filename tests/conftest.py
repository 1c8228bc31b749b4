"Shared pytest set-up: no hub, capped threads, a shared download cache."
import os, sys, socket, contextlib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')

def free_port() -> int:
    "A TCP port on loopback that nothing listens on right now."
    with contextlib.closing(socket.socket()) as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def run_root(tmp_path, monkeypatch):
    "A private LMLIT_RUNS for one test."
    monkeypatch.setenv('LMLIT_RUNS', str(tmp_path/'runs'))
    return tmp_path/'runs'

def child_env(**extra) -> dict:
    "Environment for subprocesses: this interpreter's, threads capped, no hub."
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
    env.update({k: str(v) for k, v in extra.items()})
    return env

def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` (long compiles, big downloads) stay out of the default suite and CI; LMLIT_SLOW=1 runs them."
    if os.environ.get('LMLIT_SLOW'): return
    skip = pytest.mark.skip(reason='slow: set LMLIT_SLOW=1 to run it')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
