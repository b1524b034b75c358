"""Demo layer: the procedural faces (`synthetic`) that let a fresh clone train and test offline.

The generator knows where each expression's evidence is drawn, which the explanation tests use as
ground truth. Imports only `expression.core`.
"""
