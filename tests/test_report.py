"The run report: real CPU-recipe runs (fixtures copied from two smoke runs of runs/cpu.sh), injected throughput drops, schema, PNGs, markdown."
import gzip, json, math, shutil
from pathlib import Path
import pytest
from lmlit import report as R
from lmlit import report_render as RR
from lmlit.checkpoint import write_record

pytestmark = pytest.mark.timeout(120)
FIX = Path(__file__).parent/'fixtures'/'report'

def _real_run(tmp_path, name):
    "A run folder from the fixture files of a real smoke run (metrics.jsonl stored gzipped)."
    d = tmp_path/name
    shutil.copytree(FIX/name, d)
    (d/'metrics.jsonl').write_bytes(gzip.decompress((d/'metrics.jsonl.gz').read_bytes()))
    (d/'metrics.jsonl.gz').unlink()
    return d

def _train(d):
    return [json.loads(l) for l in (d/'metrics.jsonl').read_text().splitlines() if json.loads(l).get('kind') == 'train']

def test_real_run_every_section(tmp_path):
    d = _real_run(tmp_path, 'r1')
    rep = RR.write_report(d)
    md = (d/'report.md').read_text()
    for key in RR.SECTIONS: assert f"## {RR.LABELS['en'][key]}" in md
    assert 'no sft/ folder: the sft stage was not run' in md
    assert rep['stages']['sft']['present'] is False and rep['chat_eval']['sft'] is None
    assert 'boolq' in md and 'majority' in md
    tr = _train(d)
    test = rep['stages']['base']['training']
    assert test['loss']['initial'] == tr[0]['loss'] and test['loss']['final'] == tr[-1]['loss']
    assert test['loss']['best'] == min(r['loss'] for r in tr)
    boolq = next(p for p in rep['problems'] if p['code'] == 'negative_centered' and p['figures']['task'] == 'boolq')
    assert math.isclose(boolq['figures']['centered'], (0.5 - 0.62) / 0.38, rel_tol=1e-9)

def test_report_zh_same_numbers(tmp_path):
    d = _real_run(tmp_path, 'r1')
    RR.write_report(d)
    english = (d/'report.md').read_text()
    rep = RR.write_report(d, lang='zh')
    md_zh = (d/'report.zh.md').read_text()          # beside the English report, which is left as it was
    assert (d/'report.md').read_text() == english and (d/'report.zh.json').exists()
    md_en = RR.render_markdown(rep, 'en')
    assert '训练概况' in md_zh and '发现的问题' in md_zh
    nums = lambda s: [[c for c in l.split('|')[2:] if any(ch.isdigit() for ch in c)] for l in s.splitlines() if l.startswith('| 2') or l.startswith('| hellaswag')]
    assert nums(md_zh) == nums(md_en) and nums(md_en)

@pytest.mark.parametrize('kw,cause', [(dict(dense_eval=(41, 50)), 'eval'),
                                      (dict(slow=(41, 50, dict(data=8.0))), 'data'),
                                      (dict(slow=(41, 50, dict(data=1.8, fwdbwd=1.8, optim=1.8))), 'machine')])
def test_throughput_drop_cause(tmp_path, kw, cause):
    d = tmp_path/'syn'
    R.synthetic_metrics(d/'metrics.jsonl', **kw)
    rep = RR.write_report(d, plots=False)
    drops = [p for p in rep['problems'] if p['code'] == 'throughput_drop']
    assert [(p['figures']['first_step'], p['figures']['last_step'], p['figures']['cause']) for p in drops] == [(41, 50, cause)]
    md = (d/'report.md').read_text()
    assert 'steps 41–50' in md and f"**{R.PART_NAMES['en'][cause]}**" in md

def test_comparison_deltas(tmp_path):
    a, b = _real_run(tmp_path, 'r1'), _real_run(tmp_path, 'r2')
    rep = RR.write_report(a, compare_with=[str(b)])
    rows = {r['key']: r for r in rep['comparison'][0]['rows']}
    ta, tb = _train(a), _train(b)
    assert math.isclose(rows['loss_final']['delta'], ta[-1]['loss'] - tb[-1]['loss'])
    ca, cb = (json.loads((x/'eval'/'core.json').read_text())['core'] for x in (a, b))
    assert math.isclose(rows['core']['delta'], ca - cb)
    tps = lambda tr: sum(1024 for _ in tr[1:]) / sum(r['t_step'] for r in tr[1:])
    assert math.isclose(rows['tok_per_s']['delta'], tps(ta) - tps(tb), rel_tol=1e-9)
    assert math.isclose(rows['tok_per_s']['rel'], (tps(ta) - tps(tb)) / tps(tb), rel_tol=1e-9)
    assert rep['comparison'][0]['config_diff']['matrix_lr'] == [0.02, 0.03]

def test_schema_pngs_markdown(tmp_path):
    jsonschema = pytest.importorskip('jsonschema')
    from markdown_it import MarkdownIt
    import matplotlib.image as mpimg
    a, b = _real_run(tmp_path, 'r1'), _real_run(tmp_path, 'r2')
    RR.write_report(a, compare_with=[str(b)], price_per_hour=2.5)
    rep = json.loads((a/'report.json').read_text())
    jsonschema.validate(rep, R.REPORT_SCHEMA)
    bad = dict(rep, stages={**rep['stages'], 'base': dict(rep['stages']['base'], source='guess')})
    with pytest.raises(jsonschema.ValidationError): jsonschema.validate(bad, R.REPORT_SCHEMA)
    assert len(rep['plots']) == 6
    for p in rep['plots']:
        img = mpimg.imread(a/p)
        assert img.shape[0] > 100 and img.shape[1] > 100
    md = (a/'report.md').read_text()
    html = MarkdownIt('commonmark').enable('table').render(md)
    assert html.count('<h2>') == len(RR.SECTIONS)
    assert html.count('<table>') == md.count('\n|---|') and html.count('<table>') >= 8
    assert html.count('<img ') == 6

def test_records_preferred(tmp_path):
    d = _real_run(tmp_path, 'r1')
    write_record(d, 'base', status='stopped', started=0, ended=100, steps_done=30, steps_planned=60, stop_reason='signal SIGTERM',
                 device_memory_gb=0.06)
    rep = RR.write_report(d, plots=False)
    assert rep['stages']['base']['status'] == 'stopped' and rep['stages']['base']['source'] == 'record'
    stop = next(p for p in rep['problems'] if p['code'] == 'stopped')
    assert 'signal SIGTERM' in stop['text'] and '30 of 60' in stop['text']
    mem = next(p for p in rep['problems'] if p['code'] == 'memory')
    assert mem['severity'] == 'problem'      # 0.056 GiB peak of 0.06 GiB: under 10 % headroom
