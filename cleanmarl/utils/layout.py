"""The run directory: the contract between the scripts, cleanmarl.sweep and cleanmarl.report.

    runs/{env_name}__{exp_name}__{seed}__{unix time}/   one run (-2, -3, ... when the name is taken)
        events.out.tfevents.*             TensorBoard: train/*, rollout/*, eval/*, charts/SPS
        evaluations.jsonl                 one JSON object a line, an evaluation each:
                                          step, time, elapsed (s), returns, lengths[, battle_won]
        training_state.cleanmarl          everything --resume needs (networks, buffer, RNGs, loop)
        {exp_name}.cleanmarl_model        --save-model: the latest checkpoint
        models.json                       {"latest": {path, step},
                                           "best": {path, step, score, metric}}
        best/{exp_name}.cleanmarl_model   the best checkpoint (checkpoints.keep_best)
        best/{exp_name}.eval.json         its re-evaluation by --eval-only (the absolute metric)
        videos/eval_step_{step}.mp4       --capture-video

Every file is written whole or not at all (write, then rename): a kill leaves the previous one."""

import contextlib
import itertools
import json
import os
import sys
import time

import numpy as np
import torch

STATE_FILE = "training_state.cleanmarl"
EVAL_FILE = "evaluations.jsonl"
MODELS_FILE = "models.json"
# a sweep combination's (and the results store's) copy of the best checkpoint's re-evaluation: a
# later --eval-only of that checkpoint (e.g. for a video) rewrites only the file beside it
ABSOLUTE_FILE = "absolute.json"
BEST_DIR = "best"
VIDEO_DIR = "videos"
MODEL_SUFFIX = ".cleanmarl_model"


def reevaluation_file(checkpoint):
    """Where --eval-only writes a checkpoint's episodes: <name>.eval.json beside it."""
    return str(checkpoint).removesuffix(MODEL_SUFFIX) + ".eval.json"


def run_name(env_name, exp_name, seed):
    """{env_name}__{exp_name}__{seed}__{unix time}, the env name made a file name."""
    return f"{env_name.replace(':', '_').replace('/', '_')}__{exp_name}__{seed}__{int(time.time())}"


def make_run_dir(name, root="runs"):
    """Create root/name, or root/name-2, -3, ... when taken: os.mkdir is atomic, so two runs started
    in the same second never share a directory."""
    os.makedirs(root, exist_ok=True)
    for i in itertools.count(1):
        with contextlib.suppress(FileExistsError):
            os.mkdir(run_dir := os.path.join(root, name + (f"-{i}" if i > 1 else "")))
            return run_dir


def warn(message, file=None):
    """One warning line, named by the script."""
    print(f"{os.path.basename(sys.argv[0])}: warning: {message}", file=file, flush=True)


def atomic_save(obj, path):
    """torch.save to path.tmp, synced, renamed over path. Where it cannot be written (disk full): a
    warning line, the previous file kept. -> whether it was saved"""
    try:
        with open(path + ".tmp", "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        warn(
            f"could not write {path} ({e.strerror or e}): the previous one is kept; the run goes on"
        )
        return False
    return True


def read_json(path):
    """The JSON object in path; {} when there is none."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def write_json(obj, path):
    """json.dump to path.tmp, then renamed over path."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def read_records(path):
    """The evaluation records in path (EVAL_FILE), oldest first; [] when there is none. A partial
    last line (a kill mid-write, a full disk) is left out with a warning."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
            warn(f"{path}: its last line is partial (a write was cut short): left out")
    return records


def write_records(records, path):
    """Rewrite EVAL_FILE with `records` (write, then rename)."""
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(path + ".tmp", path)


def evaluation_score(record):
    """An evaluation's score (the best checkpoint's, --stop-at's): the win rate where the env
    reports battles, else the mean return. -> (score, metric name)"""
    if "battle_won" in record:
        return float(np.mean(record["battle_won"])), "battle_won"
    return float(np.mean(record["returns"])), "return"
