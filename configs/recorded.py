"""The config a run recorded (its config.json), as a config file: what
``python train.py --workdir RUN`` reads when no --config is given, to continue the run
(``--config.KEY=VALUE`` overrides work as with any config file). Keys the run predates
take the base recipe's values, which are off for every key added since."""

from pathlib import Path

import ml_collections

from configs import base
from resnet_jax.errors import WorkdirError
from resnet_jax.runs.workdir import read_config


def get_config(workdir: str) -> ml_collections.ConfigDict:
    saved = read_config(Path(workdir).expanduser())
    if saved is None:
        raise FileNotFoundError(f"{workdir}/config.json")
    config = base.get_config()
    for key, value in saved.items():
        value = tuple(value) if isinstance(value, list) else value
        try:
            if key in config:
                config[key] = value
            else:  # unknown to this code: the schema names it
                with config.unlocked():
                    config[key] = value
        except TypeError:
            raise WorkdirError(f"{Path(workdir) / 'config.json'}: {key}={value!r} is not of the "
                               f"kind the key takes ({type(config[key]).__name__}); repair it, "
                               "or pass the run's --config file") from None
    return config
