"""Evaluation records: every evaluation's episodes in evaluations.jsonl (the protocol's statistics
need the episodes, not TensorBoard's mean: Gorsane et al., 2022), its eval/* scalars, and
--eval-only's summary."""

import json
import os
import time

import numpy as np

from cleanmarl.utils.checkpoints import keep_best
from cleanmarl.utils.layout import (
    EVAL_FILE,
    MODEL_SUFFIX,
    VIDEO_DIR,
    read_records,
    reevaluation_file,
    warn,
    write_json,
    write_records,
)
from cleanmarl.utils.video import write_video


def record_evaluation(run_dir, step, elapsed, returns, lengths, won=None, writer=None, env=None):
    """Append an evaluation at env step `step` (`elapsed`: the run's own seconds so far, over its
    resumes) to run_dir/evaluations.jsonl; with a writer, log its eval/* scalars; with an env that
    recorded an episode (--capture-video), write its video. -> the mean return"""
    record = dict(step=int(step), time=time.time(), elapsed=round(elapsed, 3))
    record.update(returns=[float(r) for r in returns], lengths=[int(n) for n in lengths])
    if won is not None:
        record["battle_won"] = [float(w) for w in won]
    with open(os.path.join(run_dir, EVAL_FILE), "a") as f:
        f.write(json.dumps(record) + "\n")
    keep_best(run_dir)
    if writer is not None:
        writer.add_scalar("eval/ep_reward", np.mean(returns), step)
        writer.add_scalar("eval/std_ep_reward", np.std(returns), step)
        writer.add_scalar("eval/ep_length", np.mean(lengths), step)
        if won is not None:
            writer.add_scalar("eval/battle_won", np.mean(won), step)
    if env is not None and (frames := env.take_frames()):
        write_video(
            frames, os.path.join(run_dir, VIDEO_DIR, f"eval_step_{int(step)}"), writer, step
        )
    return float(np.mean(returns))


def purge_records(run_dir, step):
    """Keep the records up to env step `step` (a resumed run's saved state): the later ones are
    logged again."""
    path = os.path.join(run_dir, EVAL_FILE)
    if os.path.exists(path):
        write_records([r for r in read_records(path) if r["step"] <= step], path)


def print_evaluation(checkpoint, env, returns, lengths, won):
    """--eval-only's summary line; its episodes are also written next to the checkpoint, in
    <name>.eval.json (for a best checkpoint, the absolute metric that cleanmarl.report reads), and
    the video env recorded, in <name>.mp4."""
    summary = (
        f"eval over {len(returns)} episodes: return {np.mean(returns):.3f} +- {np.std(returns):.3f}"
    )
    print(
        summary
        + f", length {np.mean(lengths):.1f}"
        + (f", battle_won {np.mean(won):.2f}" if won else "")
    )
    record = dict(checkpoint=os.path.basename(checkpoint), returns=[float(r) for r in returns])
    record["lengths"] = [int(n) for n in lengths]
    if won:
        record["battle_won"] = [float(w) for w in won]
    try:
        write_json(record, reevaluation_file(checkpoint))
    except OSError as e:  # a read-only folder: the line above is the result
        warn(f"could not write the episodes next to {checkpoint} ({e})")
    if frames := env.take_frames():
        print(f"video: {write_video(frames, checkpoint.removesuffix(MODEL_SUFFIX))}")
