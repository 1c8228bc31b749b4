"""A run folder is untrusted input: a pickle payload planted in any checkpoint file never runs (inference, resume,
`lmlit chat`), a changed or cut-short file is caught by its sha256, a damaged newest meta.json is an error (issue 19, part 1)."""
import json, os, sys, shutil, hashlib, subprocess
from pathlib import Path
import pytest
import torch
from conftest import child_env
from lmlit.core import LmlitError
from lmlit.checkpoint import load_model, complete_checkpoints, MODEL_FILE

PY = sys.executable
QUICK = dict(eval_every=-1, sample_every=0, plots=False)

class Payload:
    "What an attacker plants: unpickling it runs code (here: writes a marker file)."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('the payload ran')",))

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A two-step base run (one checkpoint), trained in this process."
    root = tmp_path_factory.mktemp('runs')
    old = os.environ.get('LMLIT_RUNS')
    os.environ['LMLIT_RUNS'] = str(root)
    try:
        from lmlit.train import train
        train(run='base', steps=2, **QUICK)
    finally:
        if old is None: os.environ.pop('LMLIT_RUNS')
        else: os.environ['LMLIT_RUNS'] = old
    return root/'base'

def _copy(trained, tmp_path) -> Path:
    run = tmp_path/'runs'/'r'
    shutil.copytree(trained, run)
    return run

def _plant(run: Path, name: str, marker: Path, fix_hash: bool = True) -> Path:
    "Replace checkpoint file `name` with a torch file holding a payload; record its sha256 as an attacker would."
    folder = complete_checkpoints(run)[-1][1]
    torch.save({'weights': Payload(marker)}, folder/name)
    if fix_hash:
        meta = json.loads((folder/'meta.json').read_text())
        meta['files'][name] = dict(sha256=hashlib.sha256((folder/name).read_bytes()).hexdigest(), bytes=(folder/name).stat().st_size)
        (folder/'meta.json').write_text(json.dumps(meta))
    return folder

def _one_line(error: Exception) -> str:
    text = str(error)
    assert '\n' not in text, text
    return text

@pytest.mark.timeout(120)
@pytest.mark.parametrize('name', [MODEL_FILE, 'optim.pt', 'rank0.pt'])
def test_payload_in_any_checkpoint_file_never_runs(trained, tmp_path, monkeypatch, name):
    run = _copy(trained, tmp_path)
    monkeypatch.setenv('LMLIT_RUNS', str(tmp_path/'runs'))
    marker = tmp_path/'PWNED'
    _plant(run, name, marker)
    # inference reads the weights only: a payload in optimizer or rank state is not even opened
    if name == MODEL_FILE:
        with pytest.raises(LmlitError) as e: load_model(run)
        assert 'is not a readable safetensors file' in _one_line(e.value)
    else:
        model, _, meta = load_model(run)
        assert meta['step'] == 2
    assert not marker.exists()
    # resuming reads every file: refused in one line, nothing run
    from lmlit.train import train
    with pytest.raises(LmlitError) as e: train(run='r', steps=4, resume=True, **QUICK)
    assert ('not a file lmlit can read safely' in _one_line(e.value)) or ('not a readable safetensors file' in str(e.value)), e.value
    assert not marker.exists(), "the payload ran"

@pytest.mark.timeout(120)
def test_chat_refuses_a_payload_in_one_line_and_old_format_weights_load_safely(trained, tmp_path):
    run = _copy(trained, tmp_path)
    marker = tmp_path/'PWNED'
    folder = _plant(run, MODEL_FILE, marker)
    lmlit = [PY, '-c', 'import sys; from lmlit.cli import main; sys.exit(main())']
    r = subprocess.run([*lmlit, 'chat', '--run', str(run), '-p', 'hello', '--max-tokens', '2'], cwd=tmp_path,
                       env=child_env(LMLIT_RUNS=tmp_path/'runs'), capture_output=True, text=True, timeout=100)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert 'is not a readable safetensors file' in r.stderr and not marker.exists()
    # a checkpoint from before format 2 (model.pt, no sha256 list): a payload there is refused by weights_only=True
    (folder/MODEL_FILE).unlink()
    torch.save({'weights': Payload(marker)}, folder/'model.pt')
    meta = json.loads((folder/'meta.json').read_text())
    for key in ('format', 'files'): meta.pop(key)
    (folder/'meta.json').write_text(json.dumps(meta))
    with pytest.raises(LmlitError) as e: load_model(run)
    assert 'nothing is unpickled' in _one_line(e.value) and not marker.exists()
    # ... while the old format's plain weights still load
    model = load_model(trained)[0]
    torch.save(model.state_dict(), folder/'model.pt')
    assert load_model(run)[2]['step'] == 2

@pytest.mark.timeout(120)
def test_changed_cut_short_and_damaged_files_give_one_line(trained, tmp_path, monkeypatch):
    run = _copy(trained, tmp_path)
    monkeypatch.setenv('LMLIT_RUNS', str(tmp_path/'runs'))
    folder = complete_checkpoints(run)[-1][1]
    weights = folder/MODEL_FILE
    original = weights.read_bytes()
    flipped = bytearray(original)
    for i in range(len(flipped) - 586, len(flipped)): flipped[i] ^= 0x10      # 586 flipped bytes used to load silently
    weights.write_bytes(bytes(flipped))
    with pytest.raises(LmlitError) as e: load_model(run)
    assert 'does not match the sha256 its meta.json recorded' in _one_line(e.value)
    weights.write_bytes(original)
    (folder/'optim.pt').write_bytes((folder/'optim.pt').read_bytes()[:1000])    # cut short
    from lmlit.train import train
    with pytest.raises(LmlitError) as e: train(run='r', steps=4, resume=True, **QUICK)
    assert 'optim.pt does not match the sha256' in _one_line(e.value) and 'cut short' in str(e.value)
    # the newest stage's meta.json unreadable: an error, not a silent fall-back to the base model
    sft = run/'sft'
    shutil.copytree(run/'checkpoints', sft/'checkpoints')
    (complete_checkpoints(sft)[-1][1]/'meta.json').write_text('{"step": 2, "files": {')
    with pytest.raises(LmlitError) as e: load_model(run)
    assert 'meta.json cannot be read' in _one_line(e.value)
    assert load_model(run, stage='base')[2]['stage'] == 'base'           # the base model itself is fine
    # weights whose shapes do not match the recorded model shape: one line, not a RuntimeError
    state = {k: v[..., :1].contiguous() if v.ndim else v for k, v in load_model(trained)[0].state_dict().items()}
    from safetensors.torch import save_file
    shutil.rmtree(sft)
    save_file(state, str(weights))
    meta = json.loads((folder/'meta.json').read_text())
    meta['files'][MODEL_FILE] = dict(sha256=hashlib.sha256(weights.read_bytes()).hexdigest(), bytes=weights.stat().st_size)
    (folder/'meta.json').write_text(json.dumps(meta))
    with pytest.raises(LmlitError) as e: load_model(run)
    assert 'do not fit the model its meta.json describes' in _one_line(e.value)

@pytest.mark.timeout(120)
def test_an_old_format_checkpoint_says_it_cannot_be_resumed_but_its_weights_load(trained, tmp_path, monkeypatch):
    import numpy as np
    run = _copy(trained, tmp_path)
    monkeypatch.setenv('LMLIT_RUNS', str(tmp_path/'runs'))
    folder = complete_checkpoints(run)[-1][1]
    state = torch.load(folder/'rank0.pt', weights_only=True)
    state['rng']['numpy'] = np.random.get_state()          # what lmlit wrote before format 2: a NumPy array inside a pickle
    torch.save(state, folder/'rank0.pt')
    meta = json.loads((folder/'meta.json').read_text())
    for key in ('format', 'files'): meta.pop(key)
    (folder/'meta.json').write_text(json.dumps(meta))
    from lmlit.train import train
    with pytest.raises(LmlitError) as e: train(run='r', steps=4, resume=True, **QUICK)
    assert 'written by an older lmlit' in _one_line(e.value) and 'cannot be resumed' in str(e.value)
    assert load_model(run)[2]['step'] == 2
