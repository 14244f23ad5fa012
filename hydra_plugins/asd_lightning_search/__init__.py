"""asd-lightning's per-machine-type Optuna search as a Hydra sweeper (``hydra/sweeper=per_machine_optuna``).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace; the search itself is
:class:`asd_lightning.sweeps.search.PerMachineSearch`. Importing this module stays cheap (Hydra
imports every plugin module at start): Optuna is imported when a search runs.
"""

from __future__ import annotations

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PerMachineOptunaSweeper(Sweeper):
    """One Optuna study per machine type, trials launched by Hydra's launcher (see the search module)."""

    def __init__(self, **settings: Any) -> None:
        from asd_lightning.sweeps.search import PerMachineSearch

        self.search = PerMachineSearch(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        import os
        import sys

        from asd_lightning.utils.errors import EXIT_USER_ERROR, UserError, one_line

        try:
            return self.search.sweep(arguments)
        except UserError as error:  # e.g. report sections without test clips: one line, no traceback
            if os.environ.get("HYDRA_FULL_ERROR"):
                raise
            print(f"asd-train: error: {one_line(error)}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
