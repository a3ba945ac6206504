"""Cloud side of enhancement: degraded pairs, GAN training, ONNX export, quality benchmark.

`python -m tools.gan ship` rebuilds the models in `models/` from packaged real footage.
Needs the `train` extra (torch CPU build, onnx, scikit-image); the vehicle needs none of it.
"""
