#!/usr/bin/env bash
# The README's first command (`make demo`): build a tiny VLM, its teacher and a mixed dataset locally (seconds,
# nothing downloaded), then train with the real `swift sft` and LinguDistill's selective config.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
SWIFT=${SWIFT:-swift}
ASSETS=${ASSETS:-demo_assets}
OUTPUT=${OUTPUT:-output/demo}

# Offline: the tiny models and data are local; nothing may reach a hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 USE_HF=1

if [ ! -f "$ASSETS/data/demo.jsonl" ]; then
  echo "== building the demo's tiny models and data in $ASSETS/"
  "$PYTHON" -m swift_lingudistill build-demo --out "$ASSETS"
fi

echo "== how selective.yaml tags the demo data (no training yet)"
LINGUDISTILL_TEACHER="$ASSETS/original_lm" "$PYTHON" -m swift_lingudistill tag-report \
  --config plugin_configs/selective.yaml --dataset "$ASSETS/data/demo.jsonl" 2>/dev/null

echo "== swift sft with --loss_type lingudistill (teacher: $ASSETS/original_lm)"
# The two plugin flags are the last two lines; the rest is an ordinary CPU `swift sft` command.
export LINGUDISTILL_TEACHER="$ASSETS/original_lm"
export LINGUDISTILL_CONFIG=plugin_configs/selective.yaml
LOG="$ASSETS/last_demo.log"
set +e
"$SWIFT" sft \
  --model "$ASSETS/degraded_vlm" --model_type qwen2_5_vl --template qwen2_5_vl \
  --dataset "$ASSETS/data/demo.jsonl" --tuner_type lora --use_hf true --check_model false \
  --torch_dtype float32 --fp16 false --bf16 false \
  --per_device_train_batch_size 2 --gradient_accumulation_steps 1 --max_steps 12 --learning_rate 1e-3 \
  --logging_steps 2 --save_steps 12 --split_dataset_ratio 0 --dataloader_num_workers 0 --report_to tensorboard \
  --output_dir "$OUTPUT" \
  --external_plugins "$("$PYTHON" -m swift_lingudistill plugin-path)" \
  --loss_type lingudistill 2>&1 | tee "$LOG" | tr '\r' '\n' \
  | grep -E "^\[INFO:swift\] (LinguDistill|last_model_checkpoint)|^ *\{'loss'|Traceback|Error: "
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "== swift sft failed (exit $status); the full log is in $LOG" >&2
  exit "$status"
fi
run_dir=$(sed -n "s/.*The logging file will be saved in: \(.*\)\/logging.jsonl.*/\1/p" "$LOG" | tail -n 1)
echo "== done. Output: $run_dir"
echo "   logging.jsonl (ce_loss, kd_loss, distill_frac per step), args.json, lingudistill_config.yaml,"
echo "   the LoRA checkpoint (checkpoint-12) and tensorboard events under runs/. Full log: $LOG"
