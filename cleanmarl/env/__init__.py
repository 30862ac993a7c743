"""One multi-agent env API over SMAClite, PettingZoo (MPE via mpe2), LBF and gymnasium tuple envs.

    env = make_env("lbf", "Foraging-8x8-2p-2f-coop-v3", seed=1)  # or env_type=None: resolve_env_type(env_name)
    obs, state, avail_actions, info = env.reset()
    obs, state, avail_actions, reward, terminated, truncated, info = env.step(env.sample_actions())

See docs/env.md for the contract. Family libraries load only when their family is asked for.
"""

import importlib
import re

from cleanmarl.env.base import EnvError, MultiAgentEnv, require

__all__ = ["ENV_TYPES", "EnvError", "MultiAgentEnv", "make_env", "resolve_env_type"]

# env_type -> (module, class)
ENV_TYPES = {
    "smaclite": ("cleanmarl.env.smaclite", "SMACliteEnv"),
    "pz": ("cleanmarl.env.pz", "PettingZooEnv"),
    "lbf": ("cleanmarl.env.lbf", "LBFEnv"),
    "gym": ("cleanmarl.env.gym_tuple", "GymTupleEnv"),
}


# lbforaging's ids (lbforaging/__init__.py): Foraging[-grid][-{sight}s]-{size}x{size}-{p}p-{f}f[-coop][-ind][-pen]-v{n}
LBF_ID = re.compile(r"Foraging(-grid)?(-\d+s)?-\d+x\d+-\d+p-\d+f(-coop)?(-ind)?(-pen)?-v\d+")
HOW_TO_CHOOSE = (
    "pass --env-type (make_env's env_type): smaclite for SMAC maps such as 3m; lbf for lbforaging ids such as "
    "Foraging-8x8-2p-2f-coop-v3; pz for MPE names such as simple_spread_v3 (other PettingZoo families: pz with "
    "--env-family); gym for module:EnvId such as rware:rware-tiny-2ag-v2 or a registered gymnasium id"
)


def _entry_package(spec):
    entry = spec.entry_point
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module.split(".")[0]


def resolve_env_type(env_name):
    """The env_type whose family `env_name` names, from the name alone (no family library is imported).

    smaclite: a SMAC map (EPISODE_LIMITS, CLASSIC_MAPS); lbf: an lbforaging id (LBF_ID); pz: an MPE
    name (MPE_ENVS, MPE_COMPETITIVE); gym: "module:EnvId" or an id in gymnasium's registry, unless the
    id is lbforaging's own. No match, or several: EnvError (one line).
    """
    from cleanmarl.env.pz import MPE_COMPETITIVE, MPE_ENVS
    from cleanmarl.env.smaclite import CLASSIC_MAPS, EPISODE_LIMITS

    matches = []
    if env_name in EPISODE_LIMITS or env_name in CLASSIC_MAPS:
        matches.append("smaclite")
    if LBF_ID.fullmatch(env_name):
        matches.append("lbf")
    if env_name in MPE_ENVS or env_name in MPE_COMPETITIVE:
        matches.append("pz")
    registry = require("gymnasium", "pip install gymnasium").registry
    # Importing lbforaging registers its ids in gymnasium: those stay lbf, they are no second (gym) match.
    registered = env_name in registry and _entry_package(registry[env_name]) != "lbforaging"
    if ":" in env_name or registered:
        matches.append("gym")
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise EnvError(
            f"{env_name!r} matches more than one env family ({', '.join(matches)}): {HOW_TO_CHOOSE}"
        )
    raise EnvError(f"cannot tell which env family {env_name!r} belongs to: {HOW_TO_CHOOSE}")


def make_env(
    env_type,
    env_name,
    *,
    env_family="mpe",
    seed=None,
    time_limit=None,
    **kwargs,
):
    """Build one env of the given family. Raises EnvError (one line) on a bad name or missing package.

    env_type: a key of ENV_TYPES, or None to take resolve_env_type(env_name).
    env_family: the PettingZoo family (only for env_type="pz").
    seed: seeds the first reset() and sample_actions().
    time_limit: episode limit in env steps (default: the env's or map's own limit).
    """
    if env_type is None:
        env_type = resolve_env_type(env_name)
    if env_type not in ENV_TYPES:
        raise EnvError(f"unknown env_type {env_type!r}: choose one of {', '.join(ENV_TYPES)}")
    if {"agent_ids", "last_action"} & set(kwargs):  # what the agents see is the script's
        raise EnvError("agent ids and last actions are built by the training script, not make_env")
    if time_limit is not None and time_limit <= 0:
        raise EnvError(f"time_limit must be > 0 env steps, got {time_limit}")
    module, cls = ENV_TYPES[env_type]
    env_cls = getattr(importlib.import_module(module), cls)
    if env_type == "pz":
        kwargs["env_family"] = env_family
    return env_cls(
        env_name,
        seed=seed,
        time_limit=time_limit,
        **kwargs,
    )
