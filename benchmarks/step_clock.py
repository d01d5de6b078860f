"""swift plugin for the benchmarks (``--external_plugins step_clock.py --callbacks step_clock``): every optimizer
step's wall and CPU seconds (all threads of the process), appended to the JSONL file ``$STEP_CLOCK_LOG``."""

from __future__ import annotations

import json
import os
import time

from swift.callbacks import TrainerCallback, callbacks_map


class StepClock(TrainerCallback):
    """One record per step: wall seconds and process CPU seconds since the previous step ended."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        now = (time.perf_counter(), time.process_time())
        wall, cpu = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        with open(os.environ["STEP_CLOCK_LOG"], "a") as f:
            f.write(json.dumps({"step": state.global_step, "wall": wall, "cpu": cpu}) + "\n")


callbacks_map["step_clock"] = StepClock
