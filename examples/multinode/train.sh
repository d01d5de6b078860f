#!/usr/bin/env bash
# Launch one node of a multi-node LinguDistill run with swift's own launcher variables. Run it on every node:
#   node 0:  NODE_RANK=0 MASTER_ADDR=<node 0's address> bash train.sh
#   node 1:  NODE_RANK=1 MASTER_ADDR=<node 0's address> bash train.sh
# The settings live in sft.yaml next to this script (its ENV block names the plugin config); flags given here
# after the script's name override the YAML's, e.g. `bash train.sh --dataset other.jsonl`. Relative paths in
# the YAML (dataset, output_dir) are relative to the folder you run it from.
set -euo pipefail

export NNODES=${NNODES:-2}
export NODE_RANK=${NODE_RANK:?set NODE_RANK to this node\'s index, 0 to NNODES-1}
export MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to node 0\'s address, the same on every node}
export MASTER_PORT=${MASTER_PORT:-29500}
export NPROC_PER_NODE=${NPROC_PER_NODE:-8}
CONFIG=${SWIFT_CONFIG:-"$(dirname "$0")/sft.yaml"}
PLUGIN=$("${PYTHON:-python}" -m swift_lingudistill plugin-path)

echo "node $NODE_RANK of $NNODES: $NPROC_PER_NODE processes, master $MASTER_ADDR:$MASTER_PORT, config $CONFIG"
exec "${SWIFT:-swift}" sft "$CONFIG" --external_plugins "$PLUGIN" "$@"
