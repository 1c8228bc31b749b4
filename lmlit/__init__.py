"""A literate, notebook-first trainer for small chat LLMs: tokenizer, GPT, Muon, data, multi-GPU training, evaluation.

Modules:

- `lmlit.core`: The ground every chapter stands on: which device and dtype to use, how a training job becomes several processes under `torchrun`, where downloads and runs live, and how a run folder records what produced it.
- `lmlit.data`: Stream parquet shards, tokenize documents in threaded batches, pack them into rows that each start at a document, keep batches ready in a background thread, and remember exactly where we are so a resumed run sees the very batches it would have seen.
- `lmlit.eval`: How good is a base model? Bits per byte on held-out text first — the number the training job watches — then the CORE suite of 22 tasks.
- `lmlit.model`: A decoder-only transformer in nanochat's shape — RoPE, QK-norm, parameter-free RMSNorm, ReLU² MLP, untied embedding and head, logit softcap, grouped-query attention — with a KV cache, a sampler, and the parameter and FLOP counts a training report needs.
- `lmlit.optim`: Muon orthogonalises each block matrix's momentum with five Newton–Schulz steps; AdamW handles the embedding and the head. One optimizer object does both, averages gradients across processes itself and shards its state ZeRO-2 style, with LR and momentum schedules.
- `lmlit.report`: What a user used to write by hand after a run — overview, training table, curves, per-task tables, the problems found *with their evidence*, and how the run compares with earlier ones — written by `lmlit report` from the run folder's own figures.
- `lmlit.sources`: Every corpus — the offline Shakespeare default, shards on the Hugging Face hub, a folder of your own files — ends as the same thing: parquet shards of documents in the cache, the last one held out for validation.
- `lmlit.tokenizer`: Byte-pair encoding learned from the corpus, first in plain Python to see how it works, then with `rustbpe` for real; served by `tiktoken` with nanochat's nine special tokens; chat conversations rendered with the mask that says which tokens the model learns from.
- `lmlit.train`: One notebook that is both the chapter and the job: `papermill` runs it headless on every GPU under `torchrun`, and every step says where its time went, how much memory it used and how to resume it."""

__version__ = "0.0.1"
