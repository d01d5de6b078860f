#!/usr/bin/env bash
# Language retention on real benchmarks, before and after multimodal fine-tuning, plain `swift sft` vs LinguDistill.
# For GPUs and real checkpoints (it cannot run on the project's CPU machine); every flag below is checked against
# the installed ms-swift by tests/e2e/test_eval_recipe.py. Runs from any folder after `pip install`. Read
# examples/eval/README.md first.
#
#   STUDENT=Qwen/Qwen2.5-VL-7B-Instruct TEACHER=Qwen/Qwen2.5-7B-Instruct DATA=my_data.jsonl SEED=1 \
#     bash examples/eval/retention.sh
set -euo pipefail

STUDENT=${STUDENT:-Qwen/Qwen2.5-VL-7B-Instruct}  # the VLM you fine-tune
TEACHER=${TEACHER:-Qwen/Qwen2.5-7B-Instruct}     # the text-only LM it was built from
DATA=${DATA:?set DATA to your fine-tuning JSONL (swift messages format, with a category field per row)}
SEED=${SEED:-1}                                  # run 3 or more seeds: one seed per arm is an anecdote
OUT=${OUT:-output/retention}
LIMIT=${LIMIT:-}                                 # e.g. 500 rows per benchmark for a quick look; empty = all
TEXT_BENCHMARKS=${TEXT_BENCHMARKS:-"arc hellaswag mmlu"}   # text only: the language the paper says is lost
MM_BENCHMARKS=${MM_BENCHMARKS:-"science_qa ai2d docvqa"}   # language-heavy multimodal, and a document task
PLUGIN="$(python -m swift_lingudistill plugin-path)"
LIMIT_FLAG=()
if [ -n "$LIMIT" ]; then LIMIT_FLAG=(--eval_limit "$LIMIT"); fi

evaluate() {  # evaluate NAME MODEL BENCHMARKS...: swift eval (EvalScope's Native backend) on a vLLM engine
  local name=$1 model=$2
  shift 2
  # shellcheck disable=SC2068
  swift eval \
    --model "$model" \
    --eval_backend Native \
    --eval_dataset $@ \
    --infer_backend vllm \
    --eval_generation_config '{"max_new_tokens": 512, "temperature": 0}' \
    --eval_num_proc 32 \
    --eval_output_dir "$OUT/eval/$name" \
    "${LIMIT_FLAG[@]}"
}

merge() {  # merge CHECKPOINT: the LoRA adapters folded into the weights (<checkpoint>-merged), for vLLM
  swift export \
    --adapters "$1" \
    --merge_lora true
}

last_checkpoint() { ls -d "$1"/v*/checkpoint-* | sort -t- -k2 -n | tail -n 1; }

# 1. Reference points: the original LM (text) and the VLM before fine-tuning (text and multimodal).
evaluate teacher "$TEACHER" $TEXT_BENCHMARKS
evaluate student_before "$STUDENT" $TEXT_BENCHMARKS $MM_BENCHMARKS

# 2. Fine-tune twice on the same data, seed and schedule: plain, then the same command plus the plugin.
swift sft \
  --model "$STUDENT" \
  --dataset "$DATA" \
  --tuner_type lora \
  --torch_dtype bfloat16 \
  --num_train_epochs 1 \
  --per_device_train_batch_size 4 \
  --gradient_accumulation_steps 4 \
  --learning_rate 1e-4 \
  --seed "$SEED" \
  --data_seed "$SEED" \
  --output_dir "$OUT/seed$SEED/plain"
LINGUDISTILL_CONFIG=selective LINGUDISTILL_TEACHER="$TEACHER" \
swift sft \
  --model "$STUDENT" \
  --dataset "$DATA" \
  --tuner_type lora \
  --torch_dtype bfloat16 \
  --num_train_epochs 1 \
  --per_device_train_batch_size 4 \
  --gradient_accumulation_steps 4 \
  --learning_rate 1e-4 \
  --seed "$SEED" \
  --data_seed "$SEED" \
  --output_dir "$OUT/seed$SEED/lingudistill" \
  --external_plugins "$PLUGIN" \
  --loss_type lingudistill

# 3. The same evaluations after each.
for arm in plain lingudistill; do
  checkpoint=$(last_checkpoint "$OUT/seed$SEED/$arm")
  merge "$checkpoint"
  evaluate "seed$SEED-$arm" "$checkpoint-merged" $TEXT_BENCHMARKS $MM_BENCHMARKS
done
echo "Results under $OUT/eval/: compare each benchmark before -> plain -> lingudistill, paired by seed."
