"""The flags: from the command line, a saved run (--resume) or a checkpoint (--load-model), checked
against the ranges and combinations of the flags that the scripts share."""

import dataclasses
import math

from cleanmarl.env import resolve_env_type
from cleanmarl.utils.checkpoints import load_checkpoint
from cleanmarl.utils.layout import of_type
from cleanmarl.utils.resume import catch_stop_signals, load_state

# What --resume lets change: how the run is watched and how long it goes on; the rest is the run's.
RESUME_MAY_CHANGE = {"resume", "total_timesteps", "checkpoint_every", "progress_bar"}
RESUME_MAY_CHANGE |= {"device", "torch_threads"}

# (names, what they must be, the test): a flag that a script lacks is left alone
POSITIVE = "total_timesteps buffer_size batch_size train_freq log_every eval_steps num_eval_ep"
POSITIVE += " video_every hidden_dim mixer_embed_dim torch_threads checkpoint_every"
POSITIVE += " target_network_update_freq num_envs n_epochs"
RANGES = [
    (POSITIVE, "> 0", lambda x: x == "auto" or x > 0),  # qmix_multienvs.py's --num-envs auto
    ("start_e end_e gamma td_lambda", "in [0, 1]", lambda x: 0 <= x <= 1),
    ("polyak exploration_fraction", "in (0, 1]", lambda x: 0 < x <= 1),
    ("seed", "in [0, 2**31)", lambda x: 0 <= x < 2**31),
    ("num_layers learning_rate tbptt", ">= 0", lambda x: x >= 0),  # not x < 0: NaN is refused
]


def check_flags(args, ranges=RANGES):
    """Raise ValueError (one line) naming the first flag out of its range or the first bad
    combination of flags."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for names, rule, ok in ranges:
        for name in names.split():
            if hasattr(args, name) and not ok(value := getattr(args, name)):
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {value}")
    name, batch, buffer = args.exp_name, args.batch_size, args.buffer_size
    for wrong, message in [
        ("/" in name or name in ("", ".", ".."), f"--exp-name must be a plain name, got {name!r}"),
        (batch > buffer, f"--batch-size {batch} > --buffer-size {buffer}"),
        (
            args.end_e > args.start_e,
            f"--end-e {args.end_e} > --start-e {args.start_e}: epsilon decays",
        ),
        (args.eval_only and not args.load_model, "--eval-only needs --load-model PATH"),
    ]:
        if wrong:
            raise ValueError(message)


def startup_args(cli, args_class, checkpoint_flags, checkpoint_nets):
    """The flags (`cli`: tyro.cli), checked, with the env family told from --env-name when not
    given, and what the run starts from: with --resume, the saved run's flags and state; with
    --load-model, the checkpoint, its env and network flags the defaults. From here Ctrl-C and
    SIGTERM end the run without a traceback. Raises ValueError (one line).
    -> args, the saved state or None, the checkpoint or None"""
    catch_stop_signals(defer=False)  # nothing to save yet
    args, state, checkpoint = cli(args_class), None, None
    if args.resume:
        state = load_state(args.resume)
        args = resume_args(cli, args_class, state, args.resume)
    elif args.load_model:
        checkpoint = load_checkpoint(args.load_model, checkpoint_flags, checkpoint_nets)
        args = checkpoint_args(cli, args_class, checkpoint, checkpoint_flags)
    check_flags(args)
    args.env_type = args.env_type or resolve_env_type(args.env_name)
    return args, state, checkpoint


def resume_args(cli, args_class, state, run_dir):
    """The saved run's flags, those of RESUME_MAY_CHANGE from the command line. A run is this
    script's when its flags are this script's (a renamed copy resumes its own runs). Raises
    ValueError (one line) naming a flag given with another value than the run's."""
    names = [f.name for f in dataclasses.fields(args_class)]
    if other := [f"--{k.replace('_', '-')}" for k in {*names} ^ {*state["args"]}]:
        raise ValueError(
            f"--resume {run_dir!r} is a run of {state['script']}: resume it with that script"
            f" (the flags differ: {', '.join(sorted(other)[:3])})"
        )
    saved = typed_flags(args_class, state["args"], f"--resume {run_dir!r}: its saved flag")
    args = cli(args_class, default=args_class(**saved))
    fixed = [name for name in saved if name not in RESUME_MAY_CHANGE]
    source = f"--resume {run_dir!r} was run with"
    if error := flag_mismatch(args, saved, fixed, source, may_differ=()):
        raise ValueError(error)
    return args


def checkpoint_args(cli, args_class, checkpoint, flags):
    """--load-model's flags: the checkpoint's env and network flags as defaults; any given on the
    command line must match them, but --time-limit. Raises ValueError (one line)."""
    source = "--load-model: its saved flag"
    saved = typed_flags(args_class, {k: checkpoint["args"][k] for k in flags}, source)
    args = cli(args_class, default=args_class(**saved))
    if error := flag_mismatch(args, checkpoint["args"], flags):
        raise ValueError(error)
    return args


def typed_flags(args_class, saved, source):
    """The flags of args_class in `saved` (read from a file), each of its field's kind. Raises
    ValueError (one line) naming the first that is not."""
    fields = {f.name: f.type for f in dataclasses.fields(args_class)}
    for name, value in saved.items():
        if name in fields and not of_type(value, fields[name]):
            raise ValueError(f"{source} --{name.replace('_', '-')} is {value!r}: damaged")
    return {k: v for k, v in saved.items() if k in fields}


def flag_mismatch(args, saved, names, source="--load-model was trained with", may_differ=None):
    """One line naming the first of `names` given with another value than in `saved`, or None."""
    for name in names:
        if name not in (("time_limit",) if may_differ is None else may_differ):
            if getattr(args, name) != saved[name]:
                flag = f"--{name.replace('_', '-')}"
                if isinstance(saved[name], bool):  # spelled as the flags are: --no-agent-ids
                    return f"{source} {flag.replace('--', '--no-') * (not saved[name]) or flag}"
                return f"{source} {flag} {saved[name]}, asked for {getattr(args, name)}"
    return None
