#!/usr/bin/env bash
# The CPU recipe, end to end on a laptop-class CPU (<= 20 min on 2 cores):
# offline Shakespeare -> BPE tokenizer -> a small base model -> val BPB vs the unigram baseline -> CORE -> SFT on the offline
# conversation mixture -> chat eval of base and SFT -> RL on arithmetic -> chat eval with its RL column -> a one-shot chat
# answer -> the run report.
#   bash runs/cpu.sh [NAME]            the recipe (run folder runs/NAME, default cpu-<date>-<time>)
#   LMLIT_SMOKE=1 bash runs/cpu.sh X   every stage smoke-sized (~3 min; what CI runs)
set -euo pipefail
NAME=${1:-cpu-$(date +%Y%m%d-%H%M%S)}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"                        # run folders land in this checkout's runs/ (unless LMLIT_RUNS says otherwise)
# install lmlit into this python3 (a virtualenv's, when one is active) unless it is there already;
# asked from / so the checkout's own lmlit/ folder does not answer for an installed package
(cd / && python3 -c "import lmlit, tiktoken, rustbpe, papermill") 2>/dev/null || python3 -m pip install -e "$REPO"
lmlit() { python3 -m lmlit.cli "$@"; }   # this interpreter's lmlit, whatever else is first on PATH
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RUNS=${LMLIT_RUNS:-runs}
START=$(date +%s)

if [ -n "${LMLIT_SMOKE:-}" ]; then
  VOCAB=1024; COMPARE=''; EVAL_ITEMS=4; CHAT_ITEMS=4
  TRAIN=(-p depth 2 -p aspect_ratio 32 -p head_dim 32 -p seq_len 128 -p device_batch 4 -p total_batch 1024
         -p steps 30 -p eval_every 15 -p eval_batches 4 -p sample_every 15 -p sample_tokens 32 -p checkpoint_every 15)
  SFT=(-p device_batch 4 -p total_batch 1024 -p steps 10 -p eval_every 5 -p eval_batches 2 -p sample_every -1 -p checkpoint_every 5)
  RL=(-p steps 4 -p prompts 4 -p device_prompts 2 -p samples 4 -p max_new_tokens 32 -p eval_every 2 -p eval_problems 8 -p checkpoint_every 2 -p sample_every -1
      -p filter_problems 8 -p filter_samples 2)
else
  # 1.4M parameters (d=128, 2 blocks, 4096-token vocabulary: most of them embeddings); 300 steps x 4096 tokens = 1.2M tokens (~0.9 epoch)
  VOCAB=4096; COMPARE='1024,2048,8192'; EVAL_ITEMS=50; CHAT_ITEMS=25
  TRAIN=(-p depth 2 -p aspect_ratio 64 -p head_dim 64 -p seq_len 256 -p device_batch 16 -p total_batch 4096
         -p steps 300 -p warmdown_ratio 0.3 -p eval_every 100 -p eval_batches 14 -p sample_every 100 -p sample_tokens 64
         -p checkpoint_every 100)
  # SFT: 160 steps x 4096 tokens = 0.66M tokens, a quarter of an epoch of the offline mixture (2.6M tokens)
  SFT=(-p device_batch 16 -p total_batch 4096 -p steps 160 -p eval_every 40 -p eval_batches 4 -p sample_every -1
       -p sample_tokens 48 -p checkpoint_every 80)
  # RL: a pre-pass keeps the training problems the SFT model answers right 1-3 times of 4 (of the first 1200), then 40 steps
  # x 32 problems x 8 answers, advantages clamped at 0 (positive_only, the default), lr 0.5 of the base run's (what moved
  # the curve: nbs/10_rl.ipynb's lessons, bench/RESULTS.md; 16 problems a step gave about half the gain); held-out pass@1
  # on all 400 validation problems x 4 answers at temperature 1.0 before and after
  RL=(-p steps 40 -p prompts 32 -p device_prompts 32 -p samples 8 -p lr_frac 0.5 -p max_new_tokens 64
      -p filter_problems 1200 -p filter_samples 4 -p eval_every -1 -p eval_problems 400 -p eval_samples 4
      -p checkpoint_every 20 -p sample_every -1)
fi
CHAT_TASKS=arc_easy,arc_challenge,mmlu,gsm8k,humaneval,spelling

if [ -e "$RUNS/$NAME" ]; then      # never overwrite a run: its checkpoints may be all someone has
  echo "runs/cpu.sh: $RUNS/$NAME already exists; pass another name (bash runs/cpu.sh NEWNAME) or move it away" >&2
  exit 2
fi
echo "== data";      lmlit data --source shakespeare
echo "== tokenizer"; lmlit tokenizer --source shakespeare --vocab-size "$VOCAB" --run "$NAME" --compare "$COMPARE"
echo "== train";     lmlit train --run "$NAME" -p source shakespeare -p vocab_size "$VOCAB" "${TRAIN[@]}"
echo "== val BPB vs unigram"
python3 -m lmlit.train --compare-unigram "$RUNS/$NAME"
echo "== where the time went"
python3 -c "import sys; from lmlit.loop import throughput_report; print(throughput_report(sys.argv[1]))" "$RUNS/$NAME"

echo "== eval: CORE tasks available offline, $EVAL_ITEMS items each (per-task table, diagnostics, chart in $RUNS/$NAME/eval/)"
lmlit eval --run "$NAME" --max-per-task "$EVAL_ITEMS"

echo "== SFT on the offline conversation mixture (runs/$NAME/sft/: held-out loss per task before and after)"
lmlit sft --run "$NAME" "${SFT[@]}"
python3 -c "import sys; from lmlit.sft import held_out_table; print(held_out_table(sys.argv[1]))" "$RUNS/$NAME/sft"
python3 - "$RUNS/$NAME" "$CHAT_ITEMS" <<'PY'
import sys
from lmlit.checkpoint import load_model
from lmlit.sft import tool_use
for stage in ('base', 'sft'):   # held-out arithmetic: does the model call the calculator and end its turn?
    model, tok, _ = load_model(sys.argv[1], stage=stage)
    r = tool_use(model, tok, n=4 * int(sys.argv[2]))
    print(f"{stage}: calls the tool and ends its turn on {r['tool_call_and_end']:.0%} ± {r['tool_se']:.0%} of {r['n']} held-out arithmetic problems; right answer {r['correct']:.0%} ± {r['correct_se']:.0%}")
PY

echo "== chat eval: base, then SFT ($CHAT_ITEMS items per task; the second table shows both stages)"
lmlit chat-eval --run "$NAME" --stage base --tasks "$CHAT_TASKS" --max-per-task "$CHAT_ITEMS" --max-tokens 48
lmlit chat-eval --run "$NAME" --stage sft --tasks "$CHAT_TASKS" --max-per-task "$CHAT_ITEMS" --max-tokens 48

echo "== RL on arithmetic word problems (runs/$NAME/rl/: held-out pass@1 / pass@4 before and after, plots/reward.png)"
lmlit rl --run "$NAME" "${RL[@]}"
lmlit chat-eval --run "$NAME" --stage rl --tasks "$CHAT_TASKS" --max-per-task "$CHAT_ITEMS" --max-tokens 48

echo "== chat: one question to the latest stage"
lmlit chat --run "$NAME" -p "What is 12 + 30?" --max-tokens 32 --temperature 0

echo "== samples (runs/$NAME/samples.md)"; tail -n 8 "$RUNS/$NAME/samples.md"
echo "== report";    lmlit report --run "$NAME"
echo "== plots";     ls "$RUNS/$NAME/plots/"
if python3 -c "import lmlit.export, transformers" 2>/dev/null; then
  echo "== export: the RL model as a transformers folder (AutoModelForCausalLM.from_pretrained('$RUNS/$NAME/hf/rl'))"
  lmlit export --run "$NAME" --dtype float32
else
  echo "== export: skipped (pip install 'lmlit[hf]' for lmlit export)"
fi
echo "done in $(( $(date +%s) - START )) s: $RUNS/$NAME (metrics.jsonl, plots/, samples.md, notebooks/05_train.rank0.ipynb, checkpoints/, sft/, rl/, eval/chat.md, report.md)"
