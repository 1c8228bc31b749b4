"""The benchmark scripts run: bench/gpu.py's logic on the CPU (--dry-run) and bench/cpu_mfu.py on a tiny model.
Their speed is not tested here (speed goals live in bench/RESULTS.md); only that they run and print their tables."""
import re, subprocess, sys
from pathlib import Path
import pytest
from conftest import child_env, ROOT


@pytest.mark.timeout(120)
def test_gpu_bench_dry_run():
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu.py'), '--dry-run'], env=child_env(),
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [l for l in r.stdout.splitlines() if re.match(r'\| 2 \| [\d.]+M \| \d+ \| [\d,]+ \|', l)]
    assert len(rows) == 2, r.stdout
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu.py'), '--dry-run', '--loss-chunk', '48', '--batches', '2'], env=child_env(),
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0 and 'loss_chunk=48' in r.stdout, r.stderr[-2000:]
    assert len([l for l in r.stdout.splitlines() if re.match(r'\| 2 \| [\d.]+M \| 2 \| [\d,]+ \|', l)]) == 1, r.stdout


@pytest.mark.timeout(120)
def test_cpu_mfu_bench_tiny():
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'cpu_mfu.py'), '--depth', '1', '--width', '64', '--head-dim', '32',
                        '--seq', '32', '--batch', '2', '--vocab', '256', '--steps', '2', '--warmup', '1', '--threads', '1', '--sizes', '256,512'],
                       env=child_env(), capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'CPU MFU by CPU time.*\| \*\*([\d.]+)\*\* \|', r.stdout)
    assert m and 0 < float(m.group(1)) < 1.5, r.stdout


@pytest.mark.timeout(120)
def test_loss_memory_bench_tiny():
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'loss_memory.py'), '--tokens', '256', '--width', '32', '--vocab', '512',
                        '--chunks', '100', '--reps', '1'], env=child_env(), capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {l.split('|')[1].strip(): float(l.split('|')[2]) for l in r.stdout.splitlines() if re.match(r'\| (plain|fused CPU|chunked 100) \|', l)}
    assert set(rows) == {'plain', 'fused CPU', 'chunked 100'}, r.stdout
    assert rows['chunked 100'] < rows['plain'] / 2, rows     # the chunked path keeps far less for backward


@pytest.mark.timeout(120)
def test_device_check_dry_run(tmp_path):
    "The one-call GPU script (checks + tables) runs its whole logic on the CPU, every check passing, and writes its report."
    rep = tmp_path/'report.md'
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'device_check.py'), '--dry-run', '--out', str(rep)], env=child_env(),
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    checks = [l for l in r.stdout.splitlines() if re.match(r'\| [^|]+ \| (pass|\*\*FAIL\*\*) \|', l)]
    assert len(checks) == 6 and all('| pass |' in l for l in checks), checks
    assert '0 check(s) failed' in r.stdout and rep.read_text().count('| pass |') == 6
    assert len([l for l in r.stdout.splitlines() if re.match(r'\| 2 \| [\d.]+M \| \d \| \d+ \| [\d,]+ \|', l)]) == 3, r.stdout
