"Tokenizer: reference BPE == rustbpe, save/load round trip, hand-checked conversation rendering, token bytes, CLI, bad input."
import json, os, time
from pathlib import Path
import pytest
import tiktoken
from lmlit.core import LmlitError
from lmlit.sources import get_source, iter_texts
from lmlit.tokenizer import (Tokenizer, SPECIAL_TOKENS, SPLIT_PATTERN, bpe_train_reference, merges_to_ranks, rustbpe_ranks,
                             train_tokenizer, get_tokenizer, get_token_bytes, reference_encoding, compression_table,
                             token_viewer, tokens_html)

@pytest.fixture(scope='module')
def shk():
    return get_source('shakespeare', need_val=True)

@pytest.fixture(scope='module')
def val_text(shk):
    return '\n\n'.join(iter_texts(shk.val_files))

@pytest.mark.timeout(120)
def test_reference_and_rustbpe_learn_the_same_merges(shk):
    sample = list(iter_texts(shk.train_files, limit_chars=40_000))
    merges = bpe_train_reference(sample, 300)
    assert len(merges) == 300
    assert rustbpe_ranks(sample, 256 + 300) == merges_to_ranks(merges)
    # the test exercises tie-breaking: some step had two pairs of equal (maximal) count. Counts of existing pairs only
    # fall, so two consecutive merges with equal counts, the second not built on the first, were tied at the first step.
    ties = sum(1 for (p, i, c), (q, j, d) in zip(merges, merges[1:]) if c == d and i not in q)
    assert ties >= 10

@pytest.mark.timeout(60)
def test_tokenizer_specials_encode_decode_batch(val_text):
    tok = get_tokenizer('shakespeare', 4096)
    assert tok.vocab_size == 4096 and len(tok.ranks) == 4096 - len(SPECIAL_TOKENS)
    assert [tok.encode_special(s) for s in SPECIAL_TOKENS] == list(range(4087, 4096)) and tok.bos_id == 4087
    docs = val_text.split('\n\n')[:200]
    batch = tok.encode(docs, prepend='<|bos|>', append=tok.encode_special('<|assistant_end|>'), num_threads=2)
    assert batch == [[tok.bos_id] + tok.encode(d) + [4091] for d in docs]
    assert tok.decode(tok.encode(val_text)) == val_text
    assert tok.encode('<|user_start|>') != [tok.encode_special('<|user_start|>')]
    assert tok.decode([tok.encode_special('<|user_start|>')]) == '<|user_start|>'
    with pytest.raises(LmlitError, match='unknown special token'): tok.encode('x', prepend='<|eot|>')

@pytest.mark.timeout(60)
def test_save_load_round_trip_exact(tmp_path, val_text):
    tok = get_tokenizer('shakespeare', 4096)
    tok.save(tmp_path/'t')
    assert sorted(p.name for p in (tmp_path/'t').iterdir()) == ['tokenizer.json', 'tokenizer.tiktoken']   # no pickle
    back = Tokenizer.load(tmp_path/'t')
    assert back.ranks == tok.ranks and back.special_tokens == tok.special_tokens and back.pattern == SPLIT_PATTERN
    assert back.encode(val_text) == tok.encode(val_text)
    assert back.hash() == tok.hash()
    meta = json.loads((tmp_path/'t'/'tokenizer.json').read_text())
    assert meta['vocab_size'] == 4096 and list(meta['special_tokens']) == SPECIAL_TOKENS
    from tiktoken.load import load_tiktoken_bpe
    assert load_tiktoken_bpe(str(tmp_path/'t'/'tokenizer.tiktoken')) == tok.ranks
    # a tampered file changes the hash; a broken one is a clear error
    (tmp_path/'t'/'tokenizer.json').write_text(json.dumps({**meta, 'vocab_size': 5000}))
    with pytest.raises(LmlitError, match='does not match'): Tokenizer.load(tmp_path/'t')

@pytest.mark.timeout(30)
def test_conversation_with_tool_call_hand_checked():
    tok = Tokenizer(merges_to_ranks([]))         # no merges: text tokens are bytes, specials are 256..264
    BOS, US, UE, AS, AE, PS, PE, OS, OE = range(256, 265)
    conv = {'messages': [
        {'role': 'system', 'content': 'Be exact.'},
        {'role': 'user', 'content': '6*7?'},
        {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Hm.'}, {'type': 'python', 'text': '6*7'},
                                          {'type': 'python_output', 'text': '42'}, {'type': 'text', 'text': '42'}]},
        {'role': 'user', 'content': 'ok'},
        {'role': 'assistant', 'content': 'bye'}]}
    ids, mask = tok.render_conversation(conv)
    b = lambda s: list(s.encode())
    want = ([(BOS, 0), (US, 0)] + [(t, 0) for t in b('Be exact.\n\n6*7?')] + [(UE, 0), (AS, 0)]
            + [(t, 1) for t in b('Hm.')] + [(PS, 1)] + [(t, 1) for t in b('6*7')] + [(PE, 1)]
            + [(OS, 0)] + [(t, 0) for t in b('42')] + [(OE, 0)] + [(t, 1) for t in b('42')] + [(AE, 1)]
            + [(US, 0)] + [(t, 0) for t in b('ok')] + [(UE, 0), (AS, 0)] + [(t, 1) for t in b('bye')] + [(AE, 1)])
    assert ids == [t for t, _ in want] and mask == [m for _, m in want]
    assert ids[:8] == [256, 257, 66, 101, 32, 101, 120, 97]              # "<bos><user_start>Be exa" spelled out
    assert sum(mask) == 3 + 5 + 2 + 1 + 3 + 1
    prompt = tok.render_for_completion(conv)
    assert prompt == ids[:ids.index(AS, len(ids) - 6) + 1]               # everything up to the last <|assistant_start|>
    assert tok.render_conversation(conv, max_tokens=10) == (ids[:10], mask[:10])
    with pytest.raises(LmlitError, match="expected 'assistant'"):
        tok.render_conversation([{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'}])
    with pytest.raises(LmlitError, match='system message must be followed'):
        tok.render_conversation([{'role': 'system', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}])

@pytest.mark.timeout(60)
def test_token_bytes(val_text):
    tok = get_tokenizer('shakespeare', 4096)
    tb = get_token_bytes(tok)
    assert tb.dtype.is_floating_point is False and tb.shape == (4096,)
    assert tb[[tok.encode_special(s) for s in SPECIAL_TOKENS]].tolist() == [0] * 9
    ids = tok.encode(val_text)
    assert tb[ids].sum().item() == len(val_text.encode('utf-8'))
    assert all(tb[i].item() == len(tok.enc.decode_single_token_bytes(i)) for i in range(0, 4087, 97))

@pytest.mark.timeout(60)
def test_bad_input_stops_before_training():
    consumed = []
    def texts():
        consumed.append(1); yield 'never read'
    with pytest.raises(LmlitError, match=r'at least 256 bytes \+ 9 special tokens = 265'): train_tokenizer(texts(), 264)
    assert consumed == []
    train_tokenizer(['tiny text here'], 265)                          # 265 = no merges, still valid
    with pytest.raises(LmlitError, match='empty'): train_tokenizer(iter([]), 1000)
    with pytest.raises(LmlitError, match='unknown source'): get_tokenizer('no-such-corpus', 1024)
    with pytest.raises(LmlitError, match='too small'): get_tokenizer('shakespeare', 100)

@pytest.mark.timeout(60)
def test_reference_tokenizers_never_download(tmp_path, monkeypatch):
    import requests
    calls = []
    monkeypatch.setattr(requests, 'get', lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError('network')))
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path/'tk'))
    assert reference_encoding('cl100k_base') is None and reference_encoding('gpt2') is None
    (tmp_path/'files').mkdir(); (tmp_path/'files'/'cl100k_base.tiktoken').write_text('bm90IHRoZSByZWFsIGZpbGU= 0\n')
    assert reference_encoding('cl100k_base', files=tmp_path/'files') is None      # wrong content: rejected by its hash
    assert calls == []
    rows = compression_table({'v': 'some text'}, {'ours': Tokenizer(merges_to_ranks([])), 'GPT-4': None})
    assert rows == [{'tokenizer': 'ours', 'vocab_size': 265, 'v': 1.0}, {'tokenizer': 'GPT-4', 'vocab_size': None, 'v': 'not available offline'}]

@pytest.mark.timeout(30)
def test_token_viewer_is_static_html_headless():
    tok = Tokenizer(merges_to_ranks(bpe_train_reference(['the the the'], 2)))
    v = token_viewer(tok, 'the cat')
    assert v._repr_mimebundle_()['text/html'] == tokens_html(tok, 'the cat')
    v.children[0].value = 'a <i>b</i>'
    html = v._repr_mimebundle_()['text/html']
    assert '<i>' not in html and html.count('<span title=') == len(tok.encode('a <i>b</i>'))

@pytest.mark.timeout(180)
def test_cli_tokenizer_writes_run_folder(run_root, monkeypatch, tmp_path, capsys):
    from lmlit.cli import main
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path/'tk'))
    assert main(['tokenizer', '--source', 'shakespeare', '--vocab-size', '2048', '--compare', '1024', '--run', 'tk']) == 0
    out = capsys.readouterr().out
    assert 'trained a 2048-token tokenizer' in out and 'val bytes/token' in out
    run = run_root/'tk'
    tok = Tokenizer.load(run/'tokenizer')
    pv = json.loads((run/'provenance.json').read_text())
    assert pv['tokenizer']['hash'] == tok.hash() and pv['tokenizer']['vocab_size'] == 2048
    assert pv['data_source']['name'] == 'shakespeare' and pv['data_source']['licence'].startswith('texts: public domain')
    assert pv['tokenizer']['train_chars'] > 4_500_000 and 'git_sha' in pv
    csv = (run/'eval'/'tokenizer_compression.csv').read_text().splitlines()
    assert csv[0].startswith('tokenizer,vocab_size,val bytes/token')
    assert [l.split(',')[0] for l in csv[1:]] == ['ours 1024', 'ours 2048 (this run)', 'GPT-2 (gpt2)', 'GPT-4 (cl100k_base)']
    ours1024, ours2048 = float(csv[1].split(',')[2]), float(csv[2].split(',')[2])
    assert 2.7 < ours2048 and ours1024 < ours2048 and pv['tokenizer']['val_bytes_per_token'] == ours2048
    assert 'not available offline' in (run/'eval'/'tokenizer_compression.md').read_text()
    assert main(['tokenizer', '--vocab-size', '10', '--run', 'bad']) == 2
    assert 'at least 256' in capsys.readouterr().err
