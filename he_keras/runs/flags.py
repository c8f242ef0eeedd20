"""Command-line flags generated from `TrainConfig`: one default, one help.

`define_flags` defines one absl flag per `TrainConfig` field (its type read
from the annotation, its default and help from the field) and one per
`FRAMEWORK_PARAMETERS` entry; `config_from_flags` reads them back into a
`TrainConfig`. `apps/train.py` is the caller.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from absl import flags

from he_keras.runs.config import FRAMEWORK_PARAMETERS, TrainConfig

# Annotation -> absl definer. `Sequence[...]` fields are comma lists.
_DEFINERS = {
    "str": flags.DEFINE_string,
    "Optional[str]": flags.DEFINE_string,
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "Optional[float]": flags.DEFINE_float,
    "bool": flags.DEFINE_boolean,
    "Optional[bool]": flags.DEFINE_boolean,
    "Sequence[str]": flags.DEFINE_list,
    "Sequence[float]": flags.DEFINE_list,
}
_PARAMETER_DEFINERS = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}


def config_fields() -> list:
    """The `TrainConfig` fields that are flags (all but `framework_params`)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "framework_params"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, module_name: Optional[str] = None) -> None:
    """Defines the flags of every `TrainConfig` setting in `flag_values`.

    Args:
        flag_values: Where to define them (absl's global `FLAGS` for an app).
        module_name: The module whose flags they are in `--help` (an app
            passes its own name; default: this module).

    Example:

    ```python
    define_flags()
    # python apps/train.py --framework=trades --beta=6 --epochs=3
    ```
    """
    for field in config_fields():
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        if isinstance(default, tuple):
            default = [str(v) for v in default]
        _DEFINERS[str(field.type)](field.name, default, field.metadata["help"], flag_values=flag_values,
                                   module_name=module_name)
    for name, (kind, help_text) in FRAMEWORK_PARAMETERS.items():
        _PARAMETER_DEFINERS[kind](name, None, help_text, flag_values=flag_values, module_name=module_name)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> TrainConfig:
    """The validated `TrainConfig` of parsed flags.

    Args:
        flag_values: Parsed flags defined by `define_flags`.

    Returns:
        The config, validated (`TrainConfig.validate`).

    Raises:
        ValueError: naming the first invalid value.
    """
    values = {}
    for field in config_fields():
        value = flag_values[field.name].value
        if str(field.type) == "Sequence[float]":
            try:
                value = tuple(float(v) for v in value)
            except ValueError as err:
                raise ValueError(f"`{field.name}` must be numbers. Received: {value}") from err
        elif str(field.type).startswith("Sequence"):
            value = tuple(value)
        values[field.name] = value
    params = {name: flag_values[name].value for name in FRAMEWORK_PARAMETERS
              if flag_values[name].value is not None}
    config = TrainConfig(framework_params=params, **values)
    config.validate()
    return config
