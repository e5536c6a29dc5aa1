"""Session-wide test settings: the seed of the random configs ("test the space, not the presets").

Every `make test` draws fresh random configs: the seed is ``ACCELGEN_CONFIG_SEED`` if set, else
random, and pytest prints it in its header so a failure reproduces with
``ACCELGEN_CONFIG_SEED=<seed> make test`` (or the same variable on one pytest node).
"""

from __future__ import annotations

import os
import random

import pytest

_SEED = int(os.environ.get("ACCELGEN_CONFIG_SEED") or random.SystemRandom().randrange(1 << 20))
# pytest-xdist workers must agree on the seed: the controller exports it before they start.
os.environ["ACCELGEN_CONFIG_SEED"] = str(_SEED)


def pytest_report_header(config):
    return f"accelgen random-config seed: ACCELGEN_CONFIG_SEED={_SEED}"


@pytest.fixture(scope="session")
def config_seed() -> int:
    return _SEED
