#!/usr/bin/env bash
# Qwen2-VL-2B-Instruct, full fine-tuning on new multimodal data, with the model's own language model at the
# start of training as the teacher (a frozen copy): guards language ability while it learns the new task.
set -euo pipefail

export LINGUDISTILL_CONFIG=plugin_configs/self_teacher.yaml

swift sft \
  --model Qwen/Qwen2-VL-2B-Instruct \
  --dataset my_data.jsonl \
  --tuner_type full \
  --torch_dtype bfloat16 \
  --per_device_train_batch_size 2 \
  --gradient_accumulation_steps 8 \
  --learning_rate 1e-5 \
  --num_train_epochs 1 \
  --output_dir output/qwen2_vl_2b_self_teacher \
  --external_plugins "$(python -m swift_lingudistill plugin-path)" \
  --loss_type lingudistill
