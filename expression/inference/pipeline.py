"""predict_FER.py's pipeline: pictures, videos and a webcam -> faces -> batched classification ->
annotated copies and one record per face (drawing in `inference.drawing`, files in `inference.outputs`).
Pictures are held until a batch is full, so the model sees batches across files.

    config = PredictConfig(batch_size=32, every=5)     # predict_FER.py --batch-size 32 --every 5
    predictor = Predictor(config, detector, classifier, writer, out_dir, Stats(), note=print)
    process_all(predictor, find_sources(["clip.mp4"], out_dir)[0], OutputNames(), progress=False)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from expression.core.errors import InputError
from expression.core.preprocessing import UnreadableImage, load_pil
from expression.inference.classifier import NO_FACE, Item, analyse, classify, records
from expression.inference.drawing import annotate
from expression.inference.faces import DEFAULT_MARGIN, image_to_rgb
from expression.inference.outputs import ImageSink, VideoSink
from expression.inference.sources import OutputNames, Source

PENDING_PIXELS = 64_000_000  # images held for annotation before a batch is forced (~190 MB RGB)
MAX_MARGIN = 2.0  # a margin of 2 face widths on every side already makes a crop 5x the face


# ---------------------------------------------------------------------------------------------------
# A run over many files: batching across images, stats, sinks


@dataclass(frozen=True)
class PredictConfig:
    """How a run batches faces and frames and what it writes: predict_FER.py's flags of the same names
    (annotate is --no-annotate turned round), whose defaults these are."""

    margin: float = DEFAULT_MARGIN  # context added on each side of a face box, as a fraction of the box
    batch_size: int = 64            # faces per forward pass
    every: int = 1                  # classify every n-th video or webcam frame
    annotate: bool = True           # write annotated copies beside the records

    def __post_init__(self):
        # the flags' types guard the command line; a config built in Python meets these checks instead
        for name in ("batch_size", "every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}", option=name)
        # unbounded, a margin once asked OpenCV for a 113 GB image
        if not 0 <= self.margin <= MAX_MARGIN:  # also nan
            raise InputError(f"margin must be from 0 to {MAX_MARGIN:g}, got {self.margin}", option="margin")


@dataclass
class Stats:
    images: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    labels: Counter = field(default_factory=Counter)
    no_face: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # (path, reason)
    missing: list = field(default_factory=list)
    correct: int = 0
    labelled: int = 0
    interrupted: bool = False

    def summary(self, **run) -> dict:
        """summary.json: the run's own fields (`run`: checkpoint, detector, records, seconds), then the counts."""
        return {**run, "images": self.images, "videos": self.videos, "frames": self.frames, "faces": self.faces,
                "labels": dict(self.labels.most_common()), "no_face": self.no_face,
                "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable], "missing": self.missing,
                "accuracy": round(self.correct / self.labelled, 4) if self.labelled else None,
                "interrupted": self.interrupted}


class Predictor:
    """Holds analysed items until a batch is full, then classifies, writes records and annotations."""

    def __init__(self, config: PredictConfig, detector, classifier, writer, out_dir, stats, note):
        self.config, self.detector, self.classifier, self.writer = config, detector, classifier, writer
        self.out_dir, self.stats, self.note = out_dir, stats, note
        self.pending: list[Item] = []

    def add(self, image: np.ndarray, **fields) -> None:
        item = analyse(image, self.detector, self.config.margin, self.config.annotate, **fields)
        self.pending.append(item)
        faces = sum(len(i.crops) for i in self.pending)
        if faces >= self.config.batch_size or sum(i.pixels for i in self.pending) >= PENDING_PIXELS:
            self.flush()

    def now(self, image: np.ndarray, **fields) -> Item:
        """Analyse and classify one picture at once (webcam: latency over throughput)."""
        self.flush()
        item = analyse(image, self.detector, self.config.margin, True, **fields)
        self.pending.append(item)
        self.flush()
        return item

    def flush(self) -> list[Item]:
        items, self.pending = self.pending, []
        if not items:
            return items
        classify(items, self.classifier)
        names = self.classifier.class_names
        for item in items:
            for record in records(item, names, self.classifier.tta):
                self.writer.write(record)
                if record["label"] is not None:
                    self.stats.faces += 1
                    self.stats.labels[record["label"]] += 1
                    if item.true_label in names:
                        self.stats.labelled += 1
                        self.stats.correct += record["label"] == item.true_label
            if not item.boxes and item.frame is None:
                self.stats.no_face.append(item.source)
                self.note(f"{item.source}: {NO_FACE}")
            if item.sink is not None:
                item.sink.put(annotate(item, names))
        return items


def process_image(source: Source, predictor: Predictor, names: OutputNames) -> None:
    image = image_to_rgb(load_pil(source.path))
    sink = annotated = None
    if predictor.config.annotate:
        annotated = names(source.path, ".jpg")
        sink = ImageSink(predictor.out_dir / annotated)
    predictor.add(image, source=source.path, frame=None, true_label=source.label, annotated=annotated,
                  sink=sink)
    predictor.stats.images += 1


def process_video(source: Source, predictor: Predictor, names: OutputNames, progress: bool) -> None:
    capture = cv2.VideoCapture(source.path)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        raise UnreadableImage(f"{source.path}: OpenCV cannot decode it as a video")
    every = predictor.config.every
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    sink = annotated = None
    if predictor.config.annotate:
        annotated = names(source.path, ".mp4")
        sink = VideoSink(predictor.out_dir / annotated, max(fps / every, 1.0))
    keep = False  # whether the annotated MP4 is moved into place
    bar = tqdm(total=total, desc=Path(source.path).name, unit="frame", leave=False, disable=not progress)
    try:
        index = 0
        while ok:
            if index % every == 0:
                predictor.add(np.ascontiguousarray(frame[:, :, ::-1]), source=source.path, frame=index,
                              annotated=annotated, sink=sink)
                predictor.stats.frames += 1
            bar.update(1)
            index += 1
            if index % every == 0:
                ok, frame = capture.read()
            else:  # grab() skips decoding the frames that --every leaves out
                ok, frame = capture.grab(), None
        predictor.flush()  # the writer must have every frame before it is closed
        keep = True
    except KeyboardInterrupt:
        predictor.flush()  # Ctrl-C: the frames done so far make a valid, shorter MP4
        keep = True
        raise
    finally:
        bar.close()
        capture.release()
        if sink is not None:
            sink.close(ok=keep)
    predictor.stats.videos += 1


def run_webcam(index: int, predictor: Predictor) -> None:
    """Live loop sharing analyse/classify/annotate with the video path; q (or Ctrl-C) stops it."""
    log = getattr(cv2, "utils", None) and getattr(cv2.utils, "logging", None)
    level = log.getLogLevel() if log else None
    if log:  # every backend that fails to open the camera prints its own warning: one error is enough
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        capture = cv2.VideoCapture(index)
    finally:
        if log:
            log.setLogLevel(level)
    if not capture.isOpened():
        raise InputError(f"cannot open camera {index}: check the camera number and that no other program uses it",
                         option="webcam")
    window, last, frame_no = f"predict_FER - camera {index} (q quits)", None, 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            rgb = np.ascontiguousarray(frame[:, :, ::-1])
            if frame_no % predictor.config.every == 0 or last is None:
                last = predictor.now(rgb, source=f"webcam:{index}", frame=frame_no)
                predictor.stats.frames += 1
            else:  # frames in between show the last result on the new picture
                last.image = rgb
            try:
                cv2.imshow(window, annotate(last, predictor.classifier.class_names)[:, :, ::-1])
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:
                raise InputError("this OpenCV build has no GUI (opencv-python-headless?): install "
                                 "opencv-python<5 for the camera window, or record a video and pass its path",
                                 option="webcam") from None
            if key == ord("q"):
                break
            frame_no += 1
    finally:
        capture.release()
        cv2.destroyAllWindows()


def process_all(predictor: Predictor, sources, names: OutputNames, progress: bool, webcam: int | None = None) -> None:
    """Every source (or the camera) through `predictor`; unreadable files are noted and skipped, and
    Ctrl-C ends the run after writing what was done (stats.interrupted)."""
    stats, note = predictor.stats, predictor.note
    try:
        if webcam is not None:
            run_webcam(webcam, predictor)
        else:
            for source in tqdm(sources, desc="predicting", unit="file", disable=not progress):
                try:
                    if source.kind == "video":
                        process_video(source, predictor, names, progress)
                    else:
                        process_image(source, predictor, names)
                except UnreadableImage as err:
                    reason = str(err).split(": ", 1)[-1][:120]
                    stats.unreadable.append((source.path, reason))
                    note(f"{source.path}: unreadable ({reason}): skipped")
        predictor.flush()
    except KeyboardInterrupt:
        stats.interrupted = True
        note("interrupted: writing what was done so far")
        predictor.pending = [i for i in predictor.pending if i.frame is None]  # the video is closed
        predictor.flush()
