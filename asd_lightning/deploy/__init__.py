"""Deployment: a self-contained model bundle per machine type and the ``asd-score`` command."""

from asd_lightning.deploy.bundle import ModelBundle

__all__ = ["ModelBundle"]
