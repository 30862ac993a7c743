"""A run's charts/* scalars (steps/s, the workers' busy share, the learner's waiting share) from its
TensorBoard events, as JSON for the results store: tag -> [[step, value], ...].

    python benchmarks/charts.py RUN_DIR OUT.json
"""

import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

if __name__ == "__main__":
    run_dir, out = sys.argv[1:3]
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})  # 0: every point
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("charts/")]
    charts = {t: [[e.step, round(e.value, 4)] for e in events.Scalars(t)] for t in tags}
    Path(out).write_text(json.dumps(charts, separators=(",", ":")) + "\n")
