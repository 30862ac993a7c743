"""cleanmarl/qmix_multienvs.py and cleanmarl/env/vector.py: episodes collected in parallel keep every rule of qmix.py
(time limits, masks, seeding: one env gives qmix.py's very losses), and no worker process outlives a run, however it
ends (the end, Ctrl-C, SIGTERM, SIGKILL, an exception in the learner or in a worker)."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cleanmarl import qmix
from cleanmarl.env import EnvError
from cleanmarl.env.vector import VectorEnv, WorkerError
from cleanmarl.utils.resume import portable, restore_object, tree_map
from cleanmarl.utils.system import env_seeds
from tests.test_smoke import LBF, ROOT, run, scalars

multienvs = importlib.import_module("cleanmarl.qmix_multienvs")
SCRIPT = ROOT / "cleanmarl" / "qmix_multienvs.py"
COUNTER = "tests.counter_env:Counter-v0"
MPE = ["--env-name", "simple_spread_v3"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def descendants(pid):
    """pids of every living process below pid (from /proc), zombies excluded."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@pytest.mark.parametrize("env_args", [LBF, MPE], ids=["lbf", "mpe"])
def test_one_env_gives_qmix_losses(tmp_path, env_args):
    """--num-envs 1 --no-overlap: the same episodes, epsilons, updates and evaluations as qmix.py, so the same losses."""
    args = [
        *env_args,
        "--total-timesteps",
        "2500",
        "--batch-size",
        "8",
        "--log-every",
        "1",
        "--seed",
        "3",
    ]
    logged = []
    for script, extra in (
        ("qmix.py", []),
        ("qmix_multienvs.py", ["--num-envs", "1", "--no-overlap"]),
    ):
        (tmp_path / script).mkdir()
        run(tmp_path / script, *args, *extra, script=ROOT / "cleanmarl" / script)
        logged.append([scalars(tmp_path / script, tag) for tag in ("train/loss", "eval/ep_reward")])
    assert len(logged[0][0]) > 20 and logged[0] == logged[1]


def losses(tmp_path, seed, num_envs):
    args = [
        "--total-timesteps",
        "1500",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--eval-steps",
        "10",
    ]
    run(tmp_path, *LBF, *args, "--seed", str(seed), "--num-envs", str(num_envs), script=SCRIPT)
    return scalars(tmp_path, "train/loss")


def test_same_seed_and_num_envs_same_run(tmp_path):
    for name in "abcd":
        (tmp_path / name).mkdir()
    loss_a, loss_b = losses(tmp_path / "a", 1, 3), losses(tmp_path / "b", 1, 3)
    assert len(loss_a) > 5 and loss_a == loss_b
    assert losses(tmp_path / "c", 2, 3) != loss_a
    assert losses(tmp_path / "d", 1, 2) != loss_a


def test_vector_env_seeds_env_i_with_seed_plus_i_and_keeps_final_observations():
    """Each env is make_env(seed=seed + i); where an episode ends (terminated or cut at 6 steps) the step returns its
    final observation, and the observation to act on starts the env's next episode."""
    envs = VectorEnv("gym", COUNTER, 3, seed=10)
    try:
        obs, state, avail = envs.reset()
        assert (obs[:, 0, 2] == [10, 11, 12]).all() and (obs[:, :, 1] == 0).all()
        assert state.shape == (3, envs.state_size) and avail.dtype == bool and avail.all()
        singles = [qmix.make_env("gym", COUNTER, seed=10 + i) for i in range(3)]
        for single in singles:
            single.reset()
        ends = {"terminated": 0, "truncated": 0}
        for _ in range(60):
            (next_obs, _, _, reward, terminated, truncated, infos), (obs, _, _) = envs.step(
                np.zeros((3, 2), int)
            )
            for i, single in enumerate(singles):
                expected = single.step(np.zeros(2, int))
                np.testing.assert_array_equal(next_obs[i], expected[0])
                assert (reward[i], terminated[i], truncated[i]) == expected[3:6]
                np.testing.assert_array_equal(infos[i]["rewards"], expected[6]["rewards"])
                if terminated[i] or truncated[i]:
                    ends["terminated" if terminated[i] else "truncated"] += 1
                    np.testing.assert_array_equal(
                        obs[i], single.reset()[0]
                    )  # the next episode's first step
                    assert obs[i, 0, 0] == next_obs[i, 0, 0] + 1 and obs[i, 0, 1] == 0
                else:
                    np.testing.assert_array_equal(obs[i], next_obs[i])
        assert ends["terminated"] > 3 and ends["truncated"] > 3
    finally:
        envs.close()


def counter_episode(env, action):
    """One Counter-v0 episode, every agent playing `action`: -> (return, length, info with the env's seed and the
    episode's number in that env, read from its first observation)."""
    obs, _, _, info = env.reset()
    info = dict(seed=obs[0, 2], episode=obs[0, 0])
    terminated = truncated = False
    ep_return, length = 0.0, 0
    while not (terminated or truncated):
        _, _, _, reward, terminated, truncated, _ = env.step(np.full(env.n_agents, action))
        ep_return, length = ep_return + reward, length + 1
    return ep_return, length, info


def test_vector_env_plays_episode_j_on_worker_j_mod_e_while_the_caller_goes_on():
    """play_async: worker i plays episodes i, i + E, ... on its own env (seed + i), one after another, and its env's
    episodes go on from one call to the next; the results come back in episode order."""
    envs = VectorEnv("gym", COUNTER, 3, seed=100)
    try:
        envs.play_async(counter_episode, (1,), 7)
        results = envs.play_wait()
        assert [info["seed"] for *_, info in results] == [100, 101, 102, 100, 101, 102, 100]
        first = results[0][2]["episode"]  # the env's own count, whatever reset it before
        assert [info["episode"] - first for *_, info in results] == [0, 0, 0, 1, 1, 1, 2]
        singles = [qmix.make_env("gym", COUNTER, seed=100 + i) for i in range(3)]
        expected = [counter_episode(singles[j % 3], 1)[:2] for j in range(7)]
        assert [result[:2] for result in results] == expected
        envs.play_async(counter_episode, (1,), 2)
        deadline = time.time() + 30
        while not envs.play_ready() and time.time() < deadline:
            time.sleep(0.01)
        assert [info["episode"] - first for *_, info in envs.play_wait()] == [3, 2]
    finally:
        envs.close()


def agent_network(envs, args):
    """A small QNetwork for what the agents see: the env's obs, --agent-ids, --last-action."""
    inputs = envs.obs_size + envs.n_agents * args.agent_ids + envs.n_actions * args.last_action
    return qmix.QNetwork(inputs, envs.n_actions, hidden_dim=8, num_layers=0)


def test_vector_env_recording_is_checked_as_an_envs(monkeypatch):
    """--capture-video on the evaluation workers: setting recording checks what an env's recording does, in one line
    (EnvError): that imageio is installed and that the env can draw (LBF draws with pyglet: it needs a display); then
    the first worker draws the first episode of the next play_async, and only that one."""
    pytest.importorskip(
        "imageio", reason="--capture-video needs imageio: pip install -e '.[video]'"
    )
    envs = VectorEnv("pz", "simple_spread_v3", 2, seed=0)
    try:
        monkeypatch.setitem(sys.modules, "imageio", None)
        with pytest.raises(
            EnvError, match=r"^imageio is not installed: pip install 'cleanmarl\[video\]'$"
        ):
            envs.recording = True
        monkeypatch.undo()
        assert not envs.recording
        envs.recording = True
        envs.play_async(counter_episode, (0,), 3)
        assert [length for _, length, _ in envs.play_wait()] == [25, 25, 25]
        assert len(envs.take_frames()) == 26 and not envs.recording  # the reset and 25 steps
        envs.play_async(counter_episode, (0,), 2)
        envs.play_wait()
        assert envs.take_frames() == []
    finally:
        envs.close()
    if not os.environ.get("DISPLAY"):
        envs = VectorEnv("lbf", "Foraging-8x8-2p-2f-coop-v3", 2, seed=0)
        workers = [p.pid for p in envs._workers]
        with pytest.raises(WorkerError, match=r"^env 0 .* cannot render frames here .*xvfb-run"):
            envs.recording = True
        assert gone_within(workers, 5)


@pytest.mark.parametrize("overlap", [True, False])
def test_episodes_collected_in_parallel_are_whole_and_in_order(overlap):
    """Every finished episode handed out holds one env's steps 0..T-1 in order, next_obs[t] = obs[t + 1], the final
    observation last (not the next episode's first), terminated only at a real end; all of each env's episodes come
    out, in the order they ended. The agents see the env's obs, their ids and their last action, which an episode's
    first step has none of (zeros), also where its env reset in the step that ended the one before; the fields are
    qmix.py's (episode_fields), dtypes included."""
    envs = VectorEnv("gym", COUNTER, 4, seed=0)
    try:
        args = multienvs.Args(overlap=overlap)  # agent ids and last actions
        rollout = multienvs.VectorRollout(envs, args, np.random.default_rng(0))
        q_network = agent_network(envs, args)
        inputs = q_network.net[0].in_features
        sizes = (envs.episode_limit, envs.n_agents, inputs, envs.state_size, envs.n_actions)
        seen, cut = {}, 0
        for _ in range(80):
            episode, ep_return, _, _ = rollout.next_episode(q_network, 0.5)
            length = len(episode["reward"])
            for key, (shape, dtype) in qmix.episode_fields(*sizes).items():
                assert episode[key].shape == (length, *shape[1:]) and episode[key].dtype == dtype
            obs, next_obs = episode["obs"][:, 0], episode["next_obs"][:, 0]
            env_seed, number = int(obs[0, 2]), int(obs[0, 0])
            assert number == seen.get(env_seed, 0) + 1  # this env's next episode, none skipped
            seen[env_seed] = number
            np.testing.assert_array_equal(obs[:, 1], np.arange(length))
            np.testing.assert_array_equal(
                next_obs[:, 1], np.arange(1, length + 1)
            )  # the final observation last
            assert (next_obs[:, 0] == number).all() and ep_return == length * (length + 1) / 2
            np.testing.assert_array_equal(episode["obs"][1:], episode["next_obs"][:-1])
            ids, last = episode["next_obs"][..., 3:5], episode["next_obs"][..., 5:]
            np.testing.assert_array_equal(ids, np.broadcast_to(np.eye(2), ids.shape))
            np.testing.assert_array_equal(last, np.eye(3)[episode["actions"]])
            assert (episode["obs"][0, :, 5:] == 0).all()  # no last action at the first step
            assert not episode["terminated"][: length - 1].any()
            assert episode["terminated"][length - 1] or length == 6  # ended early: terminated
            cut += (
                length == 6 and not episode["terminated"][length - 1]
            )  # the time limit: bootstrapped
        assert sorted(seen) == [0, 1, 2, 3] and cut > 3
    finally:
        envs.close()


def test_one_env_hands_out_run_episodes_episodes():
    """With one env (seed s) and --no-overlap, the rollout's episodes are qmix.py's run_episode's on an env of seed s
    with the same exploration stream: the same steps, agent inputs, dtypes and returns."""
    name = "tests.tuple_env:TupleChaseMasked-v0"
    envs = VectorEnv("gym", name, 1, seed=7, time_limit=8)
    try:
        single = qmix.make_env("gym", name, seed=7, time_limit=8)
        args = multienvs.Args(overlap=False)
        torch.manual_seed(0)
        q_network = agent_network(envs, args)
        rollout = multienvs.VectorRollout(envs, args, np.random.default_rng(0))
        rng = np.random.default_rng(0)
        lengths = set()
        for _ in range(30):
            episode, ep_return, _, epsilon = rollout.next_episode(q_network, 0.5)
            expected, expected_return, _ = qmix.run_episode(single, q_network, args, 0.5, rng)
            assert set(episode) == set(expected) and ep_return == expected_return and epsilon == 0.5
            for key, value in expected.items():
                assert episode[key].dtype == value.dtype, key
                np.testing.assert_array_equal(episode[key], value, err_msg=key)
            lengths.add(len(expected["reward"]))
        assert len(lengths) > 2
    finally:
        envs.close()


def test_a_restored_rollout_hands_out_the_same_episodes(tmp_path):
    """The rollout's state, taken with a step under way (--overlap) and saved as TrainingState saves it (numpy as
    tensors, read back with torch.load(weights_only=True)), loaded into a rollout over a fresh VectorEnv of the same
    arguments: the episodes under way replayed, it hands out the same episodes as the rollout it was taken from,
    last actions included."""
    name, kwargs = "tests.tuple_env:TupleChaseMasked-v0", {"time_limit": 5}
    envs, envs_again = VectorEnv("gym", name, 3, seed=50, **kwargs), None
    try:
        args = multienvs.Args(overlap=True)
        torch.manual_seed(0)
        q_network = agent_network(envs, args)
        rollout = multienvs.VectorRollout(envs, args, np.random.default_rng(0))
        for _ in range(7):
            rollout.next_episode(q_network, 0.5)
        while rollout.actions is None:  # until a step is under way
            rollout.next_episode(q_network, 0.5)
        torch.save(tree_map(portable, rollout.state_dict()), tmp_path / "state.pt")
        assert any(rollout.steps)  # episodes under way, to replay
        envs_again = VectorEnv("gym", name, 3, seed=50, **kwargs)
        again = multienvs.VectorRollout(envs_again, args, np.random.default_rng(1))
        restore_object(again, torch.load(tmp_path / "state.pt", weights_only=True))
        arrays = [v for steps in again.steps for step in steps for v in step.values()]
        assert arrays and not any(isinstance(v, torch.Tensor) for v in arrays)  # numpy again
        again.rng.bit_generator.state = rollout.rng.bit_generator.state
        for _ in range(20):
            (episode, *rest), (replayed, *rest_again) = (
                r.next_episode(q_network, 0.1) for r in (rollout, again)
            )
            assert rest[0] == rest_again[0] and rest[2] == rest_again[2]  # return, epsilon
            for key, value in episode.items():
                assert replayed[key].dtype == value.dtype, key
                np.testing.assert_array_equal(replayed[key], value, err_msg=key)
    finally:
        envs.close()
        if envs_again is not None:
            envs_again.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-envs", "0"], "--num-envs must be > 0"),
        (["--n-epochs", "0"], "--n-epochs must be > 0"),
    ],
)
def test_bad_flags_give_one_error_line(tmp_path, args, message):
    proc = run(tmp_path, *LBF, *args, "--total-timesteps", "10", check=False, script=SCRIPT)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode == 1
        and len(lines) == 1
        and lines[0].startswith("qmix_multienvs.py: error:")
    ), proc.stderr
    assert message in lines[0]


def test_n_epochs_gradient_steps_per_train_step(tmp_path):
    args = [
        *LBF,
        "--total-timesteps",
        "1000",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--n-epochs",
        "3",
    ]
    run(tmp_path, *args, script=SCRIPT)
    episodes, updates = (
        scalars(tmp_path, "rollout/num_episodes")[-1][1],
        scalars(tmp_path, "train/num_updates")[-1][1],
    )
    assert updates == 3 * (
        episodes - 3
    )  # one train step per episode once the buffer holds a batch of 4


def start(tmp_path, *args, prefix=()):
    """Start qmix_multienvs.py; wait until its workers run. -> process, worker pids."""
    cmd = [sys.executable, *prefix, str(SCRIPT), "--no-progress-bar", "--num-envs", "3", *args]
    proc = subprocess.Popen(  # its own process group, as a terminal gives a command
        cmd,
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline, workers = time.monotonic() + 60, []
    while len(workers) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = descendants(proc.pid)
    assert len(workers) >= 3, proc.communicate()[1][-3000:]
    # A worker ignores SIGINT/SIGTERM once its setup has run (until then it holds them back, from the fork). Wait for
    # every worker's ignore mask, so the signals below test the ignoring.
    while not all(ignores_stop_signals(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc, workers


def ignores_stop_signals(pid):
    """Whether the process ignores SIGINT and SIGTERM (the SigIgn mask of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = int(next(line.split()[1] for line in f if line.startswith("SigIgn:")), 16)
    except (OSError, StopIteration):
        return False
    return all(mask >> (signum - 1) & 1 for signum in (signal.SIGINT, signal.SIGTERM))


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(running(p) for p in pids)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_process_group_stops_the_run_and_its_workers(tmp_path, signum):
    """Ctrl-C in a terminal (or a job scheduler's SIGTERM) reaches every process of the group: the workers ignore it,
    the run stops after the current episode, closes them and exits 128 + signal, no traceback."""
    proc, workers = start(tmp_path, *LBF, "--total-timesteps", "1000000", "--eval-steps", "5")
    for pid in workers:  # the workers alone: they ignore it and the run goes on
        os.kill(pid, signum)
    time.sleep(2)
    assert proc.poll() is None and all(running(p) for p in workers)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
    assert gone_within(workers, 5)


STOP_ON_SIGNALS = """
import os, signal, sys
from cleanmarl.env.vector import VectorEnv

def stop(signum, frame):  # as qmix_multienvs.py's handler, once a run is stopping
    raise SystemExit(128 + signum)

signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
"""


def test_a_signal_while_the_workers_close_stops_the_run_once_all_are_closed():
    """A second SIGTERM (a job scheduler's, or `timeout` relaying one) arriving while close() is sending "close" to
    the workers: held back until every worker is closed, then it ends the run: exit 143, nothing on stderr (raised
    mid-close, it left the later workers unclosed, each printing a traceback for the end of its pipe)."""
    script = (
        STOP_ON_SIGNALS
        + """
envs = VectorEnv("gym", "tests.counter_env:Counter-v0", 3, seed=0)
print(*[p.pid for p in envs._workers], flush=True)
envs.reset()

class SignalOnSend:  # a pipe whose first send also brings this process a SIGTERM
    def __init__(self, pipe):
        self.pipe = pipe

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def send(self, message):
        os.kill(os.getpid(), signal.SIGTERM)
        self.pipe.send(message)

envs._pipes = [SignalOnSend(p) for p in envs._pipes]
envs.close()
print("not reached: the held SIGTERM ends the run as close() returns")
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    workers = [int(pid) for pid in out.splitlines()[0].split()]
    assert proc.returncode == 128 + signal.SIGTERM and err == "" and "not reached" not in out, err[
        -3000:
    ]
    assert gone_within(workers, 5)


def test_a_signal_while_a_worker_is_forked_is_dropped_by_the_worker():
    """Ctrl-C reaches the whole process group, a worker just forked included: until its setup ignores SIGINT it would
    run the parent's handler (SystemExit in the worker: the env fails to build). Held back across the fork, the
    worker drops it; the parent, which holds it too, stops once its workers are built (here: exit 130)."""
    script = (
        STOP_ON_SIGNALS
        + """
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGINT))  # in each worker, as it starts
envs = VectorEnv("gym", "tests.counter_env:Counter-v0", 2, seed=0)
envs.reset()
print("built")
os.kill(os.getpid(), signal.SIGINT)  # the parent's own Ctrl-C: the run stops, its workers closed at exit
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 128 + signal.SIGINT and proc.stdout == "built\n" and proc.stderr == ""
    ), proc.stderr[-3000:]


def test_eval_only_starts_no_worker(tmp_path):
    """--eval-only plays the checkpoint on its one evaluation env: the training envs' workers are not started (here
    starting a VectorEnv fails)."""
    run(
        tmp_path, *LBF, "--total-timesteps", "200", "--num-envs", "2", "--save-model", script=SCRIPT
    )
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    patch = "import cleanmarl.env.vector as v, runpy, sys; v.VectorEnv.__init__ = lambda *a, **k: 1 / 0; "
    patch += "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    cmd = [
        sys.executable,
        "-c",
        patch,
        str(SCRIPT),
        "--eval-only",
        "--load-model",
        str(model),
        "--num-eval-ep",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("eval over 2 episodes"), proc.stderr[
        -3000:
    ]


def test_sigkill_of_the_main_process_ends_its_workers(tmp_path):
    proc, workers = start(tmp_path, *LBF, "--total-timesteps", "1000000")
    proc.kill()
    proc.wait()
    assert gone_within(workers, 5)


def test_a_worker_exception_is_one_line_naming_the_env(tmp_path):
    env_name = "tests.counter_env:FailingCounter-v0"
    proc = run(
        tmp_path,
        "--env-name",
        env_name,
        "--num-envs",
        "4",
        "--seed",
        "0",
        check=False,
        script=SCRIPT,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    failing = next(i for i, seed in enumerate(env_seeds(0, 4, 0)) if seed % 4 == 2)  # the first
    message = f"env {failing} ({env_name}) raised RuntimeError: counter broke at step 20"
    assert lines[0] == f"qmix_multienvs.py: error: {message}"


def test_a_learner_exception_leaves_no_worker(tmp_path):
    """An exception in the main process (here the optimizer's step, patched to fail): the traceback, exit status 1,
    and the workers closed at interpreter exit."""
    patch = "import torch, runpy, sys; torch.optim.Adam.step = lambda *a, **k: 1 / 0; sys.argv = sys.argv[1:]; "
    patch += "runpy.run_path(sys.argv[0], run_name='__main__')"
    proc, workers = start(
        tmp_path, *LBF, "--total-timesteps", "1000000", "--batch-size", "64", prefix=("-c", patch)
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "ZeroDivisionError" in err, err[-3000:]
    assert gone_within(workers, 5)


def test_the_end_of_training_leaves_no_worker(tmp_path):
    proc, workers = start(tmp_path, *LBF, "--total-timesteps", "3000")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert gone_within(workers, 5)


def test_worker_error_in_the_vector_env_stops_the_others():
    envs = VectorEnv("gym", "tests.counter_env:FailingCounter-v0", 4, seed=0)
    workers = [p.pid for p in envs._workers]
    envs.reset()
    with pytest.raises(
        WorkerError, match=r"^env 2 \(tests.counter_env:FailingCounter-v0\) raised RuntimeError"
    ):
        for _ in range(30):
            envs.step(np.zeros((4, 2), int))
    assert gone_within(workers, 5)


def test_a_worker_killed_while_idle_is_one_line_where_its_answer_is_read():
    """An evaluation worker killed between evaluations (SIGKILL, out of memory): play_async still
    returns (the script starts evaluations outside its WorkerError handling), play_wait raises one
    line naming the env, and the others are stopped."""
    envs = VectorEnv("gym", COUNTER, 3, seed=0)
    workers = [p.pid for p in envs._workers]
    os.kill(workers[1], signal.SIGKILL)
    assert gone_within(workers[1:2], 5)  # dead before the command is sent
    envs.play_async(counter_episode, (1,), 6)
    with pytest.raises(
        WorkerError, match=r"^env 1 \(tests.counter_env:Counter-v0\) stopped \(exit code -9\): "
    ):
        envs.play_wait()
    assert gone_within(workers, 5)


def step_recording(envs, rng, steps, acting, episode_actions):
    """Step envs `steps` times with random available actions; episode_actions[i] keeps env i's actions of its current
    episode (an env whose episode ended in a step starts a new one). -> per step: (step()'s outputs, obs, state, avail
    to act on)."""
    steps_out = []
    for _ in range(steps):
        avail = acting[2]
        actions = np.where(avail, rng.random(avail.shape), -1.0).argmax(axis=2)
        out, acting = envs.step(actions)
        steps_out.append((out, acting))
        for i, ended in enumerate(out[4] | out[5]):
            episode_actions[i] = [] if ended else [*episode_actions[i], actions[i]]
    return steps_out


def assert_same_acting(a, b, counts, count_offset):
    """obs, state, avail_actions equal, but for the env's count of its episodes (counts: its obs and state columns;
    Counter-v0 observes [episode, t, seed]): a count no random state holds, which a fresh env starts again. Those are
    count_offset [E, columns] apart."""
    (obs_a, state_a, avail_a), (obs_b, state_b, avail_b) = a, b
    obs_columns, state_columns = counts
    assert (obs_a[:, :, obs_columns] - obs_b[:, :, obs_columns] == count_offset[:, None]).all()
    np.testing.assert_array_equal(
        np.delete(obs_a, obs_columns, axis=2), np.delete(obs_b, obs_columns, axis=2)
    )
    np.testing.assert_array_equal(
        np.delete(state_a, state_columns, axis=1), np.delete(state_b, state_columns, axis=1)
    )
    np.testing.assert_array_equal(avail_a, avail_b)


@pytest.mark.parametrize(
    "env_name, kwargs, t_column, counts",
    [
        (COUNTER, {}, 1, ([0], [0, 3])),  # random episode ends, and a count of episodes
        (
            "tests.tuple_env:TupleChaseMasked-v0",
            {"time_limit": 5},
            2,
            ([], []),
        ),  # random starts (reset draws), masks
    ],
    ids=["counter", "tuple-masked"],
)
def test_vector_env_restore_replays_each_envs_current_episode(env_name, kwargs, t_column, counts):
    """start_states() and each env's actions of its current episode, restored on a fresh VectorEnv of the same
    arguments: the same obs, state and avail_actions to act on, then the same steps (exact resume mid-episode)."""
    rng = np.random.default_rng(0)
    envs = VectorEnv("gym", env_name, 3, seed=20, **kwargs)
    envs_again = None
    try:
        acting, episode_actions = envs.reset(), [[] for _ in range(3)]
        acting = step_recording(envs, rng, int(rng.integers(10, 40)), acting, episode_actions)[-1][
            1
        ]
        while not any(
            episode_actions
        ):  # every env's episode just started: step on, so that one is replayed
            acting = step_recording(envs, rng, 1, acting, episode_actions)[-1][1]
        states = envs.start_states()
        envs_again = VectorEnv("gym", env_name, 3, seed=20, **kwargs)
        n_agents = envs.n_agents
        replayed = envs_again.restore(
            states, [np.array(a, np.int64).reshape(-1, n_agents) for a in episode_actions]
        )
        assert replayed[2].dtype == bool
        np.testing.assert_array_equal(
            replayed[0][:, 0, t_column], [len(a) for a in episode_actions]
        )
        offset = acting[0][:, 0, counts[0]] - replayed[0][:, 0, counts[0]]
        assert_same_acting(acting, replayed, counts, offset)
        seed = int(rng.integers(2**31))
        run_a, run_b = (
            step_recording(vector, np.random.default_rng(seed), 100, start, [[], [], []])
            for vector, start in ((envs, acting), (envs_again, replayed))
        )
        assert (
            sum(out[4].sum() + out[5].sum() for out, _ in run_a) > 20
        )  # many episodes ended, and started again
        for (out_a, acting_a), (out_b, acting_b) in zip(run_a, run_b, strict=True):
            assert_same_acting(
                out_a[:3], out_b[:3], counts, offset
            )  # next_obs ...: an ended episode's final ones
            assert_same_acting(acting_a, acting_b, counts, offset)
            for x, y in zip(out_a[3:6], out_b[3:6], strict=True):  # reward, terminated, truncated
                np.testing.assert_array_equal(x, y)
            for info_a, info_b in zip(out_a[6], out_b[6], strict=True):
                np.testing.assert_array_equal(info_a["rewards"], info_b["rewards"])
    finally:
        envs.close()
        if envs_again is not None:
            envs_again.close()


def test_vector_env_random_states_resume_whole_episodes():
    """random_states() between whole episodes (play_async, as evaluation plays them), restored without actions on a
    fresh VectorEnv of the same arguments: the next episodes are the same; a fresh one not restored plays others."""
    envs = VectorEnv("gym", COUNTER, 3, seed=30)
    others = []
    try:
        envs.play_async(counter_episode, (1,), 5)
        envs.play_wait()
        states = envs.random_states()
        others = [VectorEnv("gym", COUNTER, 3, seed=30) for _ in range(2)]
        assert others[0].restore(states) is None
        results = []
        for vector in (envs, *others):
            vector.play_async(counter_episode, (1,), 12)
            results.append(
                [
                    (ep_return, length, info["seed"])
                    for ep_return, length, info in vector.play_wait()
                ]
            )
        assert results[1] == results[0] and results[2] != results[0]
    finally:
        for vector in (envs, *others):
            vector.close()


def test_vector_env_restore_with_actions_of_another_episode_is_one_line():
    """Actions that end the replayed episode before they run out are not of the episode the state starts: WorkerError."""
    envs = VectorEnv("gym", COUNTER, 2, seed=40)
    workers = [p.pid for p in envs._workers]
    states = envs.start_states()
    with pytest.raises(
        WorkerError,
        match=r"^env 0 \(tests.counter_env:Counter-v0\) raised RuntimeError: the replayed",
    ):
        envs.restore(
            states, [np.zeros((7, 2), np.int64), np.zeros((0, 2), np.int64)]
        )  # Counter cuts at 6 steps
    assert gone_within(workers, 5)


@pytest.mark.parametrize("overlap", [True, False])
def test_each_episode_acts_and_logs_with_the_epsilon_of_its_first_step(monkeypatch, overlap):
    """Epsilon is held per episode from its first step, as in qmix.py, whatever the calls in between pass; the episode
    hands its own epsilon out (rollout/epsilon logs it, not the schedule's value at the call that returned it)."""
    codes = {0.0: 0, 0.5: 1, 1.0: 2}  # the action every agent takes: which epsilon it acted with
    monkeypatch.setattr(
        multienvs, "select_actions", lambda q, avail, epsilon, rng: np.full(len(q), codes[epsilon])
    )
    envs = VectorEnv("gym", COUNTER, 3, seed=0)
    try:
        args = multienvs.Args(overlap=overlap)
        rollout = multienvs.VectorRollout(envs, args, np.random.default_rng(0))
        q_network = agent_network(envs, args)
        spanning = 0
        for call in range(60):
            episode, _, _, epsilon = rollout.next_episode(q_network, list(codes)[call % 3])
            actions = episode["actions"]
            assert (actions == codes[epsilon]).all(), (call, actions.tolist(), epsilon)
            spanning += epsilon != list(codes)[call % 3]  # begun under an earlier call's epsilon
        assert spanning > 10
    finally:
        envs.close()


def test_runs_with_neighbouring_seeds_share_no_env_stream(tmp_path):
    """Each env is seeded by a SeedSequence child of the run's seed: the SeedEcho returns (the next
    number of each env's generator) of runs with seeds 1 and 2 have nothing in common, and neither do
    a run's training and evaluation envs. With seed + i, 3 of the 4 envs of the two runs would be the
    same streams."""
    args = [
        "--env-name",
        "tests.seed_echo:SeedEcho-v0",
        "--total-timesteps",
        "16",
        "--batch-size",
        "2",
    ]
    args += ["--num-envs", "4", "--log-every", "1", "--eval-steps", "4", "--num-eval-ep", "4"]
    returns = {}
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        run(tmp_path / str(seed), *args, "--seed", str(seed), script=SCRIPT)
        returns[seed] = {v for _, v in scalars(tmp_path / str(seed), "rollout/ep_reward")}
        records = (tmp_path / str(seed)).glob("runs/*/evaluations.jsonl")
        evaluation = {
            r
            for path in records
            for line in path.read_text().splitlines()
            for r in json.loads(line)["returns"]
        }
        assert len(returns[seed]) == 16 and evaluation and not returns[seed] & evaluation
    assert not returns[1] & returns[2]
    assert env_seeds(1, 8, 0) != env_seeds(1, 8, 1) and not set(env_seeds(1, 8, 0)) & set(
        env_seeds(2, 8, 0)
    )


@pytest.mark.parametrize("env_name", ["BusyCounter-v0", "SlowCounter-v0"])
def test_load_says_how_busy_the_workers_were_and_how_long_the_caller_waited(env_name):
    """VectorEnv.load(), since its last call: the workers' CPU share of the wall time and the
    caller's share spent waiting in step_wait. Envs that compute (3 ms of CPU a step) keep their
    workers busy for that long, however many processes share the cores; envs that sleep leave them
    idle; a caller that only steps waits nearly all the time."""
    envs = VectorEnv("gym", f"tests.counter_env:{env_name}", 2, [0, 1])
    try:
        assert envs.load() == {}  # nothing to compare with yet
        start = time.perf_counter()
        envs.reset()
        for _ in range(60):
            envs.step(np.zeros((2, 2), np.int64))
        load, wall = envs.load(), time.perf_counter() - start
    finally:
        envs.close()
    assert load["learner_waiting"] > 0.6, load
    cpu_seconds = load["envs_busy"] * wall  # each worker's, on average
    if env_name == "BusyCounter-v0":
        assert 0.9 * 60 * 0.003 < cpu_seconds < 60 * 0.003 + 0.1, (load, wall)
    else:
        assert cpu_seconds < 0.05, (load, wall)


def test_num_envs_auto_is_saved_as_the_number_it_picked_and_the_shares_are_logged(tmp_path):
    """--num-envs auto (the default) picks VectorEnv.auto_num_envs(), says so, and the run saves
    that number (a resume on another machine keeps its envs); the log has both shares."""
    from cleanmarl.utils.resume import load_state

    proc = run(
        tmp_path,
        "--env-type",
        "gym",
        "--env-name",
        COUNTER,
        "--total-timesteps",
        "300",
        "--log-every",
        "5",
        script=SCRIPT,
    )
    picked = VectorEnv.auto_num_envs()
    assert picked >= 12 and f"--num-envs auto: {picked}\n" in proc.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load_state(str(run_dir))["args"]["num_envs"] == picked
    for tag in ("charts/envs_busy", "charts/learner_waiting"):
        values = [v for _, v in scalars(tmp_path, tag)]
        assert values and all(0 <= v <= 1.5 for v in values), (tag, values)


@pytest.mark.parametrize("overlap", [True, False])
def test_with_overlap_one_half_of_the_envs_steps_whenever_the_learner_waits_for_the_other(overlap):
    """--overlap steps the envs by halves in turn ([0, 1] and [2, 3] of 4): each wait for one half
    finds the other half stepping, so the learner's acting and updates for one half overlap the
    other's step. Without it all envs step together, as one."""
    envs = VectorEnv("gym", COUNTER, 4, seed=0)
    waits, step_wait = [], envs.step_wait

    def logged(subset=None):
        waits.append((list(subset), set(envs._waiting)))
        return step_wait(subset)

    envs.step_wait = logged
    try:
        args = multienvs.Args(overlap=overlap, num_envs=4)
        rollout = multienvs.VectorRollout(envs, args, np.random.default_rng(0))
        q_network = agent_network(envs, args)
        for _ in range(30):
            rollout.next_episode(q_network, 0.5)
    finally:
        envs.close()
    halves = [[0, 1], [2, 3]] if overlap else [[0, 1, 2, 3]]
    assert len(waits) >= 15 and all(subset in halves for subset, _ in waits)
    assert all(waiting == {0, 1, 2, 3} for _, waiting in waits)
    assert [subset for subset, _ in waits[:4]] == (halves * 4)[:4]  # by turns


def test_a_worker_failing_while_the_state_is_saved_ends_the_run_in_one_line():
    """state_dict() asks the workers for the step under way (--overlap) and for their episodes'
    start states: a dead worker there ends the run as anywhere else, one line, no traceback."""

    class DeadWorkers:
        num_envs = 2

        def step_wait(self, envs=None):
            raise WorkerError("env 1 (gym) raised RuntimeError: gone")

        start_states = step_wait

    for overlap in (True, False):  # a half's step under way; none, start_states() fails
        rollout = multienvs.VectorRollout(
            DeadWorkers(), multienvs.Args(overlap=overlap), np.random.default_rng(0)
        )
        rollout.actions[0] = np.zeros((1, 2), dtype=np.int64) if overlap else None
        with pytest.raises(SystemExit) as exit:
            rollout.state_dict()
        assert exit.value.code == "qmix_multienvs.py: error: env 1 (gym) raised RuntimeError: gone"
