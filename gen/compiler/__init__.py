"""Compilers from models to the ``accelerator`` kind's instruction stream (docs/accelerator.md,
docs/isa.md).

* :mod:`gen.compiler.tiling` -- the program builder (DRAM layout and image, scratchpad plans per
  phase, barriers, instruction annotations) and the tiled GEMM emitter with its planner.
* :mod:`gen.compiler.minilm` -- all-MiniLM-L6-v2 lowered onto a config (issue 17).
"""
