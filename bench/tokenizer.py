"""Tokenizer speed on this machine: the plain-Python reference BPE trainer against rustbpe (same text, same merges),
rustbpe on the whole offline corpus at a few vocabulary sizes, and tiktoken encoding throughput (one text at a time
against the multi-threaded batch call).

    python bench/tokenizer.py [--ref-chars 40000] [--ref-merges 300] [--vocab 4096,8192] [--threads 2]

Prints markdown tables with ratios. Timings are the best of --reps runs."""
import sys, time, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lmlit.sources import get_source, iter_texts
from lmlit.tokenizer import bpe_train_reference, merges_to_ranks, rustbpe_ranks, train_tokenizer


def best(fn, reps):
    out, ts = None, []
    for _ in range(reps):
        t = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t)
    return out, min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--ref-chars', type=int, default=40_000)
    ap.add_argument('--ref-merges', type=int, default=300)
    ap.add_argument('--vocab', default='4096,8192')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--reps', type=int, default=3)
    a = ap.parse_args(argv)
    src = get_source('shakespeare', need_val=True)

    sample = list(iter_texts(src.train_files, limit_chars=a.ref_chars))
    ref, t_ref = best(lambda: merges_to_ranks(bpe_train_reference(sample, a.ref_merges)), 1)
    fast, t_fast = best(lambda: rustbpe_ranks(sample, 256 + a.ref_merges), a.reps)
    print(f"## BPE training, {sum(map(len, sample)):,} chars, {a.ref_merges} merges\n")
    print("| trainer | seconds | ratio | same merges |\n|---|---|---|---|")
    print(f"| reference (Python) | {t_ref:.3f} | 1.0 | — |")
    print(f"| rustbpe | {t_fast:.4f} | {t_ref / t_fast:.0f}x faster | {fast == ref} |\n")

    docs = list(iter_texts(src.train_files))
    print(f"## rustbpe on the whole offline corpus ({sum(map(len, docs)):,} chars)\n")
    print("| vocab | train seconds | val bytes/token |\n|---|---|---|")
    val = '\n\n'.join(iter_texts(src.val_files))
    tok = None
    for v in [int(x) for x in a.vocab.split(',')]:
        tok, t = best(lambda: train_tokenizer(docs, v), a.reps)
        print(f"| {v} | {t:.2f} | {len(val.encode()) / len(tok.encode(val)):.3f} |")

    n_bytes = sum(len(d.encode()) for d in docs)
    _, t_one = best(lambda: [tok.encode(d) for d in docs], a.reps)
    _, t_batch = best(lambda: tok.encode(docs, num_threads=a.threads), a.reps)
    print(f"\n## tiktoken encoding, vocab {tok.vocab_size}, {len(docs)} documents\n")
    print("| mode | MB/s | ratio |\n|---|---|---|")
    print(f"| one at a time | {n_bytes / t_one / 1e6:.1f} | 1.0 |")
    print(f"| batch, {a.threads} threads | {n_bytes / t_batch / 1e6:.1f} | {t_one / t_batch:.2f} |")


if __name__ == '__main__':
    main()
