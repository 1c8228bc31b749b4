"""A literate, notebook-first trainer for small chat LLMs: tokenizer, GPT, Muon, data, multi-GPU training, evaluation.

Modules:

- `lmlit.core`: The ground every chapter stands on: which device and dtype to use, how a training job becomes several processes under `torchrun`, where downloads and runs live, and how a run folder records what produced it.
- `lmlit.eval`: How good is a base model? Bits per byte on held-out text first — the number the training job watches — then the CORE suite of 22 tasks."""

__version__ = "0.0.1"
