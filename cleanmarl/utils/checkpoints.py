"""Model checkpoints: --save-model's latest and best checkpoint, --load-model's checks of flags and
shapes."""

import contextlib
import os
import shutil

import torch

from cleanmarl.utils.guard import inside
from cleanmarl.utils.layout import (
    BEST_DIR,
    EVAL_FILE,
    MODELS_FILE,
    atomic_save,
    evaluation_score,
    is_number,
    read_json,
    read_records,
    replace_with,
    saved,
    write_json,
)


def save_model(path, networks, args, reward_scale, step=None):
    """--save-model's checkpoint: the networks' state dicts (name -> network), the flags, the reward
    scale that turns the mixer's Q_tot into reward units (Q_tot * reward_scale) and the env step.
    With a step, models.json names it the latest and keep_best() may copy it as the best. -> whether
    it was saved"""
    checkpoint = {name: network.state_dict() for name, network in networks.items()}
    checkpoint["args"], checkpoint["reward_scale"], checkpoint["step"] = (
        vars(args),
        reward_scale,
        step,
    )
    if not atomic_save(checkpoint, path):
        return False
    if step is not None:
        run_dir, latest = (
            os.path.dirname(path) or ".",
            dict(path=os.path.basename(path), step=int(step)),
        )
        models = os.path.join(run_dir, MODELS_FILE)
        entries = read_models(run_dir) | {"latest": latest}
        if not saved(models, lambda: write_json(entries, models)):
            return False
        keep_best(run_dir)
    return True


def keep_best(run_dir):
    """Copy the latest checkpoint to best/ when its evaluation scores at least as high as every
    earlier one's (the later of equals: more training behind it): the checkpoint that the absolute
    metric re-evaluates (Gorsane et al., 2022). Called after each save and each recorded evaluation,
    as either may come second."""
    models = read_models(run_dir)
    latest, best = models.get("latest"), models.get("best")
    if not latest or (best and best["step"] >= latest["step"]):
        return
    records = read_records(os.path.join(run_dir, EVAL_FILE))
    record = next((r for r in records if r["step"] == latest["step"]), None)
    if record is None or (best and evaluation_score(record)[0] < best["score"]):
        return
    score, metric = evaluation_score(record)
    name = os.path.join(BEST_DIR, latest["path"])  # a folder keeps names and globs apart
    source = inside(run_dir, latest["path"])

    def copy(out):
        with open(source, "rb") as f:
            shutil.copyfileobj(f, out)

    with contextlib.suppress(OSError):
        os.makedirs(os.path.join(run_dir, BEST_DIR), exist_ok=True)
    if not saved(best_path := inside(run_dir, name), lambda: replace_with(copy, best_path, "wb")):
        return  # the best stays the previous one; the next evaluation tries again
    best = dict(path=name, step=latest["step"], score=score, metric=metric)
    path = os.path.join(run_dir, MODELS_FILE)
    saved(path, lambda: write_json(models | {"best": best}, path))


def load_checkpoint(path, flags, networks):
    """A checkpoint written by --save-model, on the CPU (it may come from a GPU run). Raises
    ValueError (one line)."""
    if not os.path.isfile(path):
        raise ValueError(f"--load-model: no file {path!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # text, empty, truncated, a pickle of something else
        kind = type(e).__name__
        raise ValueError(
            f"--load-model {path!r} is not a cleanmarl checkpoint (or is damaged: {kind})"
        ) from None
    if not isinstance(checkpoint, dict) or not all(
        isinstance(checkpoint.get(k), dict) for k in (*networks, "args")
    ):
        raise ValueError(
            f"--load-model {path!r} is not a cleanmarl checkpoint (no networks and flags in it)"
        )
    if missing := [k for k in flags if k not in checkpoint["args"]]:
        raise ValueError(
            f"--load-model {path!r} is not a cleanmarl checkpoint"
            f" (its flags lack {', '.join(missing)})"
        )
    scale = checkpoint.get("reward_scale")
    for name in networks:
        weights = checkpoint.get(name)
        if not isinstance(weights, dict) or not all(
            isinstance(w, torch.Tensor) for w in weights.values()
        ):
            raise ValueError(f"--load-model {path!r} is damaged (its {name} is no state dict)")
    if not is_number(scale) or scale <= 0:
        raise ValueError(f"--load-model {path!r} is damaged (reward_scale {scale!r})")
    return checkpoint


def shape_mismatch(network, saved):
    """'NAME: [saved shape] in it, [shape] here' for the first weight whose shape differs from
    `saved`, or None."""
    for name, param in network.state_dict().items():
        shape = getattr(saved.get(name), "shape", None)
        if shape is not None and tuple(shape) != tuple(param.shape):
            return f"{name}: {list(shape)} in it, {list(param.shape)} here"
    return None


def load_networks(networks, saved, source):
    """network.load_state_dict(saved[name]) for each name -> network; ValueError (one line) naming
    what disagrees."""
    for name, network in networks.items():
        if mismatch := shape_mismatch(network, saved[name]):
            raise ValueError(
                f"{source} was saved for other env inputs ({name} {mismatch}): "
                "a checkpoint from a cleanmarl "
                "whose env gave other observations or states; train it again"
            )
    try:
        for name, network in networks.items():
            network.load_state_dict(saved[name])
    except (
        RuntimeError,
        TypeError,
        KeyError,
    ) as e:  # its flags and weights disagree: damaged or hand-edited
        raise ValueError(
            f"{source} is damaged: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
        ) from None


def models_snapshot(run_dir):
    """models.json and the checkpoint files it names (latest, best), for the training state: a
    resumed run puts them back, so the best checkpoint is always one whose evaluation is in the
    records."""
    models = read_models(run_dir)
    files = {}
    for entry in models.values():
        with (
            contextlib.suppress(FileNotFoundError),
            open(inside(run_dir, entry["path"]), "rb") as f,
        ):
            files[entry["path"]] = f.read()
    return dict(models=models, files=files)


def read_models(run_dir, models=None):
    """run_dir's models.json (or `models`, its copy in a training state), checked: "latest" and
    "best" entries each with an env step and a file name inside run_dir. Raises ValueError (one
    line)."""
    path = os.path.join(run_dir, MODELS_FILE)
    models = read_json(path) if models is None else models
    for key, entry in models.items() if isinstance(models, dict) else [(None, None)]:
        step = entry.get("step") if isinstance(entry, dict) else None
        if key not in ("latest", "best") or not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{path} is damaged ({key!r} is no checkpoint entry)")
        if key == "best" and not is_number(entry.get("score")):
            raise ValueError(f"{path} is damaged (the best entry has no score)")
        inside(run_dir, entry.get("path"))
    return models


def check_snapshot(run_dir, snapshot):
    """ValueError (one line) unless `snapshot` (a training state's models part) is models.json's
    entries and file contents, every name inside run_dir: checked before anything is written."""
    files = snapshot.get("files")
    if not isinstance(files, dict) or "models" not in snapshot:
        raise ValueError("its checkpoints' part is damaged")
    read_models(run_dir, snapshot["models"])
    for name, data in files.items():
        inside(run_dir, name)
        if not isinstance(data, bytes):
            raise ValueError(f"its copy of {name!r} is damaged")


def restore_models(run_dir, snapshot):
    """Put back what models_snapshot() saved (checked: check_snapshot), each file written whole;
    models.json last. Raises OSError where it cannot write."""
    for name, data in snapshot["files"].items():
        os.makedirs(os.path.dirname(inside(run_dir, name)), exist_ok=True)
        replace_with(lambda f, data=data: f.write(data), inside(run_dir, name), "wb")
    if snapshot["models"] or os.path.exists(os.path.join(run_dir, MODELS_FILE)):
        write_json(snapshot["models"], os.path.join(run_dir, MODELS_FILE))
