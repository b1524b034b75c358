"""Inference layer: faces in pictures and videos -> expressions (and a map per face).

Face detection (`faces`), the classifier and its Python API (`classifier.FacePredictor`), the batch
pipeline over files, videos and a webcam (`pipeline`, `sources`), annotated copies (`drawing`), the
files it writes (`outputs`) and ONNX export (`onnx_export`).

    from expression.inference import FacePredictor
    predictor = FacePredictor.from_checkpoint()          # the shipped FER2013 model
    for face in predictor.predict("photo.jpg"):
        print(face["box"], face["label"], face["probabilities"])

Imports `expression.core` (and `expression.demo` for the export's parity faces) and the standalone `gradcam`.
"""
from expression.inference.classifier import FacePredictor

__all__ = ["FacePredictor"]
