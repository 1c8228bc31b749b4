"""A literate, notebook-first trainer for small chat LLMs: tokenizer, GPT, Muon, data, multi-GPU training, evaluation.

Modules:

- `lmlit.bpb`: The one number every stage watches: how many bits the model needs per byte of held-out text, comparable across tokenizers; and the unigram baseline it has to beat.
- `lmlit.chat_data`: Conversations for mid-training and supervised fine-tuning: real multiple-choice training splits, real dialogues, generated arithmetic with the calculator tool, spelling and letter counting, identity — or SmolTalk, MMLU and GSM8K from the hub — mixed with a weight per task, packed into rows that start at a conversation and keep its loss mask.
- `lmlit.chat_eval`: CORE asks a base model to continue text. A chat model is asked questions and must answer them in a form a program can check: the letter of a choice, a number after `####`, a Python function that passes its tests, the count of a letter in a word. ChatCORE is the mean centered accuracy over those tasks, measured for each stage (base, SFT, RL) of a run.
- `lmlit.checkpoint`: Save a training job so that a crash costs at most the steps since the last checkpoint, load it back exactly, refuse a checkpoint that does not fit, and hand a trained model to whoever asks.
- `lmlit.core`: The ground every chapter stands on: which device and dtype to use, how a training job becomes several processes under `torchrun`, where downloads and runs live, and how a run folder records what produced it.
- `lmlit.data`: Stream parquet shards, tokenize documents in threaded batches, pack them into rows that each start at a document, keep batches ready in a background thread, and remember exactly where we are so a resumed run sees the very batches it would have seen.
- `lmlit.engine`: Prefill several prompts at once, decode them together from a KV cache, sample each row with its own seed, run the calculator when the model asks for it, and stream text that never splits a character.
- `lmlit.eval`: How good is a base model? Bits per byte on held-out text (`04a_bpb`) says how well it predicts text; the CORE suite of 22 tasks says what it can do with it.
- `lmlit.launch`: One launcher for every training stage: the stage is a notebook shipped inside the package, its `parameters` cell is its config, and each rank runs it with papermill, its executed copy kept as that rank's log.
- `lmlit.loop`: What every training stage — pretraining, mid-training, SFT, RL — does the same way: read its parameters, split a batch into micro-batches, take an optimizer step, time each part of it, write a metrics record, checkpoint, stop cleanly on a signal, and draw what happened.
- `lmlit.memory`: Plan a training step's peak memory before the first step, refuse a config that will not fit (naming the largest batch that would), and measure the real peak to compare.
- `lmlit.model`: A decoder-only transformer in nanochat's shape — RoPE, QK-norm, parameter-free RMSNorm, ReLU² MLP, untied embedding and head, logit softcap, grouped-query attention — with a KV cache, a sampler, and the parameter and FLOP counts a training report needs.
- `lmlit.optim`: Muon orthogonalises each block matrix's momentum with five Newton–Schulz steps; AdamW handles the embedding and the head. One optimizer object does both, averages gradients across processes itself and shards its state ZeRO-2 style, with LR and momentum schedules.
- `lmlit.sandbox`: HumanEval grades a completion by running it against the problem's tests. The completion is untrusted text: it may loop forever, fork without end, eat memory, read secrets, delete files, talk to the network or kill its parent. This chapter runs such a program in a child process that can do none of that for long, and kills everything it started when time is up.
- `lmlit.serve`: FastAPI + uvicorn on 127.0.0.1: the chat page shipped in the package, `POST /v1/chat/completions` (streamed as server-sent events or not), `GET /v1/models`, `GET /health`.
- `lmlit.sft`: The same kind of job as pretraining — a papermill notebook under torchrun, checkpoints with exact resume, metrics with the step-time breakdown — on conversations instead of text, with the loss where the assistant speaks.
- `lmlit.sources`: Every corpus — the offline Shakespeare default, shards on the Hugging Face hub, a folder of your own files — ends as the same thing: parquet shards of documents in the cache, the last one held out for validation.
- `lmlit.tokenizer`: Byte-pair encoding learned from the corpus, first in plain Python to see how it works, then with `rustbpe` for real; served by `tiktoken` with nanochat's nine special tokens; chat conversations rendered with the mask that says which tokens the model learns from.
- `lmlit.train`: One notebook that is both the chapter and the job: `papermill` runs it headless on every GPU under `torchrun`, and every step says where its time went, how much memory it used and how to resume it."""

__version__ = "0.0.1"
