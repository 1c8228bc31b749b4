"""Loader throughput vs raw tiktoken batch encoding on the same text.

    python bench/loader.py [--threads 2] [--reps 5] [--seq-len 2048] [--batch-size 8]

Each repetition runs, interleaved, (1) the raw baseline: the tokenizer's tiktoken encoding
`encode_ordinary_batch` over every training document of the offline Shakespeare source, and
(2) `TokenLoader` over the same shards (infinite, shuffled), once dropping crop tails
(nanochat's rule) and once requeueing them. Loader speed is counted in *input* tokens —
documents read from parquet, tokenized and packed per second, the same text the baseline
encodes — in steady state: after one epoch of warm-up, over two more epochs, from one refill
of the packing buffer to another. Both use `--threads` tokenizer threads.

Reported: medians over `--reps` repetitions and the ratio loader / raw (target >= 0.8), in
wall-clock tokens per second and in tokens per CPU-second of the whole process (all
threads), plus the median of the per-repetition ratios. On a shared machine, where a
process with more threads gets a bigger share of the cores, the CPU-time ratio is the
fairer measure of the loader's overhead. A second table shows the fraction of tokens
best-fit packing drops at several row lengths. Prints markdown tables.
"""
import argparse, statistics, time
from lmlit.sources import get_source
from lmlit.tokenizer import get_tokenizer
from lmlit.data import TokenLoader
import pyarrow.parquet as pq

def raw_rate(tok, texts, threads):
    t0, c0 = time.perf_counter(), time.process_time()
    ids = tok.enc.encode_ordinary_batch(texts, num_threads=threads)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return sum(map(len, ids)) + len(texts), dt, dc      # + one BOS per document, as the loader counts

def _to_refill(ld):
    "Take batches until the loader has just added a refill of documents to its buffer; return its stats."
    n = ld.stats()['tokens_in']
    while (s := ld.stats())['tokens_in'] == n: next(ld)
    return s

def loader_rate(files, tok, B, T, threads, requeue, corpus_tokens, epochs=2):
    """Steady state: after one epoch of warm-up (the packing buffer full), tokens read and tokenized per
    second over `epochs` more epochs of text, measured from one refill of `doc_batch` documents to another."""
    with TokenLoader(files, tok, B, T, tokenizer_threads=threads, prefetch=2, requeue=requeue, seed=0) as ld:
        while ld.stats()['epochs'] < 1: next(ld)
        s0 = _to_refill(ld); t0, c0 = time.perf_counter(), time.process_time()
        while ld.stats()['tokens_in'] - s0['tokens_in'] < epochs * corpus_tokens: next(ld)
        s = _to_refill(ld); dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return s['tokens_in'] - s0['tokens_in'], s['tokens'] - s0['tokens'], dt, dc, s

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=2); ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--seq-len', type=int, default=2048); ap.add_argument('--batch-size', type=int, default=8)
    ap.add_argument('--vocab-size', type=int, default=4096)
    a = ap.parse_args(argv)
    src = get_source('shakespeare'); tok = get_tokenizer('shakespeare', a.vocab_size, max_chars=1_000_000)
    files = src.train_files
    texts = [t or '' for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)
             for t in pq.ParquetFile(f).read_row_group(g, columns=['text']).column('text').to_pylist()]
    print(f"text: {len(files)} shards, {len(texts)} documents, {sum(map(len, texts)) / 1e6:.2f}M chars; "
          f"tokenizer vocab {tok.vocab_size}; threads {a.threads}; rows B={a.batch_size} x T={a.seq_len}")
    names = ('raw', 'drop', 'requeue')
    wall = {k: [] for k in names}; cpu = {k: [] for k in names}; deliv = {'drop': [], 'requeue': []}; crop = {}
    for rep in range(a.reps):                            # interleaved: raw, drop, requeue, raw, ...
        n, dt, dc = raw_rate(tok, texts, a.threads); wall['raw'].append(n / dt); cpu['raw'].append(n / dc)
        for name, rq in (('drop', False), ('requeue', True)):
            n_in, n_out, dt, dc, st = loader_rate(files, tok, a.batch_size, a.seq_len, a.threads, rq, n)
            wall[name].append(n_in / dt); cpu[name].append(n_in / dc); deliv[name].append(n_out / dt); crop[name] = st['cropped_frac']
    med = lambda d, k: statistics.median(d[k])
    print(f"\n| run | input tok/s, wall (median of {a.reps}) | ratio | input tok per CPU-second | ratio | delivered tok/s | dropped by crops |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| raw tiktoken encode_ordinary_batch | {med(wall, 'raw'):,.0f} | 1.00 | {med(cpu, 'raw'):,.0f} | 1.00 | - | - |")
    for name in ('drop', 'requeue'):
        print(f"| TokenLoader requeue={name == 'requeue'} | {med(wall, name):,.0f} | {med(wall, name) / med(wall, 'raw'):.2f} | "
              f"{med(cpu, name):,.0f} | {med(cpu, name) / med(cpu, 'raw'):.2f} | {statistics.median(deliv[name]):,.0f} | {crop[name]:.1%} |")
    pr = lambda d, k: statistics.median(x / r for x, r in zip(d[k], d['raw']))
    print(f"\nmedian of the per-repetition ratios (each loader run / the raw run just before it): "
          + ", ".join(f"{k}: wall {pr(wall, k):.2f}, CPU {pr(cpu, k):.2f}" for k in ('drop', 'requeue')))
    print("\nall runs, wall tok/s: " + "; ".join(f"{k}: " + ", ".join(f"{v:,.0f}" for v in vs) for k, vs in wall.items()))
    print("all runs, tok per CPU-s: " + "; ".join(f"{k}: " + ", ".join(f"{v:,.0f}" for v in vs) for k, vs in cpu.items()))
    print("\n| seq_len | dropped by crops (requeue=False) | dropped (requeue=True) |\n|---:|---:|---:|")
    for T in (256, 512, 1024, 2048, 4096):
        fr = []
        for rq in (False, True):
            with TokenLoader(files, tok, 4, T, tokenizer_threads=a.threads, shuffle=False, epochs=1, requeue=rq) as ld:
                for _ in ld: pass
                fr.append(ld.stats()['cropped_frac'])
        print(f"| {T} | {fr[0]:.1%} | {fr[1]:.1%} |")

if __name__ == '__main__': main()
