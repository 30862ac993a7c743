"""What a saved training state (--resume) costs: seconds to write and bytes on disk, with a full replay buffer.

    python benchmarks/checkpoint_cost.py                 # LBF, MPE, 3m (qmix.py); 27m_vs_30m (qmix_memefficient.py)
    python benchmarks/checkpoint_cost.py --cases lbf 3m  # some of them

The state is the one a run writes (cleanmarl.utils.resume.TrainingState over the script's own networks, optimizer, buffer, RNG streams and
envs), with the buffer full at its default size (5000 episodes). Filling it by playing 5000 episodes would take hours on
SMAClite, so 50 random-policy episodes are played and added again and again: the bytes and seconds depend on how many
real steps the buffer holds, not on what they are. A trained policy's episodes are of other lengths (3m: random ones
are ~25 steps, won battles shorter); the bytes per stored step printed scale the result. The throughput cost is the
seconds per save over --checkpoint-every's default of 5 minutes. 27m_vs_30m's full buffer of random-policy episodes
does not fit in 24 GiB: --buffer-size measures a smaller one (the cost grows with the steps it holds)."""

import argparse
import copy
import importlib
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cleanmarl.env import make_env  # noqa: E402
from cleanmarl.utils import layout, resume  # noqa: E402

CASES = {  # name -> script, env_type, env_name
    "lbf": ("qmix", "lbf", "Foraging-8x8-2p-2f-coop-v3"),
    "mpe": ("qmix", "pz", "simple_spread_v3"),
    "3m": ("qmix", "smaclite", "3m"),
    "27m_vs_30m": ("qmix_memefficient", "smaclite", "27m_vs_30m"),
}


def measure(script, env_type, env_name, buffer_size=None, played=50, repeats=3):
    module = importlib.import_module(f"cleanmarl.{script}")
    args = module.Args(env_type=env_type, env_name=env_name)
    args.buffer_size = buffer_size or args.buffer_size
    env = make_env(env_type, env_name, seed=0)
    eval_env = make_env(env_type, env_name, seed=10_000)
    obs = np.zeros((env.n_agents, env.obs_size), np.float32)
    obs_size = module.agent_inputs(obs, None, env.n_actions, args).shape[-1]  # + id, last action
    sizes = (env.episode_limit, env.n_agents, obs_size, env.state_size, env.n_actions)
    q_network = module.QNetwork(obs_size, env.n_actions, args.hidden_dim, args.num_layers)
    mixer = module.QMixer(env.n_agents, env.state_size, args.mixer_embed_dim)
    nets = dict(
        zip(
            module.CHECKPOINT_NETS,
            (q_network, mixer, *map(copy.deepcopy, (q_network, mixer))),
            strict=True,
        )
    )
    optimizer = torch.optim.Adam([p for net in nets.values() for p in net.parameters()], lr=1e-3)
    # exploration and sampling streams, as the scripts draw them
    rng, buffer_rng = map(np.random.default_rng, np.random.SeedSequence(0).spawn(2))
    extra = {"args": args} if script == "qmix_memefficient" else {}
    rb = module.EpisodeBuffer(args.buffer_size, *sizes, buffer_rng, **extra)
    episodes = [module.run_episode(env, q_network, args, 1.0, rng)[0] for _ in range(played)]
    for i in range(args.buffer_size):
        rb.add(episodes[i % played])
    steps = sum(len(episode["reward"]) for episode in episodes) * args.buffer_size / played
    reward_stats = module.RunningStats()
    objects = nets | dict(
        optimizer=optimizer, rb=rb, reward_stats=reward_stats, rng=rng, env=env, eval_env=eval_env
    )
    with tempfile.TemporaryDirectory(dir=".") as run_dir:
        writer = type("Writer", (), {"flush": lambda self: None})()
        run = type(
            "Run",
            (),
            dict(dir=run_dir, writer=writer, wandb=None, elapsed=lambda self: 0.0)
            | dict(open=lambda self, resume: None, tensorboard=lambda self, write: None),
        )()
        saver = resume.TrainingState(run, args, objects | dict(loop=module.Loop()))
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            saver.save(1_000_000)
            seconds.append(time.perf_counter() - start)
        size = os.path.getsize(os.path.join(run_dir, layout.STATE_FILE))
    env.close()
    eval_env.close()
    return steps, min(seconds), size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument(
        "--interval",
        type=float,
        default=5.0,
        help="--checkpoint-every (minutes) for the cost column",
    )
    parser.add_argument(
        "--buffer-size", type=int, help="episodes in the buffer (default: the script's, 5000)"
    )
    flags = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"| env (script) | real steps in the buffer | seconds per save | size | bytes per step | cost at {flags.interval:g} min |"
    )
    print("|---|---|---|---|---|---|")
    for name in flags.cases:
        script, env_type, env_name = CASES[name]
        steps, seconds, size = measure(script, env_type, env_name, flags.buffer_size)
        cost = seconds / (60 * flags.interval)
        print(f"| {env_name} ({script}.py) | {steps:,.0f} | {seconds:.2f} | {size / 2**20:,.0f} MiB | "
              f"{size / steps:,.0f} | {cost:.2%} |", flush=True)  # fmt: skip
