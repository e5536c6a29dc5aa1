"""Config of the whole accelerator (kind ``accelerator``): docs/accelerator.md.

Nested mappings: ``formats`` (activation, weight, kv), ``matrix``, ``accumulator``,
``scratchpad``, ``memory`` and ``vector`` (with the MXInt units' knobs under ``softmax``,
``layernorm`` and ``gelu``, named and defaulted as the fields of
``software_model.mxint_softmax.SoftmaxSpec``, ``mxint_layernorm.LayerNormSpec`` and
``mxint_gelu.GeluSpec``; the units' formats are the activation format).

:meth:`AcceleratorConfig.accelerator_params` maps the config onto the golden model's plain
:class:`software_model.accelerator.AcceleratorParams`; every cross-field rule lives there (one
place) and comes back here as problems naming the config's keys.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gen.schema import ConfigBase, Problem, param
from software_model.mxint_gelu import GeluSpec
from software_model.mxint_layernorm import LayerNormSpec
from software_model.mxint_softmax import SoftmaxSpec

__all__ = ["AcceleratorConfig", "TensorFormatConfig", "FormatsConfig", "MatrixConfig",
           "AccumulatorConfig", "ScratchpadConfig", "MemoryConfig", "SoftmaxConfig",
           "LayerNormConfig", "GeluConfig", "VectorConfig", "random_accelerator_config"]


def _default(spec_cls, name):
    return next(f.default for f in dataclasses.fields(spec_cls) if f.name == name)


@dataclass(frozen=True)
class TensorFormatConfig(ConfigBase):
    type: str = param("mxint: an exponent per block, from the data; int: one power-of-two "
                      "exponent per tensor, given by the instruction that writes it",
                      default="mxint", choices=("mxint", "int"))
    element_width: int = param("Mantissa bits, sign included", default=8, min=2, max=16)


@dataclass(frozen=True)
class FormatsConfig(ConfigBase):
    activation: TensorFormatConfig = param("Format of activations (and of the vector unit's "
                                           "nonlinear units)", default=TensorFormatConfig())
    weight: TensorFormatConfig = param("Format of weights",
                                       default=TensorFormatConfig("mxint", 4))
    kv: TensorFormatConfig = param("Format of the KV cache", default=TensorFormatConfig())


@dataclass(frozen=True)
class MatrixConfig(ConfigBase):
    rows: int = param("Rows of the output-stationary grid (BLEN when flattened)", default=4,
                      min=1, max=256)
    cols: int = param("Columns of the grid (a power of two)", default=4, min=1, max=256)
    sub_arrays: int = param("S grids joined by an adder tree (a power of two): 1 = square "
                            "rows x cols array; S > 1 with rows = cols = BLEN is the flattened "
                            "BLEN x MLEN array, MLEN = S * BLEN", default=1, min=1, max=256)
    dataflow: str = param("Dataflow of the grids", default="output_stationary",
                          choices=("output_stationary",))


@dataclass(frozen=True)
class AccumulatorConfig(ConfigBase):
    width: int = param("Bits of an accumulator number (saturating)", default=40, min=8, max=62)
    lsb: int = param("Weight of an accumulator number's LSB: 2^lsb", default=-16, min=-64,
                     max=64)
    words: int = param("ACC words (one tile row of cols numbers each)", default=256, min=1,
                       max=1 << 20)


@dataclass(frozen=True)
class ScratchpadConfig(ConfigBase):
    words: int = param("SP words (a power of two; one word is one block)", default=1024, min=1,
                       max=1 << 24)
    banks: int = param("SP banks (a power of two; word a in bank a mod banks)", default=4,
                       min=1, max=256)


@dataclass(frozen=True)
class MemoryConfig(ConfigBase):
    address_bits: int = param("Off-chip (DRAM) word address bits", default=24, min=8, max=32)
    port_words: int = param("Words per memory-port beat (port width = port_words words)",
                            default=2, min=1, max=64)


def _knob(spec_cls, name, doc):
    default = _default(spec_cls, name)
    return param(doc, default=default)


@dataclass(frozen=True)
class SoftmaxConfig(ConfigBase):
    """Knobs of software_model.mxint_softmax.SoftmaxSpec (docs/mxint.md)."""
    max_row_blocks: int = _knob(SoftmaxSpec, "max_row_blocks",
                                "Longest softmax row in blocks (VSMAX; also the longest "
                                "online row, which sizes the running sum)")
    scale: float = _knob(SoftmaxSpec, "scale", "Scores are multiplied by this (e.g. 1/sqrt(d))")
    scale_frac_bits: int = _knob(SoftmaxSpec, "scale_frac_bits",
                                 "Fraction bits of the constant scale * log2(e)")
    range_bits: int = _knob(SoftmaxSpec, "range_bits",
                            "|scale * x * log2 e| < 2^range_bits is exact; beyond saturates")
    exp_frac_bits: int = _knob(SoftmaxSpec, "exp_frac_bits",
                               "Fraction bits of the log2-domain argument")
    exp_segment_bits: int = _knob(SoftmaxSpec, "exp_segment_bits",
                                  "exp2 table: 2^this segments over [0, 1)")
    exp_degree: int = _knob(SoftmaxSpec, "exp_degree", "exp2 polynomial degree per segment")
    exp_bits: int = _knob(SoftmaxSpec, "exp_bits", "Fraction bits of exp2 and the summed terms")
    recip_table_bits: int = _knob(SoftmaxSpec, "recip_table_bits",
                                  "Reciprocal seed table: 2^this entries")
    newton_steps: int = _knob(SoftmaxSpec, "newton_steps", "Newton steps after the seed")
    recip_bits: int = _knob(SoftmaxSpec, "recip_bits", "Fraction bits of the reciprocal")


@dataclass(frozen=True)
class LayerNormConfig(ConfigBase):
    """Knobs of software_model.mxint_layernorm.LayerNormSpec (docs/mxint.md)."""
    row_length: int = param("Elements per LayerNorm row (VLNORM's n; a multiple of "
                            "block_size)", default=64)
    frac_bits: int = _knob(LayerNormSpec, "frac_bits", "Fraction bits of the fixed-point input")
    int_bits: int = _knob(LayerNormSpec, "int_bits", "|x| < 2^int_bits is exact")
    eps: float = _knob(LayerNormSpec, "eps", "Epsilon added to the variance")
    rsqrt_table_bits: int = _knob(LayerNormSpec, "rsqrt_table_bits",
                                  "Inverse square root seed table: 2^this entries")
    newton_steps: int = _knob(LayerNormSpec, "newton_steps", "Newton steps after the seed")
    rsqrt_bits: int = _knob(LayerNormSpec, "rsqrt_bits",
                            "Fraction bits of the inverse square root")
    norm_frac_bits: int = _knob(LayerNormSpec, "norm_frac_bits",
                                "Fraction bits of (x - mean) / sigma")
    out_frac_bits: int = _knob(LayerNormSpec, "out_frac_bits",
                               "Fraction bits of gamma * z + beta")
    out_int_bits: int = _knob(LayerNormSpec, "out_int_bits", "|y| < 2^out_int_bits")


@dataclass(frozen=True)
class GeluConfig(ConfigBase):
    """Knobs of software_model.mxint_gelu.GeluSpec (docs/mxint.md)."""
    frac_bits: int = _knob(GeluSpec, "frac_bits", "Fraction bits of the fixed-point input")
    int_bits: int = _knob(GeluSpec, "int_bits", "|x| < 2^int_bits is exact")
    range_bits: int = _knob(GeluSpec, "range_bits",
                            "The polynomial covers [-2^range_bits, 2^range_bits)")
    segment_bits: int = _knob(GeluSpec, "segment_bits", "2^this polynomial segments")
    degree: int = _knob(GeluSpec, "degree", "Polynomial degree per segment")
    out_frac_bits: int = _knob(GeluSpec, "out_frac_bits",
                               "Fraction bits of the result before rounding")


@dataclass(frozen=True)
class VectorConfig(ConfigBase):
    softmax_rows: int = param("Rows the online-softmax state holds (VSMAXO, ACCSCALE, "
                              "ACCNORM rows)", default=16, min=1, max=65535)
    softmax: SoftmaxConfig = param("MXInt softmax (VSMAX, VSMAXO, ACCNORM)",
                                   default=SoftmaxConfig())
    layernorm: LayerNormConfig = param("MXInt LayerNorm (VLNORM)", default=LayerNormConfig())
    gelu: GeluConfig = param("MXInt GELU (VGELU)", default=GeluConfig())


_SPECS = (("softmax", SoftmaxSpec), ("layernorm", LayerNormSpec), ("gelu", GeluSpec))


@dataclass(frozen=True)
class AcceleratorConfig(ConfigBase):
    """Matrix unit, vector unit, scratchpad, accumulator memory and memory port executing the
    instruction stream of docs/isa.md."""
    kind: ClassVar[str] = "accelerator"

    name: str = param("Name of the design: Verilog top and output folder (default: file stem)",
                      default="accelerator")
    block_size: int = param("B: elements per block (one memory word), shared by every format",
                            default=8, choices=(8, 16, 32, 64))
    exponent_width: int = param("Bits of every block's two's-complement shared exponent",
                                default=6, min=3, max=8)
    formats: FormatsConfig = param("Format of each tensor class", default=FormatsConfig())
    matrix: MatrixConfig = param("Matrix unit", default=MatrixConfig())
    accumulator: AccumulatorConfig = param("Accumulator numbers and memory (ACC)",
                                           default=AccumulatorConfig())
    scratchpad: ScratchpadConfig = param("On-chip scratchpad (SP)", default=ScratchpadConfig())
    memory: MemoryConfig = param("Off-chip memory port", default=MemoryConfig())
    vector: VectorConfig = param("Vector unit", default=VectorConfig())
    pipelined: bool = param(
        "Cut the paths deeper than an int8 multiply-accumulate PE (about 40 gate levels) with "
        "registers (docs/accelerator.md): PE product register, two-stage ACC write-back, "
        "scratchpad reader output register, VADD and ACCNORM stages, 8-bit multiplier chunks "
        "in the nonlinear units; a few cycles more per instruction (docs/isa.md); false gives "
        "the unpipelined layout", default=True)

    # -- mapping onto the golden model -------------------------------------------------------
    def _formats(self):
        from software_model.accelerator import TensorFormat
        f = self.formats
        return tuple(TensorFormat(c.type, c.element_width)
                     for c in (f.activation, f.weight, f.kv))

    def _specs(self):
        """``(specs, problems)``: each unit's spec from its knobs and the activation format."""
        from software_model.mxint import MXIntFormat
        act = MXIntFormat(self.formats.activation.element_width, self.block_size,
                          self.exponent_width)
        specs, problems = {}, []
        for name, spec_cls in _SPECS:
            knobs = dataclasses.asdict(getattr(self.vector, name))
            kwargs = dict(in_fmt=act, out_fmt=act, **knobs)
            if spec_cls is LayerNormSpec:
                kwargs["param_fmt"] = act
            try:
                specs[name] = spec_cls(**kwargs)
            except (ValueError, TypeError) as exc:
                # the specs' messages read "<knob> must be <allowed>, not <value>" or name the
                # knob first: report them under the knob's key
                text = str(exc)
                first = text.split(" ", 1)[0]
                match = re.fullmatch(r"(\w+) must be (.*), not (.*)", text)
                if match and match.group(1) in knobs:
                    problems.append(Problem(f"vector.{name}.{first}", knobs[first],
                                            match.group(2)))
                elif first in knobs:
                    problems.append(Problem(f"vector.{name}.{first}", knobs[first], "",
                                            message=f"got {knobs[first]}: {text}"))
                else:
                    problems.append(Problem(f"vector.{name}", None, "", message=text))
        return specs, problems

    def _params_kwargs(self, specs) -> dict:
        m, acc, sp, mem = self.matrix, self.accumulator, self.scratchpad, self.memory
        return dict(block_size=self.block_size, exponent_width=self.exponent_width,
                    formats=self._formats(), rows=m.rows, cols=m.cols, sub_arrays=m.sub_arrays,
                    acc_width=acc.width, acc_lsb=acc.lsb, acc_words=acc.words,
                    sp_words=sp.words, sp_banks=sp.banks, address_bits=mem.address_bits,
                    port_words=mem.port_words, softmax_rows=self.vector.softmax_rows, **specs)

    def check(self):
        from software_model.accelerator import AcceleratorParams
        specs, problems = self._specs()
        yield from problems
        if problems:
            return
        for key, value, allowed in AcceleratorParams.field_problems(
                **self._params_kwargs(specs)):
            if key.startswith("vector.") and not isinstance(value, (int, float, str)):
                yield Problem(key, None, "", message=allowed)
            else:
                yield Problem(key, value, allowed)

    def accelerator_params(self):
        """The golden model's :class:`~software_model.accelerator.AcceleratorParams`."""
        from software_model.accelerator import AcceleratorParams
        specs, problems = self._specs()
        if problems:
            raise ValueError(problems[0].render(self.name))
        return AcceleratorParams(**self._params_kwargs(specs))

    # -- mapping onto the RTL (hw/accelerator.py), the one place that does it ---------------
    def parameters(self) -> dict:
        """``hw.accelerator.Accelerator``'s keyword arguments."""
        p = self.accelerator_params()
        return dict(block_size=p.block_size, exponent_width=p.exponent_width,
                    class_widths=tuple(f.element_width for f in p.formats),
                    class_types=tuple(f.type for f in p.formats), rows=p.rows, cols=p.cols,
                    sub_arrays=p.sub_arrays, acc_width=p.acc_width, acc_lsb=p.acc_lsb,
                    acc_words=p.acc_words, sp_words=p.sp_words, sp_banks=p.sp_banks,
                    address_bits=p.address_bits, port_words=p.port_words,
                    softmax_rows=p.softmax_rows, softmax=p.softmax, layernorm=p.layernorm,
                    gelu=p.gelu, pipelined=self.pipelined)

    def elaborate(self):
        from hw.accelerator import Accelerator
        return Accelerator(**self.parameters())

    # -- derived facts (reported by `accelgen explain`, docs/accelerator.md section 3) -------
    @property
    def multipliers(self) -> int:
        return self.matrix.rows * self.matrix.cols * self.matrix.sub_arrays

    @property
    def operand_words_per_job(self) -> int:
        """S * (rows + cols): SP words a full matrix job reads."""
        return self.matrix.sub_arrays * (self.matrix.rows + self.matrix.cols)

    @property
    def operand_full_rate(self) -> bool:
        """Whether S * (rows + cols) <= B * banks (the loader keeps the matrix unit busy)."""
        return self.operand_words_per_job <= self.block_size * self.scratchpad.banks


def random_accelerator_config(seed, *, small: bool = True) -> dict:
    """A seeded random *valid* accelerator config as YAML-like data (``kind`` included);
    ``seed``: an int or a ``numpy.random.Generator`` (``gen.random_configs`` passes its own).
    ``small``: sizes that keep the golden model and random programs fast in tests."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    seed = int(rng.integers(1 << 30)) if isinstance(seed, np.random.Generator) else seed

    def pick(values):
        return values[int(rng.integers(len(values)))]

    B = pick([8, 16] if small else [8, 16, 32, 64])
    ew = int(rng.integers(3, 9))
    widths = [int(rng.integers(2, 17)) for _ in range(3)]
    types = [pick(["mxint", "mxint", "int"]) for _ in range(3)]
    flattened = rng.random() < 0.5
    if flattened:
        blen = pick([1, 2, 4])
        rows = cols = blen
        S = pick([2, 4, 8])
    else:
        rows = int(rng.integers(1, 9))
        cols = pick([1, 2, 4, 8])
        S = 1
    banks = pick([1, 2, 4, 8])
    sp_words = pick([256, 512, 1024])
    acc_width = int(rng.integers(16, 50 - max(0, (S - 1).bit_length())))
    recip_bits = int(rng.integers(6, 15))
    acc_width = min(acc_width, 62 - recip_bits)
    return {
        "kind": "accelerator", "name": f"random_{seed}", "block_size": B,
        "exponent_width": ew,
        "formats": {c: {"type": t, "element_width": w}
                    for c, t, w in zip(("activation", "weight", "kv"), types, widths)},
        "matrix": {"rows": rows, "cols": cols, "sub_arrays": S},
        "accumulator": {"width": acc_width, "lsb": int(rng.integers(-24, -4)),
                        "words": pick([64, 128, 256])},
        "scratchpad": {"words": sp_words, "banks": banks},
        "memory": {"address_bits": 16, "port_words": pick([w for w in (1, 2, 4) if w <= banks])},
        "vector": {
            "softmax_rows": pick([4, 8, 16]),
            "softmax": {"max_row_blocks": pick([4, 8, 16]),
                        "scale": float(pick([1.0, 0.5, 0.125])),
                        "exp_bits": int(rng.integers(8, 15)), "recip_bits": recip_bits,
                        "exp_degree": pick([0, 1, 2])},
            "layernorm": {"row_length": B * pick([2, 4]),
                          "frac_bits": int(rng.integers(6, 12)),
                          "int_bits": int(rng.integers(4, 9))},
            "gelu": {"frac_bits": int(rng.integers(6, 11)), "degree": pick([1, 2])},
        },
        "pipelined": bool(rng.random() < 0.75),
    }
