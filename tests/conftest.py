"""Session-wide test settings: the seed of the random configs ("test the space, not the presets").

Every `make test` draws fresh random configs: the seed is ``ACCELGEN_CONFIG_SEED`` if set, else
random, and pytest prints it in its header so a failure reproduces with
``ACCELGEN_CONFIG_SEED=<seed> make test`` (or the same variable on one pytest node).

It also starts the Verilator builds of the selected co-simulation tests as soon as they are
collected: one background process (``python -m gen.prebuild``) builds the models of every preset
that a selected ``cosim`` test names in its id, largest first, while pytest runs the tests that
need no build; a test that needs a model still under construction waits for it on the build
cache's lock. With pytest-xdist the first worker starts it; it is stopped when that worker's
session ends. ``ACCELGEN_PREBUILD=0`` turns it off.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

_SEED = int(os.environ.get("ACCELGEN_CONFIG_SEED") or random.SystemRandom().randrange(1 << 20))
# pytest-xdist workers must agree on the seed: the controller exports it before they start.
os.environ["ACCELGEN_CONFIG_SEED"] = str(_SEED)


def pytest_report_header(config):
    return f"accelgen random-config seed: ACCELGEN_CONFIG_SEED={_SEED}"


@pytest.fixture(scope="session")
def config_seed() -> int:
    return _SEED


# -- background builds --------------------------------------------------------------------------

_PREBUILD: subprocess.Popen | None = None


def _preset_names() -> list[str]:
    configs = Path(__file__).resolve().parents[1] / "configs"
    return sorted((p.stem for p in configs.glob("*.yaml")), key=len, reverse=True)


def pytest_collection_finish(session):
    global _PREBUILD
    if os.environ.get("ACCELGEN_PREBUILD", "1") in ("0", "", "false"):
        return
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker not in (None, "gw0") or session.config.option.collectonly:
        return
    presets = _preset_names()
    wanted: list[str] = []
    for item in session.items:
        # lint tests carry the cosim marker too but build nothing
        if item.get_closest_marker("cosim") is None or "lint" in item.name:
            continue
        for name in presets:            # longest first: no name is a prefix of a longer match
            if name in item.nodeid and name not in wanted:
                wanted.append(name)
                break
    if len(wanted) < 2:                 # a single test builds its own model just as soon
        return
    log_dir = Path(__file__).resolve().parents[1] / "build"
    log_dir.mkdir(exist_ok=True)
    log = open(log_dir / "prebuild.log", "w")
    # its own process group, so stopping it also stops the compiler it may be running
    _PREBUILD = subprocess.Popen([sys.executable, "-m", "gen.prebuild", *wanted], stdout=log,
                                 stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
                                 start_new_session=True)


def pytest_sessionfinish(session):
    global _PREBUILD
    if _PREBUILD is not None and _PREBUILD.poll() is None:
        os.killpg(_PREBUILD.pid, signal.SIGTERM)
        try:
            _PREBUILD.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(_PREBUILD.pid, signal.SIGKILL)
    _PREBUILD = None


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv)`` runs the ``accelgen`` CLI in-process and returns ``(exit code, stdout,
    stderr)``; argparse's own usage errors count as exit codes. Whatever the outcome, the CLI
    must not print a traceback or an internal error."""
    from gen.cli import main

    def run(*argv):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and "internal error" not in err
        return code, out, err
    return run
