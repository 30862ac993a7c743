"""--capture-video: the first greedy episode of every --video-every-th evaluation as
runs/{run}/videos/*.mp4 (a GIF where ffmpeg is missing), an animated GIF in TensorBoard and a video
in W&B."""

import os
import sys

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.writer import FileWriter

from cleanmarl.utils.layout import EVAL_FILE, read_records

VIDEO_FPS = 10  # frames (env steps) per second


def video_due(args, run_dir):
    """Whether this evaluation's first episode is recorded: every --video-every-th evaluation, the
    first included."""
    records = read_records(os.path.join(run_dir, EVAL_FILE))
    return args.capture_video and len(records) % args.video_every == 0


def write_video(frames, path, writer=None, step=None):
    """frames [T, H, W, 3] uint8 -> path.mp4 (H.264, imageio-ffmpeg), or path.gif without ffmpeg;
    also an animated GIF in TensorBoard (an image summary, in an event file of its own) and in W&B
    when a W&B run is on. -> the file"""
    import imageio.v3 as iio

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    frames = np.stack(frames)
    pad = [
        (0, 0),
        (0, frames.shape[1] % 2),
        (0, frames.shape[2] % 2),
        (0, 0),
    ]  # H.264 wants even sides
    frames = np.pad(frames, pad, mode="edge") if any(p[1] for p in pad) else frames
    try:
        import imageio

        with imageio.get_writer(
            path + ".mp4", fps=VIDEO_FPS, macro_block_size=2, ffmpeg_log_level="error"
        ) as video:
            for frame in frames:
                video.append_data(frame)
        written = path + ".mp4"
    except (ImportError, OSError, RuntimeError, TypeError):  # no ffmpeg (another plugin): a GIF
        written = path + ".gif"
        iio.imwrite(written, frames, duration=1000 / VIDEO_FPS, loop=0)
    if writer is not None:
        small = frames[:, :: max(1, frames.shape[1] // 256), :: max(1, frames.shape[2] // 256)]
        gif = iio.imwrite("<bytes>", small, extension=".gif", duration=1000 / VIDEO_FPS, loop=0)
        image = Summary.Image(
            height=small.shape[1], width=small.shape[2], colorspace=3, encoded_image_string=gif
        )
        events = FileWriter(writer.log_dir, filename_suffix=f".video_{step}")
        events.add_summary(Summary(value=[Summary.Value(tag="eval/video", image=image)]), step)
        events.close()
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.log({"eval/video": wandb.Video(written, format=written[-3:])}, commit=False)
    return written
