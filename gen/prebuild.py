"""Build the Verilator models of presets ahead of the tests that need them.

    python -m gen.prebuild [--harness cocotb] [--opt O0] NAME...

``make test`` starts this in the background as soon as pytest has collected its tests
(tests/conftest.py), with the presets the selected co-simulation tests name, largest design first.
A test that reaches a model under construction waits for it on the build cache's lock
(:mod:`cosim.verilator`) instead of building it a second time, so builds overlap with the tests
that need no build, and no model is built twice.
"""

from __future__ import annotations

import argparse
import sys
import time

from gen.config import PRESET_DIR, load_config

__all__ = ["prebuild", "main"]


def prebuild(names: list[str], *, harness: str = "cocotb", opt: str | None = None,
             log=sys.stdout) -> int:
    """Build the models of ``names`` (preset stems), largest Verilog first; returns failures."""
    from cosim.fast import build
    from gen.sim import design_for

    designs = []
    for name in names:
        path = PRESET_DIR / f"{name}.yaml"
        if path.exists():
            designs.append(design_for(load_config(path)))
    designs.sort(key=lambda d: -d.verilog.stat().st_size)
    failures = 0
    for design in designs:
        start = time.monotonic()
        try:
            made = build(design, harness=harness, opt=opt)
        except Exception as exc:            # the test that needs it reports the build error
            failures += 1
            print(f"prebuild {design.name}: failed: {str(exc).splitlines()[0]}", file=log,
                  flush=True)
            continue
        print(f"prebuild {design.name}: {'cached' if made.cached else 'built'} in "
              f"{time.monotonic() - start:.1f} s", file=log, flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gen.prebuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="preset names (configs/NAME.yaml); default: every preset")
    parser.add_argument("--harness", default="cocotb", choices=("cocotb", "fast"))
    parser.add_argument("--opt", default=None, help="O0..O3 (default: the harness's own)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    return 1 if prebuild(names, harness=args.harness, opt=args.opt) else 0


if __name__ == "__main__":
    sys.exit(main())
