#!/usr/bin/env bash
# Launch one node of a multi-node LinguDistill run with swift's own launcher variables. Run it on every node:
#   node 0:  NODE_RANK=0 MASTER_ADDR=<node 0's address> bash examples/multinode/train.sh
#   node 1:  NODE_RANK=1 MASTER_ADDR=<node 0's address> bash examples/multinode/train.sh
# The settings live in examples/multinode/sft.yaml (its ENV block names the plugin config); flags given here
# after the script's name override the YAML's, e.g. `bash examples/multinode/train.sh --dataset other.jsonl`.
set -euo pipefail
cd "$(dirname "$0")/../.."

export NNODES=${NNODES:-2}
export NODE_RANK=${NODE_RANK:?set NODE_RANK to this node\'s index, 0 to NNODES-1}
export MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to node 0\'s address, the same on every node}
export MASTER_PORT=${MASTER_PORT:-29500}
export NPROC_PER_NODE=${NPROC_PER_NODE:-8}
CONFIG=${SWIFT_CONFIG:-examples/multinode/sft.yaml}

echo "node $NODE_RANK of $NNODES: $NPROC_PER_NODE processes, master $MASTER_ADDR:$MASTER_PORT, config $CONFIG"
exec "${SWIFT:-swift}" sft "$CONFIG" "$@"
