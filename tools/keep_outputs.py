"""Execute chapters twice and keep, in the committed notebook, the outputs that came out the same both times.

    python tools/keep_outputs.py nbs/02_model.ipynb [more notebooks ...]

A lesson cell's value belongs in the notebook a reader opens on GitHub; a timing or a random
draw does not (it would change on every run). Running twice and keeping what agreed sorts
them mechanically. Widget outputs (progress bars) are dropped: they need a live kernel.
Run `nbdev-clean` afterwards, as after any notebook edit."""
import os, sys, copy, json
from pathlib import Path
import nbformat
from nbclient import NotebookClient

SKIP = ('#| slow', '#| cuda', '#| multigpu', '#| eval: false', '#|eval: false')   # what nbdev-test does not run either

def _execute(nb, cwd):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == 'code' and any(line.strip().startswith(SKIP) for line in cell.source.splitlines()[:3]): cell.source = 'pass'
    NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(cwd)}}).execute()
    return nb

def _comparable(outputs):
    out = []
    for o in outputs:
        o = {k: v for k, v in o.items() if k not in ('execution_count', 'metadata', 'transient')}
        out.append(json.dumps(o, sort_keys=True))
    return out

def _static(o) -> bool:
    data = o.get('data', {})
    return 'application/vnd.jupyter.widget-view+json' not in data

def keep_outputs(path: Path) -> tuple[int, int]:
    "(cells given outputs, code cells) after two executions of `path`."
    nb = nbformat.read(path, as_version=4)
    os.environ['IN_TEST'] = '1'   # the chapters' smoke runs write into throw-away folders, as under nbdev-test
    first, second = _execute(nb, path.parent), _execute(nb, path.parent)
    kept = 0
    for cell, a, b in zip(nb.cells, first.cells, second.cells):
        if cell.cell_type != 'code': continue
        if b.source == 'pass' and cell.source != 'pass': cell.outputs = []; continue
        same = _comparable(a.get('outputs', [])) == _comparable(b.get('outputs', []))
        cell.outputs = [o for o in a.get('outputs', []) if _static(o)] if same else []
        kept += bool(cell.outputs)
    nbformat.write(nb, path)
    return kept, sum(c.cell_type == 'code' for c in nb.cells)

if __name__ == '__main__':
    for p in sys.argv[1:]:
        kept, total = keep_outputs(Path(p))
        print(f"{p}: outputs kept in {kept} of {total} code cells")
