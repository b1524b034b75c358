"""Shared core of Expression-Deciphered: data, model, checkpoints, training engine and reports.

The three top-level scripts (train_resnet34.py, gradcam_FER.py, attentionMap_FER.py) are thin entry
points over this package, so preprocessing, model building and checkpoint I/O are defined once.
"""
