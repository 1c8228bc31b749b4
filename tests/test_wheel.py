"A built wheel works without the source checkout: it carries the stage notebooks, and `lmlit train` runs from it."
import os, sys, subprocess, venv
from pathlib import Path
import pytest
from conftest import ROOT, child_env

@pytest.mark.timeout(420)
def test_wheel_in_a_fresh_virtualenv_trains(tmp_path):
    dist = tmp_path/'dist'
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(dist), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(dist.glob('lmlit-*.whl'))
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert 'lmlit/stages/05_train.ipynb' in names, names
    # a fresh virtualenv; lmlit's dependencies (torch, papermill, …) come from this interpreter's site-packages
    env_dir = tmp_path/'venv'
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir/'bin'/'python'
    r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path/'elsewhere'; work.mkdir()                                  # no checkout anywhere near
    env = child_env(LMLIT_RUNS=work/'runs')
    env.pop('PYTHONPATH', None)
    where = subprocess.run([str(py), '-c', 'import lmlit; print(lmlit.__file__)'], cwd=work, env=env, capture_output=True, text=True)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr            # the wheel's lmlit, not the checkout's
    r = subprocess.run([str(env_dir/'bin'/'lmlit'), 'train', '--run', 'w', '-p', 'steps', '3', '-p', 'eval_every', '-1',
                        '-p', 'sample_every', '0', '-p', 'plots', 'false'], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (work/'runs'/'w'/'checkpoints'/'step_3'/'meta.json').exists()
    assert (work/'runs'/'w'/'notebooks'/'05_train.rank0.ipynb').exists()
