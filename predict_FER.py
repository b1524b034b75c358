"""Find faces in photos and videos, classify their expressions, and optionally show why (Grad-CAM).

    python predict_FER.py photo.jpg holiday/ "shots/*.png" clip.mp4           # newest FER model or the shipped one
    python predict_FER.py --checkpoint models/resnet34_demo.pt --cam gradcam group.jpg
    python predict_FER.py --detector none --format csv data/fer2013/test      # pre-cropped faces
    python predict_FER.py --every 5 --out runs/clip clip.mp4                  # every 5th frame
    python predict_FER.py --webcam 0                                         # live; q quits

PATH is an image, a folder (its images and videos, plus <folder>/<class>/ images whose folder name is
kept as true_label), a glob or a video file. Faces are found with an OpenCV Haar cascade that ships
inside opencv-python (no download), cropped square with --margin, preprocessed exactly as the
checkpoint was trained (size, gray/RGB, mean/std) and classified in batches.

Writes to --out:
  predictions.jsonl (or .csv)  one record per face: source, frame (video frame index; null for images),
                               face (index in the image), box [x, y, w, h] in the original pixels,
                               label, probabilities {class: p}, true_label, annotated, note.
                               An image or frame without a face still gets one record, with face, box,
                               label and probabilities null and note "no face found".
                               CSV: the same, box as x,y,w,h columns and one prob_<class> column each.
  <stem>_annotated.jpg         boxes, labels and probability bars (and the heat map with --cam);
  <stem>_annotated.mp4         for a video: the processed frames at fps / --every (at least 1), so it
                               keeps its length.
  summary.json                 counts per label, files without faces, unreadable files, timing.
Unreadable files are listed and skipped; the exit code is 2 only when nothing could be processed.
The pipeline itself is expression/inference/pipeline.py (its settings: PredictConfig); its Python API,
FacePredictor, is in expression/inference/classifier.py.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from expression.apps.cli import (ArgumentParser, UsageError, add_checkpoint_argument, add_device_argument,
                                 non_negative_int, number_in, positive_int, resolve_device, run_main, use_progress_bars)
from expression.apps.configs import predict_config
from expression.core.cam_policy import CAMS, DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD
from expression.core.checkpoint import open_model
from expression.core.io import WriteError, ensure_writable_dir, write_json
from expression.inference.classifier import DEFAULT_FACE_TTA, FACE_TTA, Classifier
from expression.inference.faces import (DEFAULT_DETECT_MAX_SIDE, DEFAULT_DETECTOR, DEFAULT_MIN_FACE,
                                        DEFAULT_MIN_NEIGHBORS, DETECTORS, FaceDetector)
from expression.inference.outputs import RecordWriter
from expression.inference.pipeline import MAX_MARGIN, PredictConfig, Predictor, Stats, process_all
from expression.inference.sources import OutputNames, find_sources


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="images, folders, globs or video files")
    parser.add_argument("--webcam", type=non_negative_int, default=None, metavar="N",
                        help="read camera N live instead of PATHs: a window with boxes and labels, q quits "
                             "(default: off)")
    add_checkpoint_argument(parser)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=DETECTORS,
                        help="face detector: OpenCV Haar cascade frontalface_alt2 or frontalface_default "
                             "(haar), or none = the whole image is one face (pre-cropped faces)")
    parser.add_argument("--min-face", type=positive_int, default=DEFAULT_MIN_FACE,
                        help="smallest face side to look for, in the image's pixels")
    parser.add_argument("--min-neighbors", type=positive_int, default=DEFAULT_MIN_NEIGHBORS,
                        help="overlapping hits a face needs: lower finds more faces and more false ones")
    parser.add_argument("--detect-max-side", type=non_negative_int, default=DEFAULT_DETECT_MAX_SIDE,
                        help="larger images are downscaled to this longer side for detection, boxes are "
                             "mapped back (0 = scan at full size: slower, finds smaller faces)")
    parser.add_argument("--margin", type=number_in(0.0, MAX_MARGIN), default=PredictConfig.margin,
                        help="context added on each side of a face box before classification, as a fraction "
                             "of the box (FER2013 crops show brow to chin)")
    parser.add_argument("--cam", nargs="?", default="none", const=DEFAULT_CAM_METHOD, choices=CAMS,
                        help=f"blend this explanation of the predicted class over each face in the annotated "
                             f"output; --cam alone = {DEFAULT_CAM_METHOD} (the map the explanation report "
                             f"trusts at 48 px)")
    parser.add_argument("--cam-layer", default=DEFAULT_CAM_LAYER,
                        help="network stage explained by --cam (at 48 px: layer1 12x12, layer2 6x6, layer3 3x3, "
                             "layer4 2x2), or 'fused' for layer1..layer4 fused into one map")
    parser.add_argument("--tta", default=DEFAULT_FACE_TTA, choices=FACE_TTA,
                        help="flip: average each face's probabilities with its mirror image's (+0.7 points on "
                             "FER2013 PublicTest for the shipped model); none: the plain face only. A heat map "
                             "always explains the plain face")
    parser.add_argument("--every", type=positive_int, default=PredictConfig.every,
                        help="process every N-th video (or webcam) frame")
    parser.add_argument("--batch-size", type=positive_int, default=PredictConfig.batch_size,
                        help="faces per forward pass")
    parser.add_argument("--out", default="runs/predict", help="output folder")
    parser.add_argument("--format", default="jsonl", choices=("jsonl", "csv"), help="records file format")
    parser.add_argument("--no-annotate", action="store_true",
                        help="write the records only, no annotated images or videos")
    add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-file notes")
    return parser


def main(args) -> int:
    if args.webcam is not None and args.paths:
        raise UsageError("give PATHs or --webcam N, not both")
    if args.webcam is None and not args.paths:
        raise UsageError("nothing to do: give image/video/folder PATHs or --webcam N")
    out_dir = Path(args.out)
    sources, missing = find_sources(args.paths, out_dir)
    if args.webcam is None and not sources:
        raise UsageError(f"no images or videos found in {', '.join(missing)}: check the paths (quote globs)")

    progress, start = use_progress_bars(args.quiet), time.perf_counter()
    device = resolve_device(args.device)
    model, ckpt, checkpoint = open_model(args.checkpoint, device, real_photos=True)
    detector = FaceDetector(args.detector, args.min_face, args.detect_max_side, args.min_neighbors)
    try:
        classifier = Classifier(model, ckpt, device, args.cam, args.cam_layer, args.batch_size, args.tta)
    except ValueError as err:
        raise UsageError(f"--cam-layer {err}") from None
    ensure_writable_dir(out_dir, "--out")
    stats = Stats(missing=list(missing))

    def note(message: str) -> None:
        if not args.quiet:
            tqdm.write(message, file=sys.stderr)

    for spec in missing:
        note(f"{spec}: no such file, folder or matching image/video: skipped")
    records_path = out_dir / f"predictions.{args.format}"
    try:
        with RecordWriter(records_path, args.format, classifier.class_names) as writer:
            predictor = Predictor(predict_config(args), detector, classifier, writer, out_dir, stats, note)
            process_all(predictor, sources, OutputNames(), progress, webcam=args.webcam)
            writer.discard = stats.images + stats.frames == 0  # never replace old records by an empty file
    except WriteError as err:  # disk full, permissions changed under us: the file at fault is named
        raise UsageError(f"{err}. Annotated copies finished before it are kept in {out_dir}/, "
                         f"{records_path.name} is not replaced") from None
    except OSError as err:  # no MP4 encoder
        raise UsageError(f"writing to {out_dir} failed ({err}): check free space and permissions") from None
    if stats.images + stats.frames == 0:
        if stats.interrupted:
            print("interrupted (Ctrl-C) before any picture was done: nothing was written", file=sys.stderr)
            return 130
        if args.webcam is not None:
            raise UsageError(f"camera {args.webcam} gave no frames")
        bad = "; ".join(f"{p} ({why})" for p, why in stats.unreadable[:3])
        raise UsageError(f"nothing could be processed: {len(stats.unreadable)} unreadable file(s)"
                         + (f": {bad}" if bad else "") + (" ..." if len(stats.unreadable) > 3 else ""))

    summary = stats.summary(checkpoint=str(checkpoint), detector=args.detector, records=str(records_path),
                            seconds=round(time.perf_counter() - start, 2))
    write_json(out_dir / "summary.json", summary)
    print_summary(summary, stats, out_dir, args)
    return 130 if stats.interrupted else 0  # what was done is written, but the run did not finish


def print_summary(summary: dict, stats: Stats, out_dir: Path, args) -> None:
    if args.quiet:
        print(summary["records"])
        return
    parts = [f"{stats.images} image(s)"] if stats.images or not stats.frames else []
    if stats.videos or stats.frames:
        parts.append(f"{stats.videos} video(s) / {stats.frames} frame(s)")
    print(f"processed {', '.join(parts)}: {stats.faces} face(s) in {summary['seconds']:.1f} s"
          + (" (interrupted)" if stats.interrupted else ""))
    if stats.labels:
        print("labels: " + ", ".join(f"{k} {v}" for k, v in stats.labels.most_common()))
    if summary["accuracy"] is not None:
        print(f"accuracy on {stats.labelled} faces with a class folder: {summary['accuracy']:.1%}")
    if stats.no_face:
        print(f"no face found in {len(stats.no_face)} image(s)")
    if stats.unreadable:
        print(f"unreadable, skipped: {len(stats.unreadable)}: "
              + ", ".join(p for p, _ in stats.unreadable[:5]) + (" ..." if len(stats.unreadable) > 5 else ""))
    if stats.missing:
        print(f"not found: {', '.join(stats.missing)}")
    print(f"records: {summary['records']}" + ("" if args.no_annotate else f"; annotated copies in {out_dir}/"))


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))
