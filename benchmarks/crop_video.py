"""Crop a SMAClite episode video (a run's --capture-video mp4) to the battle, scaled up for the docs.

    python benchmarks/crop_video.py runs/<run>/best/qmix.mp4 docs/img/video/NAME.mp4 [--scale 2]

The box is the smallest one holding every pixel that differs from the frame's two most common
colours (the map and the area outside it) in any frame, grown by --margin pixels and kept inside
the frame; each pixel becomes --scale x --scale (no smoothing). Frames, their order and the frame
rate are the video's.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cleanmarl.utils.video import write_video  # noqa: E402


def battle_box(frames, margin):
    """frames [T, H, W, 3] uint8 -> (top, bottom, left, right) of what is not background."""
    colours, counts = np.unique(frames[0].reshape(-1, 3), axis=0, return_counts=True)
    background = colours[np.argsort(counts)[-2:]].astype(int)  # [2, 3]
    distance = np.abs(frames[:, :, :, None, :].astype(int) - background).sum(-1).min(-1)
    rows, cols = np.nonzero((distance > 30).any(0))
    height, width = frames.shape[1:3]
    top, left = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    return top, min(rows.max() + margin + 1, height), left, min(cols.max() + margin + 1, width)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("out", type=Path, help="the cropped video (.mp4)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--margin", type=int, default=24, help="pixels around the battle")
    args = parser.parse_args()
    import imageio.v3 as iio

    frames = iio.imread(args.video)
    top, bottom, left, right = battle_box(frames, args.margin)
    frames = frames[:, top:bottom, left:right].repeat(args.scale, 1).repeat(args.scale, 2)
    written = write_video(frames, str(args.out.with_suffix("")))
    print(f"{written}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}")


if __name__ == "__main__":
    main()
