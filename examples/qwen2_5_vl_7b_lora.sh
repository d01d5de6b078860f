#!/usr/bin/env bash
# Qwen2.5-VL-7B-Instruct, LoRA, selective LinguDistill with its original LM (Qwen2.5-7B-Instruct) as teacher.
# Runs from any folder after `pip install swift-lingudistill` (plus `pip install qwen_vl_utils flash-attn`, which
# swift's Qwen2.5-VL template and --attn_impl flash_attn need). Model ids are swift's default hub (ModelScope); the
# Qwen ids are the same on Hugging Face (add USE_HF=1 to download from there).
# Your own data: swift's messages + images JSONL; rows may carry `distill: true/false` or a `category`.
# Check how your data will be tagged first:
#   python -m swift_lingudistill tag-report selective --dataset my_data.jsonl
#
# GPU memory (estimate, one GPU, bf16, batch 1, 4096 tokens, gradient checkpointing on as swift's default):
#   student weights  8.3e9 params x 2 bytes = 16.6 GB   (Qwen2.5-VL-7B: 7.6e9 LM + 0.7e9 vision)
#   teacher weights  7.6e9 params x 2 bytes = 15.2 GB   (Qwen2.5-7B; teacher.dtype auto = the student's bf16)
#   LoRA rank 8 on the LM's linear layers: 2.0e7 params x 16 bytes (weights, grads, Adam) = 0.3 GB
#   activations ~3 GB: checkpointed layer inputs 28 x 4096 x 3584 x 2 bytes = 0.8 GB, one layer's recompute
#   ~0.5 GB, the supervised positions' logits (bf16, 152064 columns), the captured K/V 28 x 2 x 4096 x 512 x 2 bytes
#   = 0.2 GB; the loss works in row chunks (no float32 [tokens x vocab] copy)
#   total ~35 GB: fits a 40 GB card at this length, comfortably an 80 GB one. `teacher.offload: true` in the plugin
#   config moves the teacher's 15.2 GB to CPU memory (~20 GB on the GPU, slower steps); `teacher: self` (the
#   self_teacher config) needs no teacher weights with LoRA at all.
set -euo pipefail

export LINGUDISTILL_CONFIG=${LINGUDISTILL_CONFIG:-selective}  # a shipped config, or a path to your own YAML
export LINGUDISTILL_TEACHER=${LINGUDISTILL_TEACHER:-Qwen/Qwen2.5-7B-Instruct}
export MAX_PIXELS=${MAX_PIXELS:-1003520}  # at most 1280 image tokens per image (1280 x 28 x 28 pixels)

swift sft \
  --model Qwen/Qwen2.5-VL-7B-Instruct \
  --dataset my_data.jsonl \
  --tuner_type lora \
  --torch_dtype bfloat16 \
  --attn_impl flash_attn \
  --per_device_train_batch_size 1 \
  --gradient_accumulation_steps 16 \
  --learning_rate 1e-4 \
  --num_train_epochs 1 \
  --max_length 4096 \
  --save_total_limit 2 \
  --output_dir output/qwen2_5_vl_7b_lingudistill \
  --external_plugins "$(python -m swift_lingudistill plugin-path)" \
  --loss_type lingudistill
