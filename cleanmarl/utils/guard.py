"""A run directory held and kept whole against what its files say: one process at a time, and no
name read from a file that leads out of it (layout.py names the files)."""

import contextlib
import fcntl
import os

from cleanmarl.utils.layout import warn


def inside(run_dir, name):
    """run_dir/name for a name read from the run's files, or ValueError (one line) where it would
    leave run_dir: an absolute name, a '..', or a symlink that points out of it."""
    ok = isinstance(name, str) and name and "\0" not in name and not os.path.isabs(name)
    if ok and ".." not in name.replace("\\", "/").split("/"):
        path, root = os.path.join(run_dir, name), os.path.realpath(run_dir)
        if os.path.commonpath([root, os.path.realpath(path)]) == root:
            return path
    raise ValueError(f"a file named {name!r} would be outside the run directory: refused")


def check_links(run_dir):
    """ValueError (one line) where a symlink in run_dir points out of it: the run writes through
    its files' names, so one such link would send a write elsewhere."""
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            if os.path.islink(path := os.path.join(folder, name)):
                inside(run_dir, os.path.relpath(path, run_dir))


def lock_run_dir(run_dir):
    """Hold run_dir for this process: an exclusive flock on the directory itself, for as long as
    the returned descriptor is open (the kernel drops it when the process ends, a kill too).
    Raises ValueError (one line) where another process holds it or it cannot be written."""
    check_links(run_dir)
    if not os.access(run_dir, os.W_OK):
        raise ValueError("its directory cannot be written (read-only)")
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(os.fstat(fd).st_ino)
        os.close(fd)
        raise ValueError(
            f"in use by process {holder}: one process holds a run directory at a time"
        ) from None
    except OSError as e:  # no file locks on this filesystem (some cluster ones)
        warn(f"{run_dir}: no file locks here ({e.strerror}): do not run it twice at once")
    return fd


def lock_holder(inode):
    """The PID holding an flock on the file `inode`, from Linux's /proc/locks; else 'unknown'."""
    with contextlib.suppress(OSError), open("/proc/locks") as f:
        for line in f:  # "1: FLOCK  ADVISORY  WRITE 4242 08:01:123456 0 EOF"
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                return fields[4]
    return "unknown"
