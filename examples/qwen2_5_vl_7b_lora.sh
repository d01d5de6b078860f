#!/usr/bin/env bash
# Qwen2.5-VL-7B-Instruct, LoRA, selective LinguDistill with its original LM (Qwen2.5-7B-Instruct) as teacher.
# Your own data: swift's messages + images JSONL; rows may carry `distill: true/false` or a `category`.
# Check how your data will be tagged first:
#   python -m swift_lingudistill tag-report --config plugin_configs/selective.yaml --dataset my_data.jsonl
set -euo pipefail

export LINGUDISTILL_CONFIG=plugin_configs/selective.yaml
export LINGUDISTILL_TEACHER=Qwen/Qwen2.5-7B-Instruct

swift sft \
  --model Qwen/Qwen2.5-VL-7B-Instruct \
  --dataset my_data.jsonl \
  --tuner_type lora \
  --torch_dtype bfloat16 \
  --per_device_train_batch_size 1 \
  --gradient_accumulation_steps 16 \
  --learning_rate 1e-4 \
  --num_train_epochs 1 \
  --max_length 4096 \
  --output_dir output/qwen2_5_vl_7b_lingudistill \
  --external_plugins "$(python -m swift_lingudistill plugin-path)" \
  --loss_type lingudistill
