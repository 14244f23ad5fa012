"""Sweeps at scale: one results table per multirun (:mod:`~asd_lightning.sweeps.report`), the
per-machine-type hyperparameter search (:mod:`~asd_lightning.sweeps.search`) and its tuned
experiment configs (:mod:`~asd_lightning.sweeps.export`)."""
