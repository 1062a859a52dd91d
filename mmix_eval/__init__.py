"""mmix-eval: train and evaluate Manifold Mixup (and your own regularizer) for robustness and calibration."""

__version__ = "0.1.0"
