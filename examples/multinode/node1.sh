#!/usr/bin/env bash
# Node 1 of two: MASTER_ADDR is node 0's address.
set -euo pipefail
NODE_RANK=1 MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to node 0\'s address} \
  exec bash "$(dirname "$0")/train.sh" "$@"
