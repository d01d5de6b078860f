#!/usr/bin/env bash
# Qwen2-VL-2B-Instruct, full fine-tuning on new multimodal data, with the model's own language model at the
# start of training as the teacher (a frozen copy): guards language ability while it learns the new task.
# Runs from any folder after `pip install swift-lingudistill` (plus `pip install qwen_vl_utils flash-attn`).
# GPU memory (estimate): the frozen bf16 copy of the 1.5e9-parameter language model (3 GB) next to the student's
# weights, gradients and Adam states (2.2e9 params x 8 bytes in bf16 = 18 GB; x 16 bytes with float32 Adam states
# and master weights = 35 GB) plus activations: a 40 GB card; --deepspeed zero2 shards the states over several.
set -euo pipefail

export LINGUDISTILL_CONFIG=${LINGUDISTILL_CONFIG:-self_teacher}  # a shipped config, or a path to your own YAML
export MAX_PIXELS=${MAX_PIXELS:-1003520}  # at most 1280 image tokens per image

swift sft \
  --model Qwen/Qwen2-VL-2B-Instruct \
  --dataset my_data.jsonl \
  --tuner_type full \
  --torch_dtype bfloat16 \
  --attn_impl flash_attn \
  --per_device_train_batch_size 2 \
  --gradient_accumulation_steps 8 \
  --learning_rate 1e-5 \
  --num_train_epochs 1 \
  --save_total_limit 2 \
  --output_dir output/qwen2_vl_2b_self_teacher \
  --external_plugins "$(python -m swift_lingudistill plugin-path)" \
  --loss_type lingudistill
