"""A search space written in Hydra's override syntax → Optuna distributions.

As the Hydra Optuna sweeper reads ``hydra.sweeper.params``::

    model.optimizer.lr: tag(log, interval(1e-4, 1e-2))   # FloatDistribution(log=True)
    data.batch_size: choice(32, 64, 128)                  # CategoricalDistribution
    callbacks.inlier.model.n_components: range(1, 9)      # IntDistribution(1, 8)
    callbacks.inlier.aggregation: mean                    # fixed: passed to every trial as is

``interval`` of two integers is an integer distribution; ``range(a, b, s)`` excludes ``b`` as
Python's ``range`` does.
"""

from __future__ import annotations

from typing import Any, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override (``choice``, ``range``, ``interval``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            raise ValueError(f"{override.input_line}: range() of floats is no Optuna distribution; use "
                             "interval(a, b) or choice(...)")
        last = value.start + (value.stop - value.start - 1) // value.step * value.step
        return IntDistribution(int(value.start), int(last), step=int(value.step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: not a search space (choice, range or interval)")


def parse_space(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``params`` (key → override value) → (distributions by key, fixed values by key)."""
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    distributions, fixed = {}, {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return distributions, fixed
