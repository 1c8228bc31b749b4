"Resume semantics: a finished run says so and exits 0; steps below the checkpoint is refused before any step; steps raised continues."
import sys, subprocess
from pathlib import Path
import pytest
from conftest import child_env

PY = sys.executable
QUICK = [('steps', 4), ('eval_every', -1), ('sample_every', 0), ('plots', False), ('checkpoint_every', 2)]

def _train(tmp_path, *pairs):
    args = [PY, '-m', 'lmlit.train']
    for k, v in pairs: args += ['-p', k, str(v)]
    return subprocess.run(args, cwd=tmp_path, env=child_env(LMLIT_RUNS=tmp_path/'runs'), capture_output=True, text=True, timeout=200)

def _steps(run_dir):
    from lmlit.loop import read_metrics
    return [r['step'] for r in read_metrics(Path(run_dir)/'metrics.jsonl')]

@pytest.mark.timeout(300)
def test_resume_finished_run_below_and_above(tmp_path):
    from lmlit.checkpoint import complete_checkpoints
    r = _train(tmp_path, ('run', 'r'), *QUICK)
    assert r.returncode == 0, r.stderr[-3000:]
    rd = tmp_path/'runs'/'r'
    before = (rd/'metrics.jsonl').read_text()
    # a run already at its last step: a clear message and success, nothing trained or written (was: NameError on n_avg)
    r = _train(tmp_path, ('run', 'r'), ('resume', True), *QUICK)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "run 'r' is complete at step 4; pass steps > 4 to continue it" in r.stdout, r.stdout[-2000:]
    assert (rd/'metrics.jsonl').read_text() == before
    # steps below the checkpoint: refused before any step (was: trained on past step 1,200 with a negative LR)
    r = _train(tmp_path, ('run', 'r'), ('resume', True), *QUICK[1:], ('steps', 2))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "is at step 4 (checkpoint step_4) but steps=2 is below it" in r.stderr, r.stderr[-2000:]
    assert (rd/'metrics.jsonl').read_text() == before and [s for s, _ in complete_checkpoints(rd)][-1] == 4
    # steps raised: the run continues to the new horizon, and its learning rate never goes below the floor
    r = _train(tmp_path, ('run', 'r'), ('resume', True), *QUICK[1:], ('steps', 6))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps(rd) == [1, 2, 3, 4, 5, 6]
    from lmlit.loop import read_metrics
    assert all(x['lr_mult'] >= 0 for x in read_metrics(rd/'metrics.jsonl'))
    assert [s for s, _ in complete_checkpoints(rd)][-1] == 6
