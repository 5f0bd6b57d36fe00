"""What every stage does first: read `params.yaml`, and turn a bad one into a one-line error."""
from __future__ import annotations

import sys

from cvae.config import ConfigError, Params, load_params


def params(path: str = "params.yaml") -> Params:
    try:
        return load_params(path)
    except ConfigError as error:
        sys.exit(f"params.yaml: {error}")
