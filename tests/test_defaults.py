"One source of truth for the training job's defaults: the notebook's parameters cell; editing it is the only way to change them."
import json, shutil
from pathlib import Path
import pytest
from lmlit.core import LmlitError
from lmlit.launch import parameters_of, parameters_cell, stage_notebook

pytestmark = pytest.mark.timeout(60)

def _edited(tmp_path, old: str, new: str) -> Path:
    nb = json.loads(stage_notebook('05_train').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    src = ''.join(cell['source'])
    assert old in src
    cell['source'] = src.replace(old, new, 1)
    path = tmp_path/'05_train.ipynb'; path.write_text(json.dumps(nb)); return path

def test_module_defaults_are_the_parameters_cell():
    from lmlit.train import DEFAULTS, resolve_config
    assert DEFAULTS == parameters_of(stage_notebook('05_train'))
    assert resolve_config() == DEFAULTS
    assert DEFAULTS['requeue'] is True and DEFAULTS['steps'] == 12

def test_editing_the_cell_changes_the_defaults_and_a_bad_edit_fails_clearly(tmp_path):
    assert parameters_of(_edited(tmp_path, 'steps = 12', 'steps = 30'))['steps'] == 30
    with pytest.raises(LmlitError, match=r"steps = 2 \* 6 is not a literal"):
        parameters_of(_edited(tmp_path, 'steps = 12', 'steps = 2 * 6'))
    with pytest.raises(LmlitError, match="only `name = literal`"):
        parameters_of(_edited(tmp_path, 'steps = 12', 'steps = 12\nimport os'))

def test_the_package_ships_the_notebook_itself():
    # in a checkout lmlit/stages/05_train.ipynb is a link to nbs/: one copy, so the two cannot differ
    root = Path(__file__).resolve().parents[1]
    assert stage_notebook('05_train').read_bytes() == (root/'nbs'/'05_train.ipynb').read_bytes()

def test_papermill_reads_every_parameter():
    # papermill parses the cell itself to check the names it is given: a comment it cannot parse hides a parameter
    import papermill as pm
    from lmlit.train import DEFAULTS
    assert list(pm.inspect_notebook(str(stage_notebook('05_train')))) == list(DEFAULTS)
