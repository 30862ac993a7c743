"""Pins qmix_memefficient.py's buffer: each real step stored once in chunks that are freed when their episodes leave,
and the memory it commits. Its equivalence with qmix.py (batches, TD targets, losses) is in test_variants.py."""

import os

import numpy as np
import pytest

from cleanmarl import qmix
from cleanmarl import qmix_memefficient as memefficient


def episode_of(value, length, sizes):
    """A recorded episode whose entries identify it: obs/state `value`, the final next obs/state -value."""
    episode = {
        k: np.zeros(shape, dtype) for k, (shape, dtype) in qmix.episode_fields(*sizes).items()
    }
    for key in ("obs", "state"):
        episode[key][:length] = value
        episode[f"next_{key}"][:length] = value
        episode[f"next_{key}"][length - 1] = -value
    episode["reward"][:length] = value
    episode["actions"][:length] = value % 5
    episode["terminated"][length - 1] = value % 2
    episode["next_avail_actions"][:length, :, value % 5] = True
    return episode


def test_chunks_turn_over_and_are_freed():
    """Episodes fill chunks in order, never span two, and a chunk goes once its last episode left; what sample()
    returns are exactly the live episodes' steps, with their final next obs read at t + 1."""
    sizes = (6, 2, 3, 4, 5)  # limit, agents, obs, state, actions
    rb = memefficient.EpisodeBuffer(4, *sizes, seed=0, agent_ids=False, last_action=False)
    rb.chunk_size = rb.fill = 10  # tiny chunks: ~2 episodes each
    lengths = {v: 1 + v % 6 for v in range(1, 41)}
    for value, length in lengths.items():
        rb.add(episode_of(value, length, sizes), length)
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


def test_stored_step_is_compact():
    """3m's sizes: float32 obs without the agent ids and state, one byte per action, 8 avail entries a byte."""
    fields = memefficient.EpisodeBuffer.entry(3, 30, 48, 9)
    assert (
        memefficient.EpisodeBuffer.bytes_per_entry(fields)
        == 3 * 30 * 4 + 48 * 4 + 3 + 4 + 1 + 3 * 2
    )
    assert (
        memefficient.EpisodeBuffer.bytes_per_episode(
            60, 3, 42, 48, 9, agent_ids=True, last_action=True
        )
        == 61 * 566
    )
    assert (
        fields["actions"][1] == np.uint8
        and memefficient.EpisodeBuffer.entry(1, 1, 1, 300)["actions"][1] == np.uint16
    )


@pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)"
)
def test_memory_grows_with_the_real_steps_only():
    sizes = (1000, 4, 256, 512, 8)
    rb = memefficient.EpisodeBuffer(200, *sizes, seed=0, agent_ids=False, last_action=False)
    entry = memefficient.EpisodeBuffer.bytes_per_entry(rb.fields)
    episode = episode_of(1, 10, sizes)

    def resident():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    for _ in range(200):
        rb.add(episode, 10)
    stored = 200 * 11 * entry  # 11 entries an episode: its 10 steps and the final next obs
    assert 0.9 * stored <= resident() - before < 1.2 * stored + 2**20
