"""asd-lightning: unsupervised anomalous sound detection (DCASE Task 2) with Lightning + Hydra."""

__version__ = "0.1.0"
