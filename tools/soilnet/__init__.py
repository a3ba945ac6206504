"""Cloud side of the lens soiling detector: training data from the footage bank, the tile
network, training, calibration of its decision thresholds, ONNX export and the model card.

    python -m tools.soilnet ship            # rebuilds models/soilnet/ (the shipped detector)
    python -m tools.soilnet train --drives 8 --epochs 2 --out build/soilnet-try

Needs the `train` extra (torch CPU build, scikit-image); the vehicle needs none of it.
"""
