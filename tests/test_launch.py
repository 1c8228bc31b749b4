"The launcher is generic over the stage notebook: a tiny notebook on two ranks under torchrun, and a failing rank ending the job."
import json, os, sys, subprocess, textwrap
from pathlib import Path
import pytest
from conftest import child_env

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
