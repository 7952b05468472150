"""Video in and out: video files through PyAV (FFmpeg's libraries, no ``ffmpeg`` program needed) and folders of
frames, one frame at a time (a clip is never held whole in memory).

Frames are (H, W, 3) float32 RGB in [0, 1], as :mod:`nst_jax.image`'s images. A source is opened and checked
first (:func:`open_source`: its frame count, rate and size, a folder's frames all of one size), then read frame
by frame (:func:`read_frames`). Written videos are H.264 in MP4 (yuv420p, so both sides even), one frame per
tick of the source's rate, written atomically (:func:`write_mp4`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator
from fractions import Fraction

import numpy as np

from nst_jax import image
from nst_jax.atomic import write_atomic
from nst_jax.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = Fraction(25)
CRF = 18
"""x264's constant rate factor of written videos: visually lossless for most material."""


class VideoError(UserError):
    """A video or frame folder that is missing, unreadable, empty or inconsistent, or a bad frame range."""


@dataclasses.dataclass(frozen=True)
class Source:
    """An opened input: ``kind`` ``"video"`` (a file) or ``"frames"`` (a folder, ``files`` its frames in
    order); ``frame_count`` frames of ``size`` (H, W); ``fps`` the video's average rate (None for a folder)."""

    path: str
    kind: str
    frame_count: int
    size: tuple[int, int]
    fps: Fraction | None
    files: tuple[str, ...] = ()


def _natural_key(name: str) -> list:
    """``frame_2.png`` before ``frame_10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str) -> list[str]:
    """The image files of ``folder`` (by extension, hidden files skipped), in natural order of their names."""
    names = [n for n in os.listdir(folder)
             if not n.startswith(".") and os.path.splitext(n)[1].lower() in FRAME_EXTENSIONS
             and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def open_source(path: str) -> Source:
    """Opens and checks a video file or a folder of frames (without decoding the frames)."""
    if not path:
        raise VideoError("--input is empty: give a video file (mp4, mov, webm, gif) or a folder of frames")
    if not os.path.exists(path):
        raise VideoError(f"--input={path}: no such file or folder")
    if os.path.isdir(path):
        return _open_folder(path)
    if os.path.getsize(path) == 0:
        raise VideoError(f"--input={path}: empty file")
    return _open_video(path)


def _open_folder(path: str) -> Source:
    from PIL import Image

    files = frame_files(path)
    if not files:
        raise VideoError(f"--input={path}: a folder with no frames (image files {', '.join(FRAME_EXTENSIONS)})")
    size = None
    for f in files:
        try:
            with Image.open(f) as img:  # the header only
                hw = (img.size[1], img.size[0])
        except Exception:  # Pillow raises many types on a bad file
            raise VideoError(f"--input={path}: frame {os.path.basename(f)} is not an image Pillow can read") from None
        if size is None:
            size = hw
        elif hw != size:
            raise VideoError(f"--input={path}: frames of different sizes ({os.path.basename(files[0])} is "
                             f"{size[1]}x{size[0]}, {os.path.basename(f)} is {hw[1]}x{hw[0]})")
    return Source(path, "frames", len(files), size, None, tuple(files))


def _open_video(path: str) -> Source:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"--input={path}: no video stream")
            stream = container.streams.video[0]
            size = (stream.codec_context.height, stream.codec_context.width)
            fps = stream.average_rate or stream.guessed_rate
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"--input={path}: not a video PyAV can read ({_reason(e)})") from None
    if count == 0 or min(size) < 1:
        raise VideoError(f"--input={path}: a video with no frames")
    return Source(path, "video", count, size, Fraction(fps) if fps else None)


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text).split(": '")[0]


def parse_range(text: str, count: int) -> tuple[int, int]:
    """``--frames=START:END`` (0-based, END exclusive, either may be empty) -> (start, end) within ``count``
    frames; empty text: all of them."""
    if not text:
        return 0, count
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not m:
        raise VideoError(f"--frames={text}: expected START:END, 0-based frame numbers, END excluded (e.g. 0:48)")
    start = int(m.group(1)) if m.group(1) else 0
    end = int(m.group(2)) if m.group(2) else count
    if start >= count:
        raise VideoError(f"--frames={text}: starts at frame {start}, but the input has {count} frame(s)")
    if end > count:
        raise VideoError(f"--frames={text}: ends at frame {end}, but the input has {count} frame(s)")
    if end <= start:
        raise VideoError(f"--frames={text}: selects no frame (END must be greater than START)")
    return start, end


def read_frames(source: Source, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
    """Frames ``start`` to ``end`` (exclusive; default the last) of ``source``, one at a time, as (H, W, 3)
    float32 RGB in [0, 1]."""
    end = source.frame_count if end is None else end
    if source.kind == "frames":
        for f in source.files[start:end]:
            yield image.load_image(f)
        return
    import av

    try:
        with av.open(source.path) as container:
            stream = container.streams.video[0]
            for k, frame in enumerate(container.decode(stream)):
                if k >= end:
                    break
                if k >= start:
                    yield frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"--input={source.path}: cannot decode frame ({_reason(e)})") from None


def even_shape(hw: tuple[int, int]) -> tuple[int, int]:
    """(H, W) each rounded down to an even number (at least 2): what H.264 in yuv420p takes."""
    return max(2, hw[0] - hw[0] % 2), max(2, hw[1] - hw[1] % 2)


def write_mp4(path: str, frames: Iterable[np.ndarray], fps: Fraction) -> int:
    """Encodes ``frames`` ((H, W, 3) RGB in [0, 1], all one even size) as H.264 MP4 at ``fps``, atomically (a
    reader sees the old file or the whole new one). Returns the number of frames written."""
    import av

    count = 0

    def encode(f) -> None:
        nonlocal count
        container = av.open(f, mode="w", format="mp4")
        stream = None
        try:
            for rgb in frames:
                if stream is None:
                    stream = container.add_stream("libx264", rate=fps)
                    stream.height, stream.width = rgb.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(CRF)}
                frame = av.VideoFrame.from_ndarray(image.to_uint8(rgb), format="rgb24")
                frame.pts = count
                frame.time_base = Fraction(1) / fps
                for packet in stream.encode(frame):
                    container.mux(packet)
                count += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        finally:
            container.close()

    write_atomic(path, encode, what="video")
    return count
