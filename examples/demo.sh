#!/usr/bin/env bash
# The README's first command (`make demo`): one unit of the evidence experiment (examples/evidence) through the
# real `swift sft`. Builds an original LM that knows facts, a VLM made from it and degraded by vision-only
# fine-tuning (in process, about 1.5 minutes, nothing downloaded), shows how selective.yaml tags the recovery rows,
# recovers with plain `swift sft` and with `--loss_type lingudistill`, then scores language and vision.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
SWIFT=${SWIFT:-swift}
ASSETS=${ASSETS:-demo_assets}
OUTPUT=${OUTPUT:-output/demo}

# Offline: the tiny models and data are local; nothing may reach a hub. One thread per process (tiny models).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 USE_HF=1
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

echo "== 1/4 one unit's models: original LM (the teacher), VLM built from it, aligned, then degraded"
"$PYTHON" examples/evidence/demo.py prepare --out "$ASSETS" 2>&1 | grep -E "^\[build|^   gate|Error|Traceback"
read -r STEPS BATCH LR WARMUP < <("$PYTHON" -c "import json; d = json.load(open('$ASSETS/demo.json')); \
print(d['steps'], d['batch_size'], d['lr'], d['warmup_ratio'])")

echo "== 2/4 how selective.yaml tags the recovery rows (no training yet)"
LINGUDISTILL_TEACHER="$ASSETS/original_lm" "$PYTHON" -m swift_lingudistill tag-report \
  selective --dataset "$ASSETS/data/recovery.jsonl" 2>/dev/null

PLUGIN="$("$PYTHON" -m swift_lingudistill plugin-path)"
TEMPLATE_PLUGIN=examples/evidence/swift_plugin.py  # registers the tiny models' template (small token ids)

recover() {  # recover NAME [extra swift flags...]: the same rows, order, steps and seed for both runs
  local name=$1
  shift
  mkdir -p "$OUTPUT"
  "$SWIFT" sft \
    --model "$ASSETS/degraded_vlm" --model_type qwen2_5_vl --template evidence_qwen2_5_vl \
    --dataset "$ASSETS/data/recovery.jsonl" --dataset_shuffle false --train_dataloader_shuffle false \
    --tuner_type full --torch_dtype float32 --fp16 false --bf16 false --use_hf true --check_model false \
    --per_device_train_batch_size "$BATCH" --gradient_accumulation_steps 1 --max_steps "$STEPS" \
    --learning_rate "$LR" --warmup_ratio "$WARMUP" --logging_steps 20 --save_steps "$STEPS" --save_only_model true \
    --split_dataset_ratio 0 --dataloader_num_workers 0 --report_to none --output_dir "$OUTPUT/$name" \
    "$@" > "$OUTPUT/$name.log" 2>&1
}
show() {  # swift's own log lines of a run: the plugin's and the loss records (ce_loss, kd_loss, distill_frac)
  tr '\r' '\n' < "$OUTPUT/$1.log" | grep -E "^\[INFO:swift\] LinguDistill|^ *\{'loss'|Traceback|Error: " \
    | sed "s/, .token_acc.*/}/"
}

echo "== 3/4 recovery, $STEPS steps of $BATCH rows, both runs at once (one core each): (a) plain swift sft and"
echo "   (b) the same command plus --external_plugins and --loss_type lingudistill with selective.yaml"
recover plain --external_plugins "$TEMPLATE_PLUGIN" &
plain_pid=$!
LINGUDISTILL_CONFIG=selective LINGUDISTILL_TEACHER="$ASSETS/original_lm" \
  recover selective --external_plugins "$PLUGIN" "$TEMPLATE_PLUGIN" --loss_type lingudistill &
selective_pid=$!
for run in plain selective; do
  pid_var="${run}_pid"
  if ! wait "${!pid_var}"; then
    echo "== swift sft ($run) failed; the full log is in $OUTPUT/$run.log" >&2
    tail -n 20 "$OUTPUT/$run.log" >&2
    exit 1
  fi
done
echo "-- (a) plain swift sft"
show plain
echo "-- (b) swift sft --loss_type lingudistill"
show selective

checkpoint() { ls -d "$OUTPUT/$1"/v*/checkpoint-"$STEPS" | tail -n 1; }
echo "== 4/4 accuracy before and after recovery (held-out facts: in no recovery row)"
"$PYTHON" examples/evidence/demo.py score --out "$ASSETS" \
  --run "(a) plain swift sft=$(checkpoint plain)" --run "(b) selective LinguDistill=$(checkpoint selective)" 2>/dev/null
echo "One unit is an anecdote: the paired table over 8 units with confidence intervals, the gate and every"
echo "control arm is in examples/evidence/README.md ('make evidence' reruns it: 24 minutes of CPU over two cores)."
