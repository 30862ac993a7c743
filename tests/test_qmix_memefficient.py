"""Pins qmix_memefficient.py's buffer: each real step stored once (the env's obs, without what agent_inputs appends)
in chunks that are freed when their episodes leave, the memory it commits, and qmix.py's batch rebuilt from it. Its
equivalence with qmix.py in a run (losses) and in the update (TD targets) is in test_variants.py."""

import os

import numpy as np
import pytest
import torch

from cleanmarl import qmix
from cleanmarl import qmix_memefficient as memefficient
from tests.test_variants import EndingEnv

ENV_OBS_ONLY = memefficient.Args(agent_ids=False, last_action=False)  # the agents see the env's obs


def episode_of(value, length, sizes):
    """An episode as run_episode returns it (name -> [T, ...]) whose entries identify it: obs/state `value`, the
    final next obs/state -value."""
    fields = qmix.episode_fields(length, *sizes[1:])
    episode = {k: np.zeros(shape, dtype) for k, (shape, dtype) in fields.items()}
    for key in ("obs", "state"):
        episode[key][:] = value
        episode[f"next_{key}"][:] = value
        episode[f"next_{key}"][-1] = -value
    episode["reward"][:] = value
    episode["actions"][:] = value % 5
    episode["terminated"][-1] = value % 2
    episode["next_avail_actions"][:, :, value % 5] = True
    return episode


def test_chunks_turn_over_and_are_freed():
    """Episodes fill chunks in order, never span two, and a chunk goes once its last episode left; what sample()
    returns are exactly the live episodes' steps, with their final next obs read at t + 1."""
    sizes = (6, 2, 3, 4, 5)  # limit, agents, obs, state, actions
    rb = memefficient.EpisodeBuffer(4, *sizes, seed=0, args=ENV_OBS_ONLY)
    rb.chunk_size = rb.fill = 10  # tiny chunks: ~2 episodes each
    lengths = {v: 1 + v % 6 for v in range(1, 41)}
    for value, length in lengths.items():
        rb.add(episode_of(value, length, sizes))
        live = [v for v in lengths if value - 4 < v <= value]
        assert sum(rb.live.values()) == len(live) and len(rb.chunks) <= 4
        assert all(
            n > 0 for c, n in rb.live.items() if c != rb.current
        )  # no chunk kept without episodes
    batch = rb.sample(4, "cpu")
    values = batch["reward"].numpy()
    assert sorted(set(values)) == [37, 38, 39, 40]
    for value in (37, 38, 39, 40):
        rows = values == value
        assert rows.sum() == lengths[value]
        assert (batch["obs"][rows] == value).all() and (batch["actions"][rows] == value % 5).all()
        assert (batch["next_obs"][rows][:-1] == value).all() and (
            batch["next_obs"][rows][-1] == -value
        ).all()
        assert (batch["next_state"][rows][-1] == -value).all() and batch["terminated"][rows][
            -1
        ] == value % 2
        assert batch["next_avail_actions"][rows].sum() == 2 * lengths[value]


def test_stored_step_is_compact(capsys):
    """3m's sizes: float32 obs without the agent ids and last actions, and state, one byte per action, 8 avail
    entries a byte; the cost it says at the start is that of episodes at the limit (61 entries for 60 steps)."""
    fields = memefficient.EpisodeBuffer.entry(3, 30, 48, 9)
    assert (
        memefficient.EpisodeBuffer.bytes_per_entry(fields)
        == 3 * 30 * 4 + 48 * 4 + 3 + 4 + 1 + 3 * 2
    )
    args = memefficient.Args(agent_ids=True, last_action=True)
    rb = memefficient.EpisodeBuffer(5000, 60, 3, 30 + 3 + 9, 48, 9, seed=0, args=args)
    assert rb.fields == fields  # the agent ids and last actions are not stored
    said = capsys.readouterr().out
    assert f"566 B per stored step, at most {5000 * 61 * 566 / 2**30:.2f} GiB" in said
    assert (
        fields["actions"][1] == np.uint8
        and memefficient.EpisodeBuffer.entry(1, 1, 1, 300)["actions"][1] == np.uint16
    )


@pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)"
)
def test_memory_grows_with_the_real_steps_only():
    sizes = (1000, 4, 256, 512, 8)
    rb = memefficient.EpisodeBuffer(200, *sizes, seed=0, args=ENV_OBS_ONLY)
    entry = memefficient.EpisodeBuffer.bytes_per_entry(rb.fields)
    episode = episode_of(1, 10, sizes)

    def resident():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    for _ in range(200):
        rb.add(episode)
    stored = 200 * 11 * entry  # 11 entries an episode: its 10 steps and the final next obs
    assert 0.9 * stored <= resident() - before < 1.2 * stored + 2**20


ENDINGS = [(1, True), (1, False), (3, False), (4, True), (6, False)]  # (length, terminated)


@pytest.mark.parametrize("agent_ids", [True, False], ids=["ids", "no_ids"])
@pytest.mark.parametrize("last_action", [True, False], ids=["last_action", "no_last_action"])
def test_sample_is_qmix_batch(agent_ids, last_action):
    """Fed the same episodes (run_episode's, their obs with what the agents see), it keeps the env's obs alone and
    its sample() is qmix.py's, draw after draw: the same episodes, key by key the same arrays and dtypes."""
    args = qmix.Args(agent_ids=agent_ids, last_action=last_action)
    env = EndingEnv(ENDINGS)
    obs = np.zeros((env.n_agents, env.obs_size), np.float32)
    obs_size = qmix.agent_inputs(obs, None, env.n_actions, args).shape[-1]
    assert obs_size == 3 + 2 * agent_ids + 11 * last_action
    sizes = (6, env.n_agents, obs_size, env.state_size, env.n_actions)
    padded = qmix.EpisodeBuffer(len(ENDINGS), *sizes, seed=0)
    compact = memefficient.EpisodeBuffer(len(ENDINGS), *sizes, seed=0, args=args)
    assert compact.fields["obs"][0] == (env.n_agents, env.obs_size)
    torch.manual_seed(0)
    q_network = qmix.QNetwork(obs_size, env.n_actions, hidden_dim=8, num_layers=1)
    rng = np.random.default_rng(0)
    for _ in ENDINGS:
        episode, _, _ = qmix.run_episode(env, q_network, args, 0.5, rng)
        padded.add(episode)
        compact.add(episode)
    for batch_size in (len(ENDINGS), 2, 3):
        batches = [rb.sample(batch_size, "cpu") for rb in (padded, compact)]
        assert set(batches[0]) == set(batches[1])
        for key, expected in batches[0].items():
            got = batches[1][key]
            assert got.dtype == expected.dtype and torch.equal(got, expected), key
