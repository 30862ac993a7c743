"""The machine: the torch device and threads, seeding, and the replay buffer's memory."""

import contextlib
import mmap
import sys

import numpy as np
import threadpoolctl
import torch

from cleanmarl.utils.layout import warn


def torch_device(name, threads):
    """torch.device for --device (auto: cuda when available), checked by allocating on it; torch's
    CPU threads and numpy's BLAS threads set to threads (more threads than free cores only wait on
    each other)."""
    torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    name = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(
            f"--device {name!r} is not usable here: {str(e).splitlines()[0]}"
        ) from None
    return device


def lazy_zeros(shape, dtype):
    """Zeros whose memory is committed page by page (4 KB) as they are written (np.zeros would take
    2 MB huge pages). Private, not shared: reading a page never written maps the kernel's zero page
    instead of committing one (qmix_lstm.py reads padding when it cuts a batch to its longest)."""
    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}  # not on Windows
    memory = mmap.mmap(
        -1, max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize), **private
    )  # anonymous: zero-filled, lazy
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype)[: int(np.prod(shape))].reshape(shape)


def buffer_arrays(buffer_size, fields, check=True):
    """A replay buffer's arrays: zeros [buffer_size, *shape] for each name -> (shape, dtype), taken
    from memory page by page as they are written (lazy_zeros). With check (a padded buffer), raises
    ValueError (one line) when all of them, written, would exceed the memory available: now, not
    when it runs out hours in."""
    if check:
        episode_bytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in fields.values())
        check_buffer_memory(buffer_size, episode_bytes, max(s[0] for s, _ in fields.values() if s))
    return {k: lazy_zeros((buffer_size, *s), d) for k, (s, d) in fields.items()}


def check_buffer_memory(buffer_size, episode_bytes, episode_limit, padded=True):
    """A padded buffer (padded=True) commits up to buffer_size episodes of episode_bytes: raise
    ValueError (one line) when that exceeds the memory available, not when it runs out hours in.
    A buffer of real steps only: say its cost, and warn, as the worst case (every episode at the
    limit) may never be reached."""
    available, needed = available_memory(), buffer_size * episode_bytes
    if not padded:
        step = episode_bytes / (episode_limit + 1)
        print(f"replay buffer: {step:.0f} B per stored step, at most {needed / 2**30:.2f} GiB")
    if available is None or needed <= available:
        return
    if padded:
        raise ValueError(
            f"the replay buffer needs {needed / 2**30:.1f} GiB (episodes padded to {episode_limit}"
            f" steps), {available / 2**30:.1f} GiB are available: use --buffer-size"
            f" {available // episode_bytes} or less, or cleanmarl/qmix_memefficient.py"
            " (each real step stored once)"
        )
    more = f"that is more than the {available / 2**30:.1f} GiB available, reached only if the"
    warn(f"{more} {buffer_size} episodes kept all run to the limit", file=sys.stderr)


def available_memory():
    """Bytes this process can still take: Linux's MemAvailable, within its cgroup's limit; else
    None."""
    try:
        with open("/proc/meminfo") as f:
            available = next(
                int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")
            )
    except (OSError, StopIteration, ValueError):
        return None
    with (
        contextlib.suppress(OSError, ValueError),
        open("/sys/fs/cgroup/memory.max") as limit,
    ):  # "max": none
        with open("/sys/fs/cgroup/memory.current") as used:
            available = min(available, int(limit.read()) - int(used.read()))
    return available


def env_seeds(seed, n, stream):
    """n env seeds from the run's seed, stream 0 for the training envs, 1 for the evaluation envs. The
    first is the single-env scripts' (seed, seed + 10000): one env is qmix.py's. The others are
    SeedSequence children of (seed, stream), the root's third and fourth children's (the scripts'
    exploration and sampling streams are its first two): runs with other seeds share no env stream (seed + i would give seeds 1 and
    2 all but one stream in common), nor do a run's training and evaluation envs."""
    children = np.random.SeedSequence(seed, spawn_key=(2 + stream,)).spawn(n - 1)
    return [seed + 10_000 * stream] + [int(child.generate_state(1)[0]) for child in children]
