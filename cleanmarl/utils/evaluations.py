"""Evaluation records: every evaluation's episodes in evaluations.jsonl (the protocol's statistics
need the episodes, not TensorBoard's mean: Gorsane et al., 2022), and --eval-only's summary."""

import os
import time

import numpy as np

from cleanmarl.utils.checkpoints import keep_best
from cleanmarl.utils.layout import (
    EVAL_FILE,
    MODEL_SUFFIX,
    append_records,
    read_records,
    reevaluation_file,
    saved,
    write_json,
    write_records,
)
from cleanmarl.utils.video import write_video


def record_evaluation(run_dir, step, elapsed, returns, lengths, won=None, unwritten=()):
    """Append an evaluation at env step `step` (`elapsed`: the run's own seconds so far, over its
    resumes) to run_dir/evaluations.jsonl, after the records of `unwritten` (earlier ones a failed
    write kept back). -> the records still unwritten: none, or all of them with one warning line"""
    record = dict(step=int(step), time=time.time(), elapsed=round(elapsed, 3))
    record.update(returns=[float(r) for r in returns], lengths=[int(n) for n in lengths])
    if won is not None:
        record["battle_won"] = [float(w) for w in won]
    records = [*unwritten, record]
    path = os.path.join(run_dir, EVAL_FILE)
    if not saved(path, lambda: append_records(records, path)):
        return records  # the next evaluation writes them first
    keep_best(run_dir)
    return []


def episode_results(episodes):
    """A script's episodes (run_episode's: steps as name -> [T, ...], return, info each) -> their
    returns, lengths and battle_won (SMAClite's; else None)."""
    steps, returns, infos = zip(*episodes, strict=True)
    lengths = [len(episode["reward"]) for episode in steps]
    won = [info["battle_won"] for info in infos] if "battle_won" in infos[0] else None
    return returns, lengths, won


def purge_records(run_dir, step):
    """Keep the records up to env step `step` (a resumed run's saved state): the later ones are
    logged again."""
    path = os.path.join(run_dir, EVAL_FILE)
    if os.path.exists(path):
        try:
            write_records([r for r in read_records(path) if r["step"] <= step], path)
        except OSError as e:  # its later records would be logged twice
            raise ValueError(f"cannot rewrite {path} ({e.strerror or e})") from None


def print_evaluation(checkpoint, env, episodes):
    """--eval-only's summary line of its episodes (episode_results); they are also written next to
    the checkpoint, in <name>.eval.json (for a best checkpoint, the absolute metric that
    cleanmarl.report reads), and the video env recorded, in <name>.mp4."""
    returns, lengths, won = episode_results(episodes)
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
    path = reevaluation_file(checkpoint)
    saved(path, lambda: write_json(record, path))  # else: the line above is the result
    if frames := env.take_frames():
        video = checkpoint.removesuffix(MODEL_SUFFIX)
        saved(video, lambda: print(f"video: {write_video(frames, video)}"))
