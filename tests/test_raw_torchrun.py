"""The design's own way to run a job, without lmlit's launcher: raw torchrun, one papermill per rank,
on the chapter notebook with its defaults; then a resumed segment whose loss need not fall. Both exit 0
(issue 18, finding 4: the chapter's one-rank set-up check and its 'loss fell' assert used to end them with 1)."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, child_env, free_port

def _torchrun(tmp_path, out_prefix: str, extra: str = '') -> subprocess.CompletedProcess:
    script = f"papermill -k python3 {ROOT/'nbs'/'05_train.ipynb'} {tmp_path}/{out_prefix}_$RANK.ipynb --log-level WARNING {extra}"
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node=2', '--master-addr=127.0.0.1',
           f'--master-port={free_port()}', '--no-python', 'bash', '-c', script]
    env = child_env(LMLIT_RUNS=tmp_path/'runs')
    env.pop('IN_TEST', None)          # a user's shell: the strict test-suite checks are off, as in a real job
    env.pop('LMLIT_HEADLESS', None)   # the chapter runs as a chapter, lesson cells included
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)

@pytest.mark.timeout(480)
@pytest.mark.skipif(shutil.which('papermill') is None, reason='papermill (a dependency of lmlit) is not on PATH')
def test_raw_torchrun_papermill_chapter_defaults_then_resume(tmp_path):
    first = _torchrun(tmp_path, 'seg1')
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    run_dir = tmp_path/'runs'/'smoke'
    config = json.loads((run_dir/'config.json').read_text())
    assert config['resolved']['world_size'] == 2, config['resolved']
    steps = config['steps']
    assert (run_dir/'checkpoints'/f'step_{steps}'/'meta.json').exists()
    # a 1-step resumed segment: one loss, nothing to compare it with; once a job ended here with exit 1
    second = _torchrun(tmp_path, 'seg2', f'-p resume True -p steps {steps + 1}')
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert (run_dir/'checkpoints'/f'step_{steps + 1}'/'meta.json').exists()
    for rank in (0, 1): assert (tmp_path/f'seg2_{rank}.ipynb').exists()
