"""Does the loader's packing cost model quality? The same small model, trained twice for the same number of tokens on
the same text: once on lmlit's TokenLoader (best-fit packing, tails requeued), once on uniformly random windows of the
concatenated text that this script draws itself; both evaluated with lmlit.eval.evaluate_bpb on the same validation
batches. Goal (issue 15): the loader within 0.01 BPB of random windows.

    python bench/loader_quality.py                       # d4/w256, rows of 256, 16 rows a step, 158 steps
    python bench/loader_quality.py --steps 60 --depth 2  # smaller, for a quick look

It trains with a short loop of its own (lmlit.model.GPT + lmlit.optim's MuonAdamW, warm-down schedule), not lmlit.train.
Before issue 15's change (commit 0ef5f74, run with that commit's lmlit on PYTHONPATH): loader 2.2350, random windows
2.2238, gap +0.0112 BPB (bench/RESULTS.md).
"""
import argparse, time
import torch
from lmlit.sources import get_source, iter_texts
from lmlit.tokenizer import get_tokenizer, get_token_bytes
from lmlit.model import GPTConfig, build_model
from lmlit.optim import setup_optimizer, lr_multiplier, set_lr, set_muon_momentum, muon_momentum
from lmlit.data import TokenLoader, val_loader
from lmlit.eval import evaluate_bpb

BEFORE = dict(commit='0ef5f74', loader=2.2350, random=2.2238)   # recorded with the default settings, see RESULTS.md


def random_windows(stream: torch.Tensor, batch_size: int, row_len: int, steps: int, seed: int):
    "`steps` batches of `batch_size` windows of `row_len` tokens, each starting anywhere in `stream` (uniformly, with replacement)."
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(row_len)
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - row_len + 1, (batch_size, 1), generator=gen)
        rows = stream[starts + offsets]
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def train(batches, args, vocab_size: int) -> tuple[torch.nn.Module, float]:
    "Train a fresh model (same seed every time) on `args.steps` batches; returns (model, seconds)."
    torch.manual_seed(args.seed)
    config = GPTConfig.from_depth(args.depth, vocab_size, sequence_len=args.seq_len, aspect_ratio=args.aspect_ratio, head_dim=args.head_dim)
    model = build_model(config)
    optimizer = setup_optimizer(model)
    start = time.perf_counter()
    for step, (x, y) in zip(range(args.steps), batches):
        set_lr(optimizer, lr_multiplier(step, args.steps, warmdown_ratio=args.warmdown_ratio))
        set_muon_momentum(optimizer, muon_momentum(step))
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == args.steps - 1: print(f"  step {step:4d}  loss {loss.item():.4f}", flush=True)
    return model, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--source', default='shakespeare')
    ap.add_argument('--vocab-size', type=int, default=4096)
    ap.add_argument('--depth', type=int, default=4)
    ap.add_argument('--aspect-ratio', type=int, default=64)
    ap.add_argument('--head-dim', type=int, default=64)
    ap.add_argument('--seq-len', type=int, default=256)
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--steps', type=int, default=158)
    ap.add_argument('--warmdown-ratio', type=float, default=0.3)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()

    source = get_source(args.source, need_val=True)
    tok = get_tokenizer(args.source, args.vocab_size)
    token_bytes = get_token_bytes(tok)
    val_batches = list(val_loader(source.val_files, tok, args.batch_size, args.seq_len, tokenizer_threads=2))
    train_docs = tok.encode(list(iter_texts(source.train_files)), prepend=tok.bos_id, num_threads=2)
    stream = torch.tensor([t for doc in train_docs for t in doc], dtype=torch.long)
    tokens = args.steps * args.batch_size * args.seq_len
    print(f"text: {args.source}, {len(train_docs)} training documents, {len(stream):,} tokens (vocab {tok.vocab_size}); "
          f"training {args.steps} steps x {args.batch_size} rows x {args.seq_len} = {tokens:,} tokens "
          f"({tokens / len(stream):.2f} epochs); d{args.depth}/w{args.depth * args.aspect_ratio}; "
          f"validation: {len(val_batches)} batches of the held-out works", flush=True)

    results = {}
    print("lmlit TokenLoader (requeue=True):", flush=True)
    with TokenLoader(source.train_files, tok, args.batch_size, args.seq_len, seed=args.seed, requeue=True, tokenizer_threads=2) as loader:
        model, seconds = train(loader, args, tok.vocab_size)
        stats = loader.stats()
    results['loader'] = (evaluate_bpb(model, val_batches, len(val_batches), token_bytes), seconds, stats.get('docs_per_batch'), stats['cropped'])
    print("uniformly random windows:", flush=True)
    model, seconds = train(random_windows(stream, args.batch_size, args.seq_len + 1, args.steps, args.seed), args, tok.vocab_size)
    results['random'] = (evaluate_bpb(model, val_batches, len(val_batches), token_bytes), seconds, None, 0)

    print("\n| training batches | val BPB | train s | distinct docs / batch | tokens dropped |\n|---|---:|---:|---:|---:|")
    for name, (bpb, seconds, docs, dropped) in results.items():
        shown = 'not reported (older loader)' if name == 'loader' and docs is None else ('-' if docs is None else f"{docs:.2f}")
        print(f"| {name} | {bpb:.4f} | {seconds:.0f} | {shown} | {dropped} |")
    gap = results['loader'][0] - results['random'][0]
    print(f"\nloader - random windows = {gap:+.4f} BPB; goal: the loader at most 0.01 BPB above random windows: "
          f"{'met' if gap <= 0.01 else 'NOT met'}")
    print(f"before issue 15's change ({BEFORE['commit']}, recorded, default settings): loader {BEFORE['loader']:.4f}, "
          f"random windows {BEFORE['random']:.4f}, gap {BEFORE['loader'] - BEFORE['random']:+.4f} BPB")


if __name__ == '__main__':
    main()
