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

Every file is written whole or not at all (write, then rename): a kill or a full disk leaves the
previous one. A name read from a run's files (models.json, the training state) is data: it must
stay inside the run directory (guard.inside), else the whole load is refused."""

import contextlib
import itertools
import json
import math
import os
import sys
import time
import types
import typing

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
WRITE_ERRORS = (OSError, RuntimeError)  # RuntimeError: torch.save's zip writer on a full disk


def reevaluation_file(checkpoint):
    """Where --eval-only writes a checkpoint's episodes: <name>.eval.json beside it."""
    return str(checkpoint).removesuffix(MODEL_SUFFIX) + ".eval.json"


def run_name(env_name, exp_name, seed):
    """{env_name}__{exp_name}__{seed}__{unix time}, the env name made a file name."""
    return f"{env_name.replace(':', '_').replace('/', '_')}__{exp_name}__{seed}__{int(time.time())}"


def make_run_dir(name, root="runs"):
    """Create root/name, or root/name-2, -3, ... when taken: os.mkdir is atomic, so two runs started
    in the same second never share a directory. Raises ValueError (one line)."""
    try:
        os.makedirs(root, exist_ok=True)
        for i in itertools.count(1):
            with contextlib.suppress(FileExistsError):
                os.mkdir(run_dir := os.path.join(root, name + (f"-{i}" if i > 1 else "")))
                return run_dir
    except OSError as e:
        raise ValueError(f"cannot make a run directory in {root!r} ({e.strerror or e})") from None


def warn(message, file=None):
    """One warning line, named by the script."""
    print(f"{os.path.basename(sys.argv[0])}: warning: {message}", file=file, flush=True)


def replace_with(write, path, mode="w"):
    """write(f) into path.tmp, synced, then renamed over path: a reader sees the old file or the
    new one, whole. On an error the temporary file is removed and the error raised."""
    try:
        with open(path + ".tmp", mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        raise


def saved(path, write):
    """write() of a run's file at path; where it fails (a full disk, a read-only folder): one
    warning line, the previous file kept, and the run goes on. -> whether it was written"""
    try:
        write()
    except WRITE_ERRORS as e:
        reason = getattr(e, "strerror", None) or "torch.save's writer failed, as on a full disk"
        warn(f"could not write {path} ({reason}): the previous one is kept; the run goes on")
        return False
    return True


def atomic_save(obj, path):
    """torch.save to path, written whole (replace_with); a failure is one warning line, the
    previous file kept. -> whether it was saved"""
    return saved(path, lambda: replace_with(lambda f: torch.save(obj, f), path, "wb"))


def read_json(path):
    """The JSON object in path; {} when there is none. ValueError (one line) where it is no JSON
    object."""
    try:
        with open(path, "rb") as f:
            found = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (ValueError, OSError, RecursionError) as e:  # JSON nested too deep: RecursionError
        raise ValueError(f"{path} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path} is not a JSON object")
    return found


def write_json(obj, path):
    """json.dump to path, written whole (replace_with)."""
    replace_with(lambda f: json.dump(obj, f, indent=1), str(path))


def read_records(path, check=True):
    """The evaluation records in path (EVAL_FILE), oldest first; [] when there is none. A partial
    last line (a kill mid-write, a full disk) is left out with a warning. ValueError (one line)
    for a damaged line, or (check) one that is no evaluation record (record_problem)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode().split("\n")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte {e.start})") from None
    if lines[-1] == "":  # the file ends with its last record's newline
        lines.pop()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except RecursionError:  # nested too deep: no record
            raise ValueError(f"{path}: line {i + 1} is no evaluation record (nested)") from None
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
            warn(f"{path}: its last line is partial (a write was cut short): left out")
            continue
        if check and (problem := record_problem(records[-1])):
            raise ValueError(f"{path}: line {i + 1} is no evaluation record ({problem})")
    return records


def record_problem(record):
    """What makes `record` no evaluation record (an env step, and a list of its episodes' returns;
    lengths and battle_won, where there, lists too), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return "no env step"
    for key in ("returns", "lengths", "battle_won"):
        if key not in record and key != "returns":
            continue
        value = record.get(key)
        if not isinstance(value, list) or not value or not all(map(is_number, value)):
            return f"no list of numbers under {key!r}"
    return None


def write_records(records, path):
    """Rewrite EVAL_FILE with `records`, written whole (replace_with)."""
    replace_with(lambda f: f.writelines(json.dumps(r) + "\n" for r in records), str(path))


def append_records(records, path):
    """Append records to EVAL_FILE; where the write fails the file is cut back to what it was (no
    partial line) and the error raised. Unbuffered: nothing is left to be written at close."""
    data = memoryview("".join(json.dumps(r) + "\n" for r in records).encode())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data) :]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def of_type(value, kind):
    """Whether a value read from a file is of a dataclass field's annotated kind (int, float, str,
    bool, list, dict, Literal[...], X | None); a float field takes an int (JSON writes 1.0 as 1)."""
    if typing.get_origin(kind) is typing.Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(kind))
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(of_type(value, k) for k in typing.get_args(kind))
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind if isinstance(kind, type) else object)


def is_number(value):
    """A finite int or float of JSON (a bool is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def evaluation_score(record):
    """An evaluation's score (the best checkpoint's, --stop-at's): the win rate where the env
    reports battles, else the mean return. -> (score, metric name)"""
    if "battle_won" in record:
        return float(np.mean(record["battle_won"])), "battle_won"
    return float(np.mean(record["returns"])), "return"
