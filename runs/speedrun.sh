#!/usr/bin/env bash
# The GPU recipe: NPROC GPUs, FineWeb-Edu shards from the hub, a d20 base model (nanochat's speedrun size), torch.compile on.
#   NPROC=8 bash runs/speedrun.sh [NAME]
# Multi-node: pass torchrun's flags through LMLIT_TORCHRUN_FLAGS, e.g.
#   LMLIT_TORCHRUN_FLAGS="--nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500" NPROC=8 bash runs/speedrun.sh
set -euo pipefail
NAME=${1:-speedrun}
NPROC=${NPROC:-$(python3 -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"                        # run folders land in this checkout's runs/ (unless LMLIT_RUNS says otherwise)
# install lmlit into this python3 (a virtualenv's, when one is active) unless it is there already;
# asked from / so the checkout's own lmlit/ folder does not answer for an installed package
(cd / && python3 -c "import lmlit, tiktoken, rustbpe, papermill") 2>/dev/null || python3 -m pip install -e "$REPO"
lmlit() { python3 -m lmlit.cli "$@"; }   # this interpreter's lmlit, whatever else is first on PATH
SOURCE=${SOURCE:-hub:karpathy/fineweb-edu-100b-shuffle}
SHARDS=${SHARDS:-240}            # ~240 x 100M chars: enough for d20 at 20 tokens per parameter
VOCAB=${VOCAB:-65536}
RUNS=${LMLIT_RUNS:-runs}
START=$(date +%s)

echo "== data ($SHARDS shards of $SOURCE)"; lmlit data --source "$SOURCE" --n-shards "$SHARDS"
echo "== tokenizer";  lmlit tokenizer --source "$SOURCE" --vocab-size "$VOCAB" --run "$NAME" --max-chars 2000000000
# d20: 20 blocks x 64 = 1280 wide, heads of 128; 524,288 tokens per step; the horizon from 20 tokens per parameter.
# device_batch 32 x 2048 fits an 80 GB GPU; the planner refuses a setting that will not fit and names one that does.
echo "== train"
lmlit train --nproc "$NPROC" ${LMLIT_TORCHRUN_FLAGS:-} --run "$NAME" -p source "$SOURCE" -p source_shards "$SHARDS" -p vocab_size "$VOCAB" \
  -p depth 20 -p aspect_ratio 64 -p head_dim 128 -p seq_len 2048 -p device_batch "${DEVICE_BATCH:-32}" -p total_batch 524288 \
  -p steps -1 -p data_ratio 20 -p warmdown_ratio 0.2 -p compile true -p eval_every 250 -p eval_batches 40 \
  -p sample_every 2000 -p checkpoint_every 1000 -p keep_last 3 -p log_every 10
echo "== val BPB vs unigram"; python3 -m lmlit.train --compare-unigram "$RUNS/$NAME"

echo "== eval: CORE (the official DCLM bundle if EVAL_BUNDLE points at it, else the offline sets + BIG-bench)"
lmlit eval --run "$NAME" --bigbench ${EVAL_BUNDLE:+--bundle "$EVAL_BUNDLE"} --max-per-task "${EVAL_ITEMS:-1000}"

echo "done in $(( $(date +%s) - START )) s: $RUNS/$NAME"
