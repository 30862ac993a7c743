"""The flags: from the command line, a saved run (--resume) or a checkpoint (--load-model), and the ranges
of the flags that the scripts share."""

import dataclasses
import os
import sys

from cleanmarl.utils.checkpoints import load_checkpoint
from cleanmarl.utils.resume import catch_stop_signals, load_state

# What --resume lets change: how the run is watched and how long it goes on. Every other flag is the saved run's.
RESUME_MAY_CHANGE = {
    "resume",
    "total_timesteps",
    "checkpoint_every",
    "progress_bar",
    "device",
    "torch_threads",
}


# The ranges of the flags the scripts share: (names, what they must be, the test)
RANGES = [
    (
        "total_timesteps buffer_size batch_size train_freq log_every eval_steps num_eval_ep video_every"
        " hidden_dim hyper_dim mixer_embed_dim torch_threads checkpoint_every target_network_update_freq"
        " num_envs n_epochs",
        "> 0",
        lambda x: x > 0,
    ),
    ("start_e end_e gamma td_lambda", "in [0, 1]", lambda x: 0 <= x <= 1),
    ("polyak exploration_fraction", "in (0, 1]", lambda x: 0 < x <= 1),
    ("seed", "in [0, 2**31)", lambda x: 0 <= x < 2**31),
    ("num_layers learning_rate tbptt", ">= 0", lambda x: x >= 0),
]


def check_flags(args, ranges=RANGES):
    """Raise ValueError (one line) naming the first flag out of its range (`ranges`; a field that args lacks,
    because a copy removed it, is left alone) or the first bad combination of the shared flags."""
    for names, rule, ok in ranges:
        for name in names.split():
            if hasattr(args, name) and not ok(value := getattr(args, name)):
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {value}")
    name = args.exp_name
    for wrong, message in [
        ("/" in name or name in ("", ".", ".."), f"--exp-name must be a plain name, got {name!r}"),
        (
            args.batch_size > args.buffer_size,
            f"--batch-size {args.batch_size} > --buffer-size {args.buffer_size}",
        ),
        (
            args.end_e > args.start_e,
            f"--end-e {args.end_e} > --start-e {args.start_e}: epsilon decays",
        ),
        (args.eval_only and not args.load_model, "--eval-only needs --load-model PATH"),
        (
            args.bound_targets and args.gamma >= 1,
            "--bound-targets needs --gamma < 1 (it divides by 1 - gamma)",
        ),
    ]:
        if wrong:
            raise ValueError(message)


def startup_args(cli, args_class, checkpoint_flags, checkpoint_nets):
    """The flags (`cli`: tyro.cli), and what they start from: with --resume, the saved run's flags and its state
    (load_state, resume_args); with --load-model, the checkpoint's env and network flags as defaults and the
    checkpoint. Raises ValueError (one line). -> args, state or None, checkpoint or None"""
    catch_stop_signals(defer=False)  # Ctrl-C and SIGTERM: no traceback; nothing to save yet
    args = cli(args_class)
    if args.resume:
        state = load_state(args.resume, os.path.basename(sys.argv[0]))
        return resume_args(cli, args_class, state, args.resume), state, None
    if args.load_model:
        checkpoint = load_checkpoint(args.load_model, checkpoint_flags, checkpoint_nets)
        return checkpoint_args(cli, args_class, checkpoint, checkpoint_flags), None, checkpoint
    return args, None, None


def resume_args(cli, args_class, state, run_dir):
    """The saved run's flags, with those of RESUME_MAY_CHANGE taken from the command line (`cli`: tyro.cli with a
    default). Raises ValueError (one line) naming a flag given with another value than the run's."""
    saved = {
        k: v
        for k, v in state["args"].items()
        if k in {f.name for f in dataclasses.fields(args_class)}
    }
    args = cli(args_class, default=args_class(**saved))
    fixed = [name for name in saved if name not in RESUME_MAY_CHANGE]
    if error := flag_mismatch(
        args, saved, fixed, f"--resume {run_dir!r} was run with", may_differ=()
    ):
        raise ValueError(error)
    return args


def flag_mismatch(
    args, saved, names, source="--load-model was trained with", may_differ=("time_limit",)
):
    """One line naming the first of `names` (but may_differ) given with another value than in `saved`, or None."""
    for name in names:
        if name not in may_differ and getattr(args, name) != saved[name]:
            flag = f"--{name.replace('_', '-')}"
            if isinstance(
                saved[name], bool
            ):  # spelled as the flags are: --agent-ids / --no-agent-ids
                return f"{source} {flag.replace('--', '--no-') * (not saved[name]) or flag}"
            return f"{source} {flag} {saved[name]}, asked for {getattr(args, name)}"
    return None


def checkpoint_args(cli, args_class, checkpoint, flags):
    """--load-model's flags: the checkpoint's env and network flags as defaults (`cli`: tyro.cli with a default); any
    given on the command line must match them, but --time-limit. Raises ValueError (one line)."""
    args = cli(args_class, default=args_class(**{k: checkpoint["args"][k] for k in flags}))
    if error := flag_mismatch(args, checkpoint["args"], flags):
        raise ValueError(error)
    return args
