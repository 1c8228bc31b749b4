"""Conversation packing: padding and supervised fractions of best-fit packing vs one conversation per row, and
how fast the loader packs (rendering included) — on a mixture of lmlit.chat_data.

    python bench/chat_packing.py [--mixture sft-offline] [--batches 200] [--vocab 4096]

For each row length: `ChatLoader` reads `--batches` batches of `sft-offline` (rendering with the
Shakespeare tokenizer of `--vocab` tokens); reported are the padding fraction, the supervised-target
fraction, conversations cropped / dropped (longer than a row), packed tokens per second, and the
padding a one-conversation-per-row loader would have on the same conversations (the ratio of the two
is measured in this run). Prints a markdown table.
"""
import argparse, time
import numpy as np
from lmlit.chat_data import get_mixture
from lmlit.chat_loader import ChatLoader, admit
from lmlit.tokenizer import get_tokenizer

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--mixture', default='sft-offline'); ap.add_argument('--batches', type=int, default=200)
    ap.add_argument('--vocab', type=int, default=4096)
    a = ap.parse_args()
    tok = get_tokenizer('shakespeare', a.vocab)
    mix = get_mixture(a.mixture)
    print(f"| seq_len | rows/batch | padding (best-fit) | padding (1 per row) | ratio | supervised | cropped | dropped | conversations | packed tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for T, B in [(128, 16), (256, 16), (512, 8), (1024, 4), (2048, 2)]:
        loader = ChatLoader(mix, tok, batch_size=B, seq_len=T)
        t0 = time.perf_counter()
        for _ in range(a.batches): next(loader)
        dt = time.perf_counter() - t0
        st = loader.stats()
        n = st['conversations']
        refs = mix.order(0)[:n]
        lens = [len(admit(*tok.render_conversation(mix.conversation(r), max_tokens=1 << 30), T + 1)[0]) for r in refs]
        one_per_row = 1 - np.mean(lens) / (T + 1)
        print(f"| {T} | {B} | {st['padding_frac']:.1%} | {one_per_row:.1%} | {one_per_row / max(st['padding_frac'], 1e-9):.1f}x | "
              f"{st['supervised_frac']:.1%} | {st['cropped']} | {st['dropped']} | {n:,} | {a.batches * B * T / dt:,.0f} |")

if __name__ == '__main__': main()
