"""One multi-agent env API over SMAClite, PettingZoo (MPE via mpe2), LBF and gymnasium tuple envs.

    env = make_env("lbf", "Foraging-8x8-2p-2f-coop-v3", seed=1)
    obs, state, avail_actions, info = env.reset()
    obs, state, avail_actions, reward, terminated, truncated, info = env.step(env.sample_actions())

See docs/env.md for the contract. Family libraries load only when their family is asked for.
"""

import importlib

from cleanmarl.env.base import EnvError, MultiAgentEnv

__all__ = ["ENV_TYPES", "EnvError", "MultiAgentEnv", "make_env"]

# env_type -> (module, class)
ENV_TYPES = {
    "smaclite": ("cleanmarl.env.smaclite", "SMACliteEnv"),
    "pz": ("cleanmarl.env.pz", "PettingZooEnv"),
    "lbf": ("cleanmarl.env.lbf", "LBFEnv"),
    "gym": ("cleanmarl.env.gym_tuple", "GymTupleEnv"),
}


def make_env(env_type, env_name, *, env_family="mpe", agent_ids=True, seed=None, time_limit=None, **kwargs):
    """Build one env of the given family. Raises EnvError (one line) on a bad name or missing package.

    env_family: the PettingZoo family (only for env_type="pz").
    agent_ids: append a one-hot agent id to each agent's observation.
    seed: seeds the first reset() and sample_actions().
    time_limit: episode limit in env steps (default: the env's or map's own limit).
    """
    if env_type not in ENV_TYPES:
        raise EnvError(f"unknown env_type {env_type!r}: choose one of {', '.join(ENV_TYPES)}")
    if time_limit is not None and time_limit <= 0:
        raise EnvError(f"time_limit must be > 0 env steps, got {time_limit}")
    module, cls = ENV_TYPES[env_type]
    env_cls = getattr(importlib.import_module(module), cls)
    if env_type == "pz":
        kwargs["env_family"] = env_family
    return env_cls(env_name, agent_ids=agent_ids, seed=seed, time_limit=time_limit, **kwargs)
