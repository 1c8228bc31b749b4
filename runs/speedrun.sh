#!/usr/bin/env bash
# The GPU recipe, every stage, as runs/cpu.sh does on a CPU: hub data -> tokenizer -> d20 base model -> val BPB vs the
# unigram baseline -> CORE -> mid-training -> SFT -> chat eval -> RL on GSM8K -> chat eval -> report -> export.
#   NPROC=8 bash runs/speedrun.sh [NAME]          one 8-GPU node (NPROC defaults to the GPUs torch sees)
#   bash runs/speedrun.sh --dry-run [NAME]        every command above at toy sizes on the CPU, 2 ranks (what the tests run,
#                                                 against a local stand-in hub given by HF_ENDPOINT)
# Two nodes: pass torchrun's flags through LMLIT_TORCHRUN_FLAGS on each node (the same command, its own --node-rank), e.g.
#   LMLIT_TORCHRUN_FLAGS="--nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500" NPROC=8 bash runs/speedrun.sh
# and keep LMLIT_RUNS on a filesystem both nodes see (04e_launch: the checkpoint writer checks it at start-up).
#
# Where the time goes on 8 x H100 (80 GB, bf16). The base stage is the estimate from its FLOPs: d20 has 561M parameters,
# 3.49 GFLOP per token (lmlit.model.flops_per_token), 20 tokens per parameter = 11.2B tokens, at 45 % MFU of
# 8 x 989 TFLOP/s = 3.0 h (40 %: 3.4 h; nanochat's own d20 speedrun: about 3 h). The other stages are small next to it:
#   stage        command                                   expected on 8xH100   writes (under runs/NAME/)
#   data         lmlit data (8 shards, rest in background)  ~2 min foreground    $LMLIT_CACHE/hub/... parquet shards
#   tokenizer    lmlit tokenizer (2B chars, 8 shards)       ~3 min               tokenizer/, eval/tokenizer_compression.md
#   base         lmlit train (d20, 21.4k steps x 524k tok)  ~3.0 h               checkpoints/, metrics.jsonl, plots/, notebooks/
#   unigram      python -m lmlit.train --compare-unigram    ~2 min               (printed)
#   CORE         lmlit eval (1000 items per task)           ~10 min              eval/core.*, samples.md
#   mid          lmlit sft -p stage mid (1 epoch, mid-hub)   ~15 min (~0.5B tok)  mid/
#   SFT          lmlit sft (1 epoch, sft-hub)               ~10 min              sft/
#   chat eval    lmlit chat-eval --stage sft                ~15 min              sft/eval/chat.*
#   RL           lmlit rl -p task gsm8k (1 epoch of train)  ~1-1.5 h (sampling)  rl/
#   chat eval    lmlit chat-eval --stage rl                 ~15 min              rl/eval/chat.*
#   report       lmlit report                               seconds              report.md, report.json, plots/
#   export       lmlit export (when the hf extra is there)  ~1 min               hf/rl/ (transformers' nanochat format)
set -euo pipefail
DRY=''
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
NAME=${1:-speedrun}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"                        # run folders land in this checkout's runs/ (unless LMLIT_RUNS says otherwise)
# install lmlit into this python3 (a virtualenv's, when one is active) unless it is there already;
# asked from / so the checkout's own lmlit/ folder does not answer for an installed package.
# This comes first: on a fresh machine torch arrives with it, and NPROC below asks torch for the GPUs.
(cd / && python3 -c "import lmlit, tiktoken, rustbpe, papermill") 2>/dev/null || python3 -m pip install -e "$REPO"
lmlit() { python3 -m lmlit.cli "$@"; }   # this interpreter's lmlit, whatever else is first on PATH
RUNS=${LMLIT_RUNS:-runs}
START=$(date +%s)

if [ -n "$DRY" ]; then
  # toy sizes, CPU, gloo: the same commands and flags a GPU node runs, in minutes
  NPROC=${NPROC:-2}; export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  SOURCE=${SOURCE:-hub:karpathy/fineweb-edu-100b-shuffle}; SHARDS=${SHARDS:-3}; FIRST_SHARDS=1; VOCAB=${VOCAB:-512}
  MAX_CHARS=100000; EVAL_ITEMS=4; CHAT_ITEMS=4; CHAT_TASKS=arc_easy,mmlu,gsm8k,spelling
  TRAIN=(-p depth 2 -p aspect_ratio 32 -p head_dim 32 -p seq_len 128 -p device_batch 2 -p total_batch 1024
         -p steps 6 -p eval_every 3 -p eval_batches 2 -p sample_every -1 -p sample_tokens 16 -p checkpoint_every 3 -p log_every 1)
  MID=(-p mixture mid-hub -p device_batch 2 -p total_batch 1024 -p steps 4 -p eval_every 2 -p eval_batches 1 -p sample_every 0 -p checkpoint_every 2)
  SFT=(-p mixture sft-hub -p device_batch 2 -p total_batch 1024 -p steps 4 -p eval_every 2 -p eval_batches 1 -p sample_every -1 -p sample_tokens 16
       -p checkpoint_every 2)
  RL=(-p task gsm8k -p steps 2 -p prompts 4 -p device_prompts 1 -p samples 2 -p max_new_tokens 16 -p eval_every 1 -p eval_problems 4
      -p checkpoint_every 1 -p sample_every -1)
  CHAT_FLAGS=(--max-tokens 16); BIGBENCH=
else
  NPROC=${NPROC:-$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))')}
  SOURCE=${SOURCE:-hub:karpathy/fineweb-edu-100b-shuffle}
  SHARDS=${SHARDS:-240}            # ~240 x 100M chars: enough for d20 at 20 tokens per parameter
  FIRST_SHARDS=8                   # the tokenizer's ~2B characters; the rest download while it trains
  VOCAB=${VOCAB:-65536}; MAX_CHARS=2000000000; EVAL_ITEMS=${EVAL_ITEMS:-1000}; CHAT_ITEMS=${CHAT_ITEMS:-1000}
  CHAT_TASKS=arc_easy,arc_challenge,mmlu,gsm8k,humaneval,spelling
  # d20: 20 blocks x 64 = 1280 wide, heads of 128; 524,288 tokens per step; the horizon from 20 tokens per parameter.
  # device_batch 32 x 2048 fits an 80 GB GPU (04c_memory's table); the planner refuses what will not fit and names what does.
  TRAIN=(-p depth 20 -p aspect_ratio 64 -p head_dim 128 -p seq_len 2048 -p device_batch "${DEVICE_BATCH:-32}" -p total_batch 524288
         -p steps -1 -p data_ratio 20 -p warmdown_ratio 0.2 -p compile true -p eval_every 250 -p eval_batches 40
         -p sample_every 2000 -p checkpoint_every 1000 -p keep_last 3 -p log_every 10)
  # mid-training and SFT: one epoch of their mixture (steps -1), at the base run's sequence length
  MID=(-p mixture mid-hub -p device_batch "${DEVICE_BATCH:-32}" -p total_batch 524288 -p steps -1 -p compile true
       -p eval_every 100 -p eval_batches 20 -p sample_every -1 -p checkpoint_every 200 -p log_every 10)
  SFT=(-p mixture sft-hub -p device_batch 8 -p total_batch 65536 -p steps -1 -p compile true -p eval_every 100 -p eval_batches 20
       -p sample_every -1 -p checkpoint_every 200 -p log_every 10)
  # RL: GSM8K's 7,473 training problems once, 16 a step (2 per GPU), 16 answers each (nanochat's group size), signed
  # advantages as nanochat's (positive_only, lmlit's default, is measured on the CPU recipe's small model only)
  RL=(-p task gsm8k -p steps 467 -p prompts 16 -p device_prompts 2 -p samples 16 -p max_new_tokens 256 -p eval_every 60
      -p eval_problems 400 -p checkpoint_every 60 -p sample_every -1 -p log_every 1 -p positive_only false)
  CHAT_FLAGS=(); BIGBENCH=--bigbench
fi
# shellcheck disable=SC2206
TORCHRUN=(--nproc "$NPROC" ${LMLIT_TORCHRUN_FLAGS:-})

echo "== data: the first $FIRST_SHARDS of $SHARDS shards of $SOURCE (the rest in the background)"
lmlit data --source "$SOURCE" --n-shards "$FIRST_SHARDS"
mkdir -p "$RUNS"
# the rest of the shards, and the chat datasets SFT and RL read, while the tokenizer trains (a missing file is one line now,
# not a failure inside a rank's notebook hours later)
lmlit data --source "$SOURCE" --n-shards "$SHARDS" --hub-tasks smoltalk,mmlu_aux,gsm8k > "$RUNS/$NAME.data.log" 2>&1 &
DATA_PID=$!
echo "== tokenizer ($VOCAB tokens, up to $MAX_CHARS characters of the first $FIRST_SHARDS shards)"
lmlit tokenizer --source "$SOURCE" --n-shards "$FIRST_SHARDS" --vocab-size "$VOCAB" --run "$NAME" --max-chars "$MAX_CHARS" --compare ''
if ! wait "$DATA_PID"; then
  echo "runs/speedrun.sh: downloading the remaining shards or the chat datasets failed:" >&2; tail -n 3 "$RUNS/$NAME.data.log" >&2; exit 1
fi

echo "== base: pretraining on $NPROC process(es) per node"
lmlit train "${TORCHRUN[@]}" --run "$NAME" -p source "$SOURCE" -p source_shards "$SHARDS" -p vocab_size "$VOCAB" "${TRAIN[@]}"
echo "== val BPB vs unigram (on the training device)"; python3 -m lmlit.train --compare-unigram "$RUNS/$NAME"

echo "== eval: CORE (the official DCLM bundle if EVAL_BUNDLE points at it, else the offline sets${BIGBENCH:+ + BIG-bench})"
lmlit eval --run "$NAME" $BIGBENCH ${EVAL_BUNDLE:+--bundle "$EVAL_BUNDLE"} --max-per-task "$EVAL_ITEMS"

echo "== mid-training (runs/$NAME/mid/)"; lmlit sft "${TORCHRUN[@]}" --run "$NAME" -p stage mid "${MID[@]}"
echo "== SFT (runs/$NAME/sft/)";          lmlit sft "${TORCHRUN[@]}" --run "$NAME" "${SFT[@]}"
echo "== chat eval: SFT"
lmlit chat-eval --run "$NAME" --stage sft --tasks "$CHAT_TASKS" --max-per-task "$CHAT_ITEMS" "${CHAT_FLAGS[@]}"
echo "== RL on GSM8K (runs/$NAME/rl/)";  lmlit rl "${TORCHRUN[@]}" --run "$NAME" "${RL[@]}"
echo "== chat eval: RL (the table shows every stage evaluated so far)"
lmlit chat-eval --run "$NAME" --stage rl --tasks "$CHAT_TASKS" --max-per-task "$CHAT_ITEMS" "${CHAT_FLAGS[@]}"

echo "== report"; lmlit report --run "$NAME"
if python3 -c "import lmlit.export, transformers" 2>/dev/null; then
  echo "== export (transformers' nanochat format: AutoModelForCausalLM.from_pretrained('$RUNS/$NAME/hf/rl'))"
  lmlit export --run "$NAME"
else
  echo "== export: skipped (pip install 'lmlit[hf]' for lmlit export)"
fi
echo "done in $(( $(date +%s) - START )) s: $RUNS/$NAME (report.md, checkpoints/, mid/, sft/, rl/, eval/)"
