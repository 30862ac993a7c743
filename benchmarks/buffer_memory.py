"""Replay-buffer memory of qmix.py and qmix_memefficient.py: measured resident growth, and bytes per step on SMAC maps.

    python benchmarks/buffer_memory.py [--steps 100000] [--buffer-size 5000] [--state obs]

1. Measured: each script's own EpisodeBuffer, in a fresh process, is filled by its own run_episode (random policy)
   on SmacLike-v0: 10 agents, 176 floats of observation each (plus the agent ids), a 322-float state and 18 actions,
   as MMM2; a 180-step limit, and episodes that end at a random step (each step ends one with probability 1/40, so
   ~40 steps long). Printed: the growth of the process's resident memory (VmRSS) while --steps env steps are added,
   for both scripts, and their ratio. `--state obs` makes the state the agents' observations concatenated (as the LBF
   and MPE wrappers build it) instead of a compact one.
2. Computed: bytes per stored step, and for --buffer-size episodes at the limit, on 3m, 2s3z, MMM, MMM2, corridor and
   27m_vs_30m (sizes from the real envs when SMAClite is installed, else SMAClite's sizes below), for EPyMARL's layout
   (float32 obs and state padded to the limit + 1, int64 actions, int32 avail, float32 one-hot actions, float32
   reward, uint8 terminated, int64 filled), qmix.py's (its episode_fields and mask) and qmix_memefficient.py's
   (limit + 1 of its entries), and the target: one float32 obs (without ids) and state per step, a byte per action and per
   avail entry.
"""

import argparse
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# SMAClite's sizes (n_agents, obs without the agent ids, state, actions, SMAC's episode limit), read from its envs.
SMAC_SIZES = {
    "3m": (3, 30, 48, 9, 60),
    "2s3z": (5, 80, 120, 11, 120),
    "MMM": (10, 160, 290, 16, 150),
    "MMM2": (10, 176, 322, 18, 180),
    "corridor": (6, 156, 282, 30, 400),
    "27m_vs_30m": (27, 285, 1170, 36, 180),
}


class SmacLikeEnv(gym.Env):
    """MMM2's sizes, random observations and masks, episodes that end at a random step (p = 1/40 per step)."""

    n_agents, obs_size, state_size, n_actions = 10, 176, 322, 18

    def __init__(self, state="compact"):
        box = gym.spaces.Box(-1, 1, (self.obs_size,), np.float32)
        self.observation_space = gym.spaces.Tuple([box] * self.n_agents)
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(self.n_actions)] * self.n_agents)
        self.concat_state = state == "obs"

    def _obs(self):
        self._last = tuple(
            self.np_random.uniform(-1, 1, (self.n_agents, self.obs_size)).astype(np.float32)
        )
        return self._last

    def get_state(self):
        return (
            np.concatenate(self._last)
            if self.concat_state
            else self.np_random.uniform(-1, 1, self.state_size)
        )

    def get_avail_actions(self):
        avail = self.np_random.random((self.n_agents, self.n_actions)) < 0.6
        avail[:, 0] = True
        return avail

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, actions):
        return self._obs(), 1.0, bool(self.np_random.random() < 1 / 40), False, {}


gym.register("SmacLike-v0", entry_point=SmacLikeEnv, max_episode_steps=180)


def resident():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(script, steps, buffer_size, state):
    """In this process: the resident growth of `script`'s buffer filled with `steps` env steps. -> bytes, episodes"""
    module = importlib.import_module(f"cleanmarl.{script[: -len('.py')]}")
    from cleanmarl.env import make_env

    env, args = make_env("gym", "SmacLike-v0", seed=0, state=state), module.Args()
    obs = np.zeros((env.n_agents, env.obs_size), np.float32)
    obs_size = module.agent_inputs(obs, None, env.n_actions, args).shape[-1]  # + id, last action
    sizes = (env.episode_limit, env.n_agents, obs_size, env.state_size, env.n_actions)
    q_network = module.QNetwork(obs_size, env.n_actions, 64, 1)
    rng = np.random.default_rng(0)
    module.run_episode(env, q_network, args, 1.0, rng)  # warm-up: everything but the buffer exists
    extra = {"args": args} if "args" in inspect.signature(module.EpisodeBuffer).parameters else {}
    before = resident()
    rb = module.EpisodeBuffer(buffer_size, *sizes, 0, **extra)
    added, episodes = 0, 0
    while added < steps:
        episode = module.run_episode(env, q_network, args, 1.0, rng)[0]
        rb.add(episode)
        added, episodes = added + len(episode["reward"]), episodes + 1
    return resident() - before, episodes


def epymarl_bytes(n, obs, state, actions):
    return 4 * n * obs + 4 * state + 8 * n + 4 * n * actions + 4 * n * actions + 4 + 1 + 8


def table(buffer_size):
    from cleanmarl import qmix, qmix_memefficient

    sizes = dict(SMAC_SIZES)
    source = "SMAClite's sizes (not installed here)"
    if importlib.util.find_spec("smaclite"):
        from cleanmarl.env import make_env

        for name in sizes:
            env = make_env("smaclite", name, seed=0)
            sizes[name] = (
                env.n_agents,
                env.obs_size,
                env.state_size,
                env.n_actions,
                env.episode_limit,
            )
            env.close()
        source = "the real SMAClite envs"
    print(f"\nbytes per stored step, and GB for {buffer_size} episodes at the limit ({source}):")
    header = ["map", "EPyMARL", "qmix.py", "qmix_memefficient.py", "target", "memefficient/target"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, (n, obs, state, actions, limit) in sizes.items():
        obs_size = (
            obs + n + actions
        )  # the agents' inputs at the defaults: obs, agent id, last action
        fields = qmix.episode_fields(limit, n, obs_size, state, actions).values()
        padded = limit + sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in fields)  # + mask
        entry = qmix_memefficient.EpisodeBuffer.entry(n, obs, state, actions)  # obs without ids
        compact = (limit + 1) * qmix_memefficient.EpisodeBuffer.bytes_per_entry(entry)
        rows = [
            (epymarl_bytes(n, obs, state, actions), limit + 1),
            (padded / limit, limit),
            (compact / (limit + 1), limit + 1),
        ]
        target = 4 * n * obs + 4 * state + n + n * actions
        cells = [f"{b:,.0f} B, {b * steps * buffer_size / 1e9:.1f} GB" for b, steps in rows]
        print(f"| {name} | " + " | ".join(cells) + f" | {target:,} B | {rows[2][0] / target:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000, help="env steps added to each buffer")
    parser.add_argument(
        "--buffer-size", type=int, default=5000, help="episodes (both scripts' default)"
    )
    parser.add_argument(
        "--state",
        default="compact",
        help="compact (SMAC-like) or obs (the observations concatenated)",
    )
    parser.add_argument(
        "--measure", help=argparse.SUPPRESS
    )  # the child process: one script's measurement
    args = parser.parse_args()
    if args.measure:
        grown, episodes = measure(args.measure, args.steps, args.buffer_size, args.state)
        print(grown, episodes)
        sys.exit(0)
    print(
        f"SmacLike-v0 (state: {args.state}), {args.steps} env steps, --buffer-size {args.buffer_size}:"
    )
    growth = {}
    for script in ("qmix.py", "qmix_memefficient.py"):
        cmd = [sys.executable, __file__, "--measure", script, "--steps", str(args.steps)]
        cmd += ["--buffer-size", str(args.buffer_size), "--state", args.state]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            cmd, check=True, capture_output=True, text=True, env=env
        ).stdout.split()[-2:]  # the last line (the buffers print their cost first)
        growth[script], episodes = int(out[0]), int(out[1])
        print(
            f"  {script:22s} resident memory grew {growth[script] / 2**20:8.1f} MiB over {episodes} episodes"
        )
    ratio = growth["qmix_memefficient.py"] / growth["qmix.py"]
    print(f"  ratio qmix_memefficient.py / qmix.py: {ratio:.3f}\n")
    print("| `SmacLike-v0` state | `qmix.py` | `qmix_memefficient.py` | ratio |\n|---|---|---|---|")
    mib = [f"{growth[s] / 2**20:,.0f} MiB" for s in ("qmix.py", "qmix_memefficient.py")]
    print(f"| {args.state} | {mib[0]} | {mib[1]} | **{ratio:.3f}** |")
    table(args.buffer_size)
