"""Fixed-point datapath pieces of the MXInt nonlinear units (softmax, LayerNorm, GELU).

Each function mirrors one of software_model/mxint_fixed.py, bit for bit:

* :class:`Pipeline` builds a pipeline whose every value knows the stage it belongs to, so that
  operands computed at different depths are delayed to meet (the units are deep and their depth
  depends on the config: trees register every ``tree_levels`` levels, long multipliers are split).
  With ``enable`` every register holds while it is low (a global stall, as the other MXInt
  blocks); without it the pipeline never stalls (work is admitted against credits instead).
* :func:`scale_saturate`, :func:`leading_one` (that of hw.primitives): combinational.
* ``Pipeline.tree`` (adder, max and OR trees), ``Pipeline.multiply`` (optionally split into
  registered partial products), :func:`piecewise_polynomial`, :func:`fixed_to_mxint`,
  :func:`normalise`, :func:`reciprocal_newton`, :func:`rsqrt_newton`: pipelined.
"""
from __future__ import annotations

from amaranth import *
from amaranth.lib import data

from hw.mxint_common import clamp_exponent, encode_exponent
from hw.primitives import leading_one

__all__ = ["Staged", "Pipeline", "scale_saturate", "leading_one", "piecewise_polynomial",
           "fixed_to_mxint", "normalise", "reciprocal_newton", "rsqrt_newton", "check_int",
           "check_chunk_bits"]


def check_int(name: str, value, lo: int, hi: int) -> int:
    """Argument check naming the keyword argument, as the golden models' specs do:
    ``ValueError("tree_levels must be an integer from 1 to 8, not 0")``."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")
    return value


def check_chunk_bits(value):
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 4 <= value <= 32:
        raise ValueError(f"multiplier_chunk_bits must be None or an integer from 4 to 32, "
                         f"not {value!r}")
    return value


class Staged:
    """A value (or a list of lane values) and the pipeline stage at which it is valid."""
    __slots__ = ("value", "stage")

    def __init__(self, value, stage: int):
        self.value = value
        self.stage = stage

    def __repr__(self):
        return f"Staged({self.value!r}, stage={self.stage})"


class Pipeline:
    """Stage bookkeeping for one pipeline (see the module docstring).

    ``reg`` registers a value into the next stage; ``at`` returns a value delayed to a later
    stage (the delay registers are made once and shared); ``comb`` applies a function to
    operands aligned to the latest of their stages.  Datapath registers are ``reset_less``;
    ``valid`` chains are built with ``reg(..., control=True)``.
    """

    def __init__(self, m: Module, name: str, *, enable=None, tree_levels: int = 2,
                 chunk_bits=None):
        self.m = m
        self.name = name
        self.enable = enable
        self.tree_levels = tree_levels
        self.chunk_bits = chunk_bits
        self._delays: dict = {}
        self._n = 0

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{self.name}_{base}_{self._n}"

    def _sync(self, stmts):
        if self.enable is None:
            self.m.d.sync += stmts
        else:
            with self.m.If(self.enable):
                self.m.d.sync += stmts

    def signal(self, value, name: str, shape=None) -> Signal:
        """A named combinational signal driven by ``value``."""
        sig = Signal(shape if shape is not None else Value.cast(value).shape(),
                     name=self._name(name))
        self.m.d.comb += sig.eq(value)
        return sig

    def reg(self, x: Staged, name: str = "r", *, shape=None, control: bool = False) -> Staged:
        if isinstance(x.value, (list, tuple)):
            return Staged([self.reg(Staged(v, x.stage), f"{name}{i}", shape=shape,
                                    control=control).value for i, v in enumerate(x.value)],
                          x.stage + 1)
        v = x.value
        if shape is None:
            # a struct/array view keeps its layout through the register
            shape = v.shape() if isinstance(v, data.View) else Value.cast(v).shape()
        sig = Signal(shape, name=self._name(name), reset_less=not control)
        self._sync(sig.eq(v))
        return Staged(sig, x.stage + 1)

    def at(self, x: Staged, stage: int, *, control: bool = False):
        """``x``'s value delayed to ``stage`` (>= x.stage); ``control`` delays are reset."""
        if stage < x.stage:
            raise ValueError(f"cannot move a stage-{x.stage} value back to stage {stage}")
        if isinstance(x.value, (list, tuple)):
            return [self.at(Staged(v, x.stage), stage, control=control) for v in x.value]
        v, s = x.value, x.stage
        while s < stage:
            key = (id(v), s, control)
            hit = self._delays.get(key)
            if hit is None:
                reg = self.reg(Staged(v, s), "v" if control else "d", control=control).value
                self._delays[key] = hit = (v, reg)     # keep v alive: ids must not be reused
            v, s = hit[1], s + 1
        return v

    def comb(self, fn, *xs: Staged, name: str | None = None, shape=None) -> Staged:
        st = max(x.stage for x in xs)
        out = fn(*[self.at(x, st) for x in xs])
        if name is not None:
            if isinstance(out, (list, tuple)):
                out = [self.signal(o, f"{name}{i}", shape) for i, o in enumerate(out)]
            else:
                out = self.signal(out, name, shape)
        return Staged(out, st)

    def stage(self, fn, *xs: Staged, name: str = "s", shape=None) -> Staged:
        """``fn`` of the aligned operands, registered: the result is one stage later."""
        return self.reg(self.comb(fn, *xs), name, shape=shape)

    def tree(self, x: Staged, op, name: str) -> Staged:
        """Balanced tree of ``op`` over the lanes of ``x`` with a register every
        ``tree_levels`` levels; the result is combinational after the last level."""
        level, st = list(x.value), x.stage
        depth = 0
        while len(level) > 1:
            nxt = [op(a, b) for a, b in zip(level[0::2], level[1::2])]
            if len(level) % 2:
                nxt.append(level[-1])
            depth += 1
            if depth % self.tree_levels == 0 and len(nxt) > 1:
                nxt = self.reg(Staged(nxt, st), name).value
                st += 1
            level = nxt
        return Staged(level[0], st)

    def scaled(self, x: Staged, factor: int, name: str) -> Staged:
        """Each lane of ``x`` times the constant ``factor``, registered: the whole product in one
        stage, or with ``chunk_bits`` as :meth:`multiply`'s registered chunk products and their
        sum (a constant wider than a chunk was the deepest first stage of a softmax fed from a
        scratchpad read)."""
        if self.chunk_bits is None:
            return self.reg(Staged([v * factor for v in x.value], x.stage), name)
        outs = [self.multiply(Staged(v, x.stage), Staged(Const(factor), x.stage), f"{name}{i}")
                for i, v in enumerate(x.value)]
        out = Staged([o.value for o in outs], max(o.stage for o in outs))
        return out if out.stage > x.stage else self.reg(out, name)

    def multiply(self, a: Staged, b: Staged, name: str = "mul") -> Staged:
        """``a * b``.  Without ``chunk_bits``: combinational at the operands' stage.  With it,
        both operands are cut into chunks of at most ``chunk_bits`` bits (the top chunk of a
        signed operand signed), the chunk products are registered, summed in carry-save form and
        resolved by a limbed carry-propagate adder: every stage stays shallow whatever the
        widths.  The result is registered in that case."""
        st = max(a.stage, b.stage)
        av, bv = Value.cast(self.at(a, st)), Value.cast(self.at(b, st))
        c = self.chunk_bits
        if c is None or (len(av) <= c and len(bv) <= c):
            return Staged(av * bv, st)

        def chunks(v):
            out = []
            for lo in range(0, len(v), c):
                hi = min(lo + c, len(v))
                piece = v[lo:hi]
                if v.shape().signed and hi == len(v):
                    piece = piece.as_signed()
                out.append((lo, piece))
            return out
        parts = [(la + lb, pa * pb) for la, pa in chunks(av) for lb, pb in chunks(bv)]
        regs = self.reg(Staged([q for _, q in parts], st), name).value
        width = len(av) + len(bv)
        signed_out = av.shape().signed or bv.shape().signed
        terms = [(r.as_signed() if r.shape().signed else r) << sh
                 for (sh, _), r in zip(parts, regs)]
        s_, c_ = carry_save_sum(self.m, terms, width, self._name(f"{name}_cs"))
        return carry_propagate(self, Staged(s_, st + 1), Staged(c_, st + 1), width,
                               self._name(f"{name}_cpa"), signed_result=signed_out)


def scale_saturate(m: Module, v, s, width: int, name: str) -> Signal:
    """``floor(v * 2^s)`` saturated to ``signed(width)`` (software_model.mxint_fixed.
    scale_saturate): ``v`` any signed/unsigned value, ``s`` a signed shift amount."""
    v = Value.cast(v)
    s = Value.cast(s)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    out = Signal(signed(width), name=name)
    vw = len(v) + (0 if v.shape().signed else 1)
    vs = v.as_signed() if v.shape().signed else Cat(v, Const(0, 1)).as_signed()
    # right: an arithmetic shift of vw or more leaves only the sign
    r_amt = Signal(range(vw + 1), name=f"{name}_rshift")
    neg_s = -s
    m.d.comb += r_amt.eq(Mux(neg_s > vw, vw, neg_s))
    right = Signal(signed(vw), name=f"{name}_right")
    m.d.comb += right.eq(vs >> r_amt)
    # left: a shift of width or more saturates anything but zero
    l_amt = Signal(range(width + 1), name=f"{name}_lshift")
    m.d.comb += l_amt.eq(Mux(s > width, width, s))
    left = Signal(signed(vw + width + 1), name=f"{name}_left")
    m.d.comb += left.eq(vs << l_amt)
    over = Signal(name=f"{name}_over")
    chosen = Signal(signed(max(vw, len(left))), name=f"{name}_chosen")
    m.d.comb += [
        chosen.eq(Mux(s >= 0, left, right)),
        over.eq((s > width) & (vs != 0)),
    ]
    with m.If(over):
        m.d.comb += out.eq(Mux(vs < 0, lo, hi))
    with m.Elif(chosen > hi):
        m.d.comb += out.eq(hi)
    with m.Elif(chosen < lo):
        m.d.comb += out.eq(lo)
    with m.Else():
        m.d.comb += out.eq(chosen)
    return out


def piecewise_polynomial(p: Pipeline, u: Staged, poly, name: str) -> Staged:
    """Pipelined :class:`software_model.mxint_fixed.PiecewisePolynomial` on unsigned codes
    ``u`` (a list of lanes): coefficient lookup (registered), then one registered multiply-add
    per degree, then the final floor and clamp (combinational, at the returned stage)."""
    m = p.m
    d, deg, g = poly.delta_bits, poly.degree, poly.guard_bits
    coefs = poly.coefficients
    widths = poly.horner_bits()
    lanes = list(u.value)
    cshape = [signed(max(2, int(max(abs(int(c)) for c in coefs[:, i])).bit_length() + 1))
              for i in range(deg + 1)]
    looked = []
    for lane, code in enumerate(lanes):
        code = Value.cast(code)
        seg = code[d:] if poly.segment_bits else Const(0, 1)
        entries = []
        for i in range(deg + 1):
            table = Array([Const(int(c), cshape[i]) for c in coefs[:, i]])
            entries.append(p.signal(table[seg], f"{name}_c{i}_{lane}", cshape[i]))
        looked.append(entries + [code[:d] if d else Const(0, 1)])
    regs = p.reg(Staged([v for e in looked for v in e], u.stage), f"{name}_coef").value
    per = deg + 2
    st = u.stage + 1
    accs = [Staged(regs[i * per + deg], st) for i in range(len(lanes))]
    deltas = [Staged(regs[i * per + deg + 1], st) for i in range(len(lanes))]
    consts = [[Staged(regs[i * per + j], st) for j in range(deg + 1)] for i in range(len(lanes))]
    for step, i in enumerate(range(deg - 1, -1, -1)):
        width = widths[step + 1]
        nxt = []
        for lane in range(len(lanes)):
            prod = p.multiply(accs[lane], deltas[lane], f"{name}_h{i}_{lane}")
            c = consts[lane][i]
            shifted = p.comb(lambda cv, sh=d * (deg - i): cv << sh, c)
            acc = p.comb(lambda a, b: a + b, prod, shifted)
            nxt.append(p.reg(acc, f"{name}_acc{i}_{lane}", shape=signed(width)))
        accs = nxt
    outs = []
    for lane, acc in enumerate(accs):
        def finish(a, lane=lane):
            v = a >> (d * deg + g)
            if poly.lo_clamp is not None:
                v = Mux(v < poly.lo_clamp, poly.lo_clamp, v)
            if poly.hi_clamp is not None:
                v = Mux(v > poly.hi_clamp, poly.hi_clamp, v)
            return v
        outs.append(p.comb(finish, acc, name=f"{name}_out{lane}"))
    return Staged([o.value for o in outs], max(o.stage for o in outs))


def fixed_to_mxint(p: Pipeline, values: Staged, lsb: Staged, fmt, name: str):
    """Pipelined :func:`software_model.mxint_fixed.fixed_to_mxint` of one block: ``values`` (k
    lanes, signed or unsigned exact integers), ``lsb`` (their common weight 2^lsb, signed) ->
    ``Staged((exponent_field, [mantissas]))``, registered (the caller's output register).

    Stage a: magnitudes and signs.  Stage b: the block's top bit from an OR tree of the
    magnitudes (the leading one of the OR is the leading one of the maximum), the shared
    exponent, clamped, and the right-shift amount.  Stage c: shift with guard and sticky bits
    and the rounding decision.  Stage d: the increment, saturation, the sign, the exponent
    field."""
    m = p.m
    k = fmt.block_size
    first = Value.cast(values.value[0])
    signed_in = first.shape().signed
    width = len(first)
    mags = p.stage(lambda *vs: [Mux(v < 0, -v, v)[:width] if signed_in else v for v in vs],
                   *[Staged(v, values.stage) for v in values.value], name=f"{name}_mag")
    signs = p.stage(lambda *vs: [v < 0 if signed_in else Const(0, 1) for v in vs],
                    *[Staged(v, values.stage) for v in values.value], name=f"{name}_sign")
    orred = p.tree(mags, lambda a, b: a | b, f"{name}_or")
    top = p.comb(lambda v: leading_one(m, v, p._name(f"{name}_top")), orred)
    nonzero = p.comb(lambda v: v != 0, orred)
    ebits = max(len(Value.cast(lsb.value)), (width + 1).bit_length()) + 2
    fb = fmt.fraction_bits

    def exponent(t, nz, l):
        e_true = Signal(signed(ebits), name=p._name(f"{name}_etrue"))
        m.d.comb += e_true.eq(t + l)
        return clamp_exponent(m, e_true, empty=~nz, fmt=fmt, shape=signed(ebits),
                              name=p._name(f"{name}_eblk"))
    e_blk = p.reg(p.comb(exponent, top, nonzero, lsb), f"{name}_e")
    shift = p.reg(p.comb(lambda e, l: e - fb - l, e_blk, lsb), f"{name}_shift")
    st = shift.stage
    # the exponent and shift registers sit one stage after e_blk: align the magnitudes
    mags_at = p.at(mags, st)
    signs_at = p.at(signs, st)
    e_at = p.at(e_blk, st)
    cap = width + 1
    w = fmt.element_width
    rounded, lefts = [], []
    sh = Value.cast(shift.value)
    r_amt = p.signal(Mux(sh < 1, 1, Mux(sh > cap, cap, sh)), f"{name}_ramt",
                     unsigned((cap + 1).bit_length()))
    l_amt = p.signal(Mux(sh >= 0, 0, Mux(-sh > w, w, -sh)), f"{name}_lamt",
                     unsigned((w + 1).bit_length()))
    maxm = fmt.mantissa_max
    lows, bigs, ups = [], [], []
    for i in range(k):
        mag = mags_at[i]
        wide = p.signal(Cat(Const(0, width + 1), mag) >> r_amt, f"{name}_wide{i}")
        q = wide[width + 1:]
        rbit = wide[width]
        sticky = wide[:width].any()
        # the increment is left for the next stage (the shifter and the sticky OR are deep);
        # only the low w bits travel on, plus whether anything above them is set (saturates)
        if fmt.rounding == "half_even":
            up = rbit & (sticky | q[0])
        else:
            up = rbit
        left = p.signal(mag << l_amt, f"{name}_left{i}")
        left_mode = sh <= 0
        chosen = Mux(left_mode, left, q)
        lows.append(chosen[:w])
        bigs.append(chosen[w:].any())
        ups.append(up & ~left_mode)
    stage_c = p.reg(Staged(lows + bigs + ups, st), f"{name}_rnd")
    vals = stage_c.value
    st_c = stage_c.stage
    s_at = p.at(Staged(signs_at, st), st_c)
    e_c = p.at(Staged(e_at, st), st_c)
    outs = []
    for i in range(k):
        mag = vals[i] + vals[2 * k + i]
        clamped = Mux(vals[k + i] | (mag > maxm), maxm, mag)
        outs.append(Mux(s_at[i], -clamped, clamped))
    mans = p.reg(Staged(outs, st_c), f"{name}_man", shape=signed(w))
    field = p.reg(Staged(encode_exponent(e_c, fmt), st_c), f"{name}_exp")
    return Staged((field.value, mans.value), mans.stage)


def normalise(p: Pipeline, x: Staged, frac_bits: int, name: str, *, even: bool = False):
    """Non-negative integer ``x`` -> ``(s, lo)`` (two registered stages):
    ``lo = floor(log2 x)`` (0 for ``x = 0``), rounded down to even with ``even``;
    ``s = floor(x 2^(frac_bits - lo))``: in ``[2^f, 2^(f+1))``, or ``[2^f, 2^(f+2))`` with
    ``even`` (software_model: ``scale_saturate(x, f - lo, ...)``)."""
    m = p.m
    xv = Value.cast(x.value)
    w = len(xv)
    lo_bits = max(1, (w - 1).bit_length())
    top = p.comb(lambda v: leading_one(m, v, p._name(f"{name}_lead")), x)
    if even:
        top = p.comb(lambda t: Cat(Const(0, 1), Value.cast(t)[1:]), top)
    lo = p.reg(top, f"{name}_lo", shape=unsigned(lo_bits))
    xa = p.at(x, lo.stage)
    # Shift left so that bit lo lands at the top (bit w-1), then keep the top bits: one left
    # shifter and a fixed slice.  Below the slice: floor.
    keep = frac_bits + (2 if even else 1)          # bits of s
    lead = 2 if even else 1                        # integer bits of s
    amt = p.signal((w - 1) - lo.value, f"{name}_amt", unsigned(lo_bits + 1))
    up = p.signal(xa << amt, f"{name}_up", unsigned(2 * w + 1))
    up = Value.cast(up)[:w + 1]
    # the leading one now sits at w-1 (or at w for an odd lo with ``even``): s's top bit
    top_index = w - 1 + (lead - 1)
    bits = []
    for i in range(keep):
        src = top_index - (keep - 1 - i)
        bits.append(up[src] if 0 <= src <= w else Const(0, 1))
    s = p.reg(Staged(Cat(*bits), lo.stage), f"{name}_s", shape=unsigned(keep))
    return s, Staged(p.at(lo, s.stage), s.stage)


def reciprocal_newton(p: Pipeline, s: Staged, frac_bits: int, *, table, steps: int,
                      out_bits: int, name: str) -> Staged:
    """Pipelined :func:`software_model.mxint_fixed.reciprocal_newton` (``table``: the seed
    entries): seed lookup (registered), then two registered multiplies per Newton step."""
    tb = (len(table) - 1).bit_length()
    f = frac_bits
    yshape = unsigned(out_bits + 1)
    rom = Array([Const(int(c), yshape) for c in table])
    y = p.reg(p.comb(lambda sv: rom[Value.cast(sv)[f - tb:f]], s), f"{name}_seed", shape=yshape)
    two = 1 << (out_bits + 1)
    for step in range(steps):
        prod = p.multiply(s, y, f"{name}_sy{step}")
        t = p.reg(p.comb(lambda v: v >> f, prod), f"{name}_t{step}",
                  shape=unsigned(out_bits + 3))
        corr = p.comb(lambda v: two - v, t, name=f"{name}_c{step}", shape=unsigned(out_bits + 2))
        prod2 = p.multiply(y, corr, f"{name}_yc{step}")
        y = p.reg(p.comb(lambda v: v >> out_bits, prod2), f"{name}_y{step}", shape=yshape)
    return y


def rsqrt_newton(p: Pipeline, v: Staged, frac_bits: int, *, table, steps: int, out_bits: int,
                 name: str) -> Staged:
    """Pipelined :func:`software_model.mxint_fixed.rsqrt_newton`: seed lookup (registered),
    then three registered multiplies per Newton step (y^2, v y^2, y (3 - v y^2))."""
    tb = (len(table) - 1).bit_length()
    f = frac_bits
    yshape = unsigned(out_bits + 1)
    rom = Array([Const(int(c), yshape) for c in table])
    y = p.reg(p.comb(lambda vv: rom[Value.cast(vv)[f + 2 - tb:f + 2]], v), f"{name}_seed",
              shape=yshape)
    three = 3 << out_bits
    for step in range(steps):
        y2 = p.reg(p.comb(lambda a: a >> out_bits, p.multiply(y, y, f"{name}_yy{step}")),
                   f"{name}_y2{step}", shape=unsigned(out_bits + 1))
        t = p.reg(p.comb(lambda a: a >> f, p.multiply(v, y2, f"{name}_vy{step}")),
                  f"{name}_t{step}", shape=unsigned(out_bits + 3))
        corr = p.comb(lambda a: three - a, t, name=f"{name}_c{step}",
                      shape=unsigned(out_bits + 2))
        y = p.reg(p.comb(lambda a: a >> (out_bits + 1), p.multiply(y, corr, f"{name}_yc{step}")),
                  f"{name}_y{step}", shape=yshape)
    return y


# ---- carry-save arithmetic --------------------------------------------------------------------
# Yosys maps every adder to a carry chain whose depth grows with its width (in a large design a
# 40-bit add is about 40 gate levels), so the units keep wide sums in carry-save form (3:2
# compressors: two gate levels, no carry propagation) and resolve them with a carry-propagate
# adder cut into limbs over several stages.

def _csa(a, b, c, width):
    """One 3:2 compressor row on ``width``-bit two's-complement values (mod 2^width)."""
    s = (a ^ b ^ c)[:width]
    cy = Cat(Const(0, 1), ((a & b) | (a & c) | (b & c))[:width - 1])
    return s, cy


def _extend(v, width: int):
    """``v`` sign- or zero-extended (or truncated) to ``width`` bits, as an unsigned vector."""
    v = Value.cast(v)
    if len(v) >= width:
        return v[:width]
    if v.shape().signed:
        return Cat(v, v[-1].replicate(width - len(v)))
    return Cat(v, Const(0, width - len(v)))


def carry_save_sum(m: Module, values, width: int, name: str):
    """Reduce signed/unsigned values to two ``width``-bit vectors whose sum (mod 2^width) is
    theirs: a Wallace tree of 3:2 compressors, combinational, two gate levels per row.  Every
    row is a named signal: nested expressions would be duplicated by the backend."""
    level = [_extend(v, width) for v in values]
    row = 0
    while len(level) > 2:
        nxt = []
        full = len(level) - len(level) % 3
        for i in range(0, full, 3):
            for j, v in enumerate(_csa(level[i], level[i + 1], level[i + 2], width)):
                sig = Signal(width, name=f"{name}_csa{row}_{i // 3}_{'sc'[j]}")
                m.d.comb += sig.eq(v)
                nxt.append(sig)
        nxt.extend(level[full:])
        level = nxt
        row += 1
    if len(level) == 1:
        level.append(Const(0, width))
    return level[0], level[1]


def carry_propagate(p: "Pipeline", s: Staged, c: Staged, width: int, name: str, *,
                    limb: int = 16, signed_result: bool = True) -> Staged:
    """``s + c`` (mod 2^width) over ``ceil(width / limb)`` registered stages: each stage adds one
    ``limb``-bit limb plus the carry of the previous one.  Returns the registered sum."""
    st = max(s.stage, c.stage)
    sv, cv = Value.cast(p.at(s, st)), Value.cast(p.at(c, st))
    done = []                      # finished low limbs (signals at the current stage)
    carry = Const(0, 1)
    lo = 0
    while lo < width:
        hi = min(lo + limb, width)
        part = p.signal(sv[lo:hi] + cv[lo:hi] + carry, f"{name}_limb{lo}",
                        unsigned(hi - lo + 1))
        state = done + [part[:hi - lo]]
        rest = [sv[hi:width], cv[hi:width]] if hi < width else []
        regs = p.reg(Staged(state + [part[hi - lo]] + rest, st), f"{name}_cpa").value
        st += 1
        done = regs[:len(state)]
        carry = regs[len(state)]
        if rest:
            sv = Cat(Const(0, hi), regs[len(state) + 1])
            cv = Cat(Const(0, hi), regs[len(state) + 2])
        lo = hi
    total = Cat(*done)
    return Staged(total.as_signed() if signed_result else total, st)
