#!/usr/bin/env bash
# Node 0 of two (it hosts the rendezvous): MASTER_ADDR is this machine's address as the other node sees it.
set -euo pipefail
NODE_RANK=0 MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to this node\'s address} \
  exec bash "$(dirname "$0")/train.sh" "$@"
