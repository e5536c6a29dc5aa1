"""An integrator's testbench: drives an accelgen output-stationary systolic array knowing only its
``manifest.json`` (ports, payload layouts and the protocol section), with no accelgen import.

Run it with cocotb's runner against the Verilog ``accelgen rtl`` wrote, with ``MANIFEST`` set to
the manifest's path (tests/test_integrator_example.py does exactly that).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

MANIFEST = json.loads(open(os.environ["MANIFEST"]).read())


def layout(port):
    return next(p["layout"] for p in MANIFEST["ports"] if p["name"] == port)


def pack(lay, value):
    """Python value -> port bits, from the layout in the manifest (struct / array / int)."""
    if lay["type"] == "int":
        return value & ((1 << lay["width"]) - 1)
    if lay["type"] == "array":
        ew = lay["element"]["width"]
        return sum(pack(lay["element"], v) << (i * ew) for i, v in enumerate(value))
    return sum(pack(f["layout"], value[name]) << f["offset"] for name, f in lay["fields"].items())


def unpack(lay, bits):
    if lay["type"] == "int":
        bits &= (1 << lay["width"]) - 1
        return bits - (1 << lay["width"]) if lay["signed"] and bits >> (lay["width"] - 1) else bits
    if lay["type"] == "array":
        ew = lay["element"]["width"]
        return [unpack(lay["element"], bits >> (i * ew)) for i in range(lay["length"])]
    return {name: unpack(f["layout"], bits >> f["offset"]) for name, f in lay["fields"].items()}


@cocotb.test()
async def one_gemm_from_the_manifest(dut):
    params = MANIFEST["parameters"]
    rows, cols, a_w, b_w = params["rows"], params["cols"], params["a_width"], params["b_width"]
    acc_w = params["acc_width"]
    assert "ready" in MANIFEST["protocol"]["operands"]          # read the rules before driving
    rng = random.Random(5)
    jobs = []
    for k in (1, 3, 7):
        a = [[rng.randrange(-(1 << (a_w - 1)), 1 << (a_w - 1)) for _ in range(k)] for _ in range(rows)]
        b = [[rng.randrange(-(1 << (b_w - 1)), 1 << (b_w - 1)) for _ in range(cols)] for _ in range(k)]
        jobs.append((a, b))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.operands__valid.value = 0
    dut.results__ready.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    op_layout, res_layout = layout("operands__payload"), layout("results__payload")

    async def drive():
        for a, b in jobs:
            k = len(b)
            for t in range(k):        # one beat per k: column t of A, row t of B; last ends the job
                dut.operands__payload.value = pack(op_layout, {
                    "a": [a[i][t] for i in range(rows)], "b": b[t], "last": int(t == k - 1)})
                dut.operands__valid.value = 1
                while True:
                    await ReadOnly()
                    taken = dut.operands__ready.value == 1
                    await RisingEdge(dut.clk)
                    if taken:
                        break
        dut.operands__valid.value = 0

    cocotb.start_soon(drive())
    checked = 0
    for a, b in jobs:
        for r in range(rows):        # rows beats per job, row r of C, last on the final row
            while True:
                await ReadOnly()
                if dut.results__valid.value == 1:
                    got = unpack(res_layout, dut.results__payload.value.to_unsigned())
                    await RisingEdge(dut.clk)
                    break
                await RisingEdge(dut.clk)
            exact = [sum(a[r][t] * b[t][j] for t in range(len(b))) for j in range(cols)]
            wrapped = [((v + (1 << (acc_w - 1))) % (1 << acc_w)) - (1 << (acc_w - 1)) for v in exact]
            assert got == {"c": wrapped, "last": int(r == rows - 1)}, (got, wrapped)
            checked += 1
    assert checked == rows * len(jobs)
