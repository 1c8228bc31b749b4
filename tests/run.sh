#!/usr/bin/env bash
# The whole test suite: every notebook's cells (nbdev-test) and the multi-process /
# kill-and-resume / end-to-end tests (pytest). Installs the dev extra first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY - <<'PY' 2>/dev/null
import importlib.util, sys, pathlib
import lmlit
ok = pathlib.Path(lmlit.__file__).resolve().parent == pathlib.Path('lmlit').resolve()
for m in ('nbdev', 'pytest', 'pytest_timeout', 'papermill', 'rustbpe', 'tiktoken'):
    ok = ok and importlib.util.find_spec(m) is not None
sys.exit(0 if ok else 1)
PY
then
  echo "tests/run.sh: installing lmlit with its dev extra (pip install -e '.[dev]')"
  $PY -m pip install -q -e '.[dev]'
fi
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
echo "== nbdev-test (notebook cells) =="
nbdev-test --n-workers "${NBDEV_WORKERS:-2}" --timing
echo "== pytest =="
$PY -m pytest tests -q -rs "$@"
echo "tests/run.sh: suite took $(( $(date +%s) - start )) s"
