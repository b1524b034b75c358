"""Per-photo latency of predict_FER.py's stages and video throughput, on the CPU by default.

Detectors: each Haar cascade on images scikit-image ships (no download): faces found on the astronaut,
false boxes on 16 face-free photos (coffee, coins, a cat, ...), and how many of the 100 LFW faces (and
boxes on the 100 LFW non-faces) of skimage.data.lfw_subset() are found, each 25 px crop enlarged to
`--lfw-sizes` px and centred on a gray canvas 5/3 as large (the cascades need some context).

Photo (scikit-image's astronaut, 512x512, one face): median and minimum over `--repeats` calls, after
one untimed warm-up call, of
- detect: each Haar cascade on the whole photo (the cascades ship with opencv-python);
- classify: preprocessing + forward pass of the one face crop, without and with --cam (the CAM
  methods need a backward pass as well);
- annotate: drawing boxes, labels and bars (and blending the heat map) onto the photo.
Video: a synthetic `--frames`-frame clip of the astronaut drifting across a `--video-size` frame,
run through predict_FER's video path with the model already loaded (decode, detect, classify,
annotate, encode the MP4), reported as processed frames per second, with and without --cam.

Examples:
    python bench/predict_latency.py                                # random-weight ResNet34, 48 px
    python bench/predict_latency.py --checkpoint models/resnet34_demo.pt --repeats 50 --frames 120
    python bench/predict_latency.py --repeats 2 --frames 6         # a quick look
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from PIL import Image

from expression.apps.cli import ArgumentParser, add_device_argument, non_negative_int, positive_int, run_main
from expression.core.cam_policy import CAMS
from expression.core.checkpoint import load_model, model_record, save
from expression.core.model import build_model
from expression.core.preprocessing import FER2013_CLASSES, Preprocessing
from expression.core.runtime import resolve_device
from expression.inference import classifier as face_classifier
from expression.inference import drawing
from expression.inference import outputs as prediction_outputs
from expression.inference import pipeline, sources
from expression.inference.faces import (CASCADES, DEFAULT_MARGIN, DEFAULT_MIN_NEIGHBORS, FaceDetector, crop_faces,
                                        image_to_rgb)


def video_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    if width < 64 or height < 64:
        raise ValueError(text)
    return width, height


video_size.__name__ = "WxH size"


def size_list(text: str) -> tuple[int, ...]:
    sizes = tuple(int(v) for v in text.split(",") if v.strip())
    if not sizes or min(sizes) < 20:
        raise ValueError(text)
    return sizes


size_list.__name__ = "comma-separated sizes of 20 px or more"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default="random",
                        help="model file, or 'random' for a random-weight ResNet34 (speed does not depend "
                             "on weights)")
    parser.add_argument("--img-size", type=positive_int, default=48, help="input size for --checkpoint random")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed calls per photo stage")
    parser.add_argument("--frames", type=positive_int, default=60, help="frames of the synthetic video")
    parser.add_argument("--video-size", type=video_size, default="640x480", metavar="WxH",
                        help="frame size of the synthetic video")
    parser.add_argument("--cam", default="gradcam", choices=CAMS[1:], help="method for the --cam rows")
    parser.add_argument("--lfw-sizes", type=size_list, default="28,40,64,96",
                        help="face sizes (px) for the LFW detection rate")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="torch and OpenCV threads; 0 = their defaults")
    return parser


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: first calls allocate buffers and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


FACE_FREE = ("chelsea", "coffee", "coins", "rocket", "horse", "brick", "grass", "hubble_deep_field", "page", "text",
             "retina", "moon", "immunohistochemistry", "logo", "clock", "cell")


def skimage_rgb(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:  # float images: stretch to 0..255
        image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-9)).astype(np.uint8)
    return image_to_rgb(Image.fromarray(image))


def lfw_canvas(face01: np.ndarray, size: int) -> np.ndarray:
    face = cv2.resize((face01 * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size * 5 // 3, size * 5 // 3), 128, np.uint8)
    canvas[size // 3:size // 3 + size, size // 3:size // 3 + size] = face
    return canvas


def compare_detectors(sizes, repeats: int) -> list[str]:
    photo, lfw = skimage.data.astronaut(), skimage.data.lfw_subset()  # 100 faces, then 100 non-faces
    face_free = {name: skimage_rgb(name) for name in FACE_FREE}
    lines = []
    for name in CASCADES:
        detector = FaceDetector(name, min_face=20)  # 20: the smallest LFW canvases hold 28 px faces
        times = timed(lambda: detector(photo), repeats)
        false = {k: len(detector(v)) for k, v in face_free.items()}
        found = [sum(len(detector(lfw_canvas(f, s))) > 0 for f in lfw[:100]) for s in sizes]
        non_face = sum(len(detector(lfw_canvas(f, max(sizes)))) for f in lfw[100:])
        where = ", ".join(f"{k} {v}" for k, v in false.items() if v) or "-"
        false_text = f"{sum(false.values())} ({where})"
        lines.append(f"{name:<10} {len(detector(photo)):>9} {false_text:<34} "
                     f"{'/'.join(map(str, found)):>16} {non_face:>8} {statistics.median(times) * 1e3:>8.1f}")
    header = (f"{'detector':<10} {'astronaut':>9} {'false boxes, 16 face-free photos':<34} "
              f"{'LFW ' + '/'.join(map(str, sizes)) + ' px':>16} {'non-face':>8} {'ms/photo':>8}")
    return [header, *lines]


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    width, height = size
    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((height, height), Image.BILINEAR))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
    for i in range(frames):
        frame = np.full((height, width, 3), 60, np.uint8)
        x = int((width - height) * i / max(1, frames - 1))  # drifts left to right
        frame[:, x:x + height] = face[:, :width - x]
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint == "random":
            torch.manual_seed(0)
            record = model_record(build_model("resnet34", len(FER2013_CLASSES)), Preprocessing(args.img_size),
                                  arch="resnet34", class_names=FER2013_CLASSES)
            checkpoint = save(record, tmp / "random.pt")
        else:
            checkpoint = Path(args.checkpoint)
        model, ckpt = load_model(checkpoint, device)
        detector_lines = compare_detectors(args.lfw_sizes, args.repeats)
        photo = skimage.data.astronaut()
        rows = []

        for name in CASCADES:
            detector = FaceDetector(name)
            rows.append((f"detect {name}", f"{len(detector(photo))} face(s)", timed(lambda: detector(photo),
                                                                                     args.repeats)))
        detector = FaceDetector()
        crops, _ = crop_faces(photo, detector(photo), DEFAULT_MARGIN)
        item = face_classifier.analyse(photo, detector, DEFAULT_MARGIN, True, source="astronaut", frame=None)
        for cam in ("none", args.cam):
            classifier = face_classifier.Classifier(model, ckpt, device, cam)
            rows.append((f"classify, --cam {cam}", f"{len(crops)} face(s)",
                         timed(lambda: classifier(crops), args.repeats)))
            face_classifier.classify([item], classifier)
            names = classifier.class_names
            rows.append((f"annotate, --cam {cam}", "512x512", timed(lambda: drawing.annotate(item, names),
                                                                     args.repeats)))

        clip = tmp / "clip.mp4"
        write_clip(clip, args.frames, args.video_size)
        video_rows = []
        for cam in ("none", args.cam):
            # predict_FER's own video path, with its default settings and the model already loaded:
            # start-up is not a per-frame cost
            out = tmp / f"out_{cam}"
            classifier = face_classifier.Classifier(model, ckpt, device, cam)
            stats = pipeline.Stats()
            out.mkdir()
            start = time.perf_counter()
            with prediction_outputs.RecordWriter(out / "predictions.jsonl", "jsonl",
                                                 classifier.class_names) as writer:
                predictor = pipeline.Predictor(pipeline.PredictConfig(), detector, classifier, writer, out,
                                               stats, note=lambda message: None)
                pipeline.process_video(sources.Source(str(clip), "video"), predictor,
                                          sources.OutputNames(), progress=False)
            video_rows.append((cam, stats.frames / (time.perf_counter() - start), stats.faces))

    print(f"predict latency: {checkpoint.name if args.checkpoint != 'random' else 'random ResNet34'}, "
          f"{ckpt['img_size']} px, device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats")
    print(f"detectors (minNeighbors {DEFAULT_MIN_NEIGHBORS}, scaleFactor 1.1; LFW: faces found of 100 per size, "
          f"boxes on 100 non-faces):")
    print("\n".join(detector_lines))
    print(f"{'stage (astronaut photo)':<30} {'what':<12} {'median ms':>10} {'min ms':>8}")
    for name, what, times in rows:
        print(f"{name:<30} {what:<12} {statistics.median(times) * 1e3:>10.1f} {min(times) * 1e3:>8.1f}")
    width, height = args.video_size
    print(f"video {width}x{height}, {args.frames} frames: decode, detect, classify, annotate, MP4 encode")
    for cam, fps, faces in video_rows:
        print(f"  --cam {cam:<10} {fps:6.1f} frames/s ({faces} faces found)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
