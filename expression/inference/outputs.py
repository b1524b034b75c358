"""What a prediction run writes, each file atomically: the records (JSON lines or CSV), annotated
images and annotated videos."""
from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import cv2
import numpy as np

from expression.core.io import atomic_path


class RecordWriter:
    """Streams records into a temp file that replaces <out>/predictions.<fmt> only when the run ends."""

    def __init__(self, path: Path, fmt: str, class_names):
        self.path, self.fmt, self.class_names = path, fmt, list(class_names)
        self.count = 0
        self.discard = False  # set True before the block ends to keep the old file (e.g. nothing was done)

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "w", encoding="utf-8", newline="")
        if self.fmt == "csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(["source", "frame", "face", "x", "y", "w", "h", "label",
                                *(f"prob_{c}" for c in self.class_names), "tta", "true_label", "annotated", "note"])
        return self

    def write(self, record: dict) -> None:
        self.count += 1
        if self.fmt == "jsonl":
            self._file.write(json.dumps(record) + "\n")
            return
        box = record["box"] or [None] * 4
        probs = record["probabilities"] or {}
        self._csv.writerow([_cell(v) for v in (record["source"], record["frame"], record["face"], *box,
                                               record["label"], *(probs.get(c) for c in self.class_names),
                                               record.get("tta"), record["true_label"], record["annotated"],
                                               record["note"])])

    def __exit__(self, *exc):
        self._file.close()
        if exc[0] is None and self.discard:  # atomic_path drops its temp file on any exception
            exc = (RuntimeError, RuntimeError("records discarded"), None)
        return self._atomic.__exit__(*exc)


def _cell(value):
    return "" if value is None else value


class ImageSink:
    def __init__(self, path: Path):
        self.path = path

    def put(self, canvas_rgb: np.ndarray) -> None:
        with atomic_path(self.path) as tmp:
            if not cv2.imwrite(str(tmp), canvas_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(f"cv2 could not write {self.path}")


class VideoSink:
    """MP4 (mp4v) written to a temp file and moved into place when the video is complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._atomic = self._writer = None

    def put(self, canvas_rgb: np.ndarray) -> None:
        if self._writer is None:  # the size is known only after the first (possibly enlarged) frame
            self._atomic = atomic_path(self.path)
            tmp = self._tmp = self._atomic.__enter__()
            h, w = canvas_rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                self._atomic.__exit__(OSError, OSError("no writer"), None)
                self._atomic = None
                raise OSError(f"this OpenCV build cannot write MP4 (mp4v) to {self.path}")
        self._writer.write(np.ascontiguousarray(canvas_rgb[:, :, ::-1]))

    def close(self, ok: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if ok and not _readable_video(self._tmp):
                # VideoWriter reports no write errors: on a full disk it leaves a file without its index
                err = OSError(errno.EIO, "the MP4 came out unreadable (disk full?)")
                self._atomic.__exit__(OSError, err, None)  # raises a WriteError naming the file
            if ok:
                self._atomic.__exit__(None, None, None)
            else:
                self._atomic.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


def _readable_video(path) -> bool:
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()
