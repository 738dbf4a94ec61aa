#!/usr/bin/env python
"""Compare the synthetic ZTF alerts with the real samples of ../shared/data.

Reads the raw ZTF packets (ztf/alerts/) for the ZTF fields, history and cutouts, and the
Fink-processed samples (ztf/fink/: Avro and Parquet) for the values Fink adds; generates
alerts with `fink_pipeline.surveys.ztf.generator` (20,000 without cutouts, 1,000 with cutouts
for the stamp sizes) and prints, per key field, the real statistic next to the generated one.

The real Fink samples are small and selected (e.g. the Data Transfer sample holds only
"SN candidate" alerts), so the class fractions are compared with the portal's statistics
coefficients (reference section 7.1) instead.

    .venv/bin/python scripts/calibrate_ztf_generator.py [--n 20000] [--seed 0] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fink_pipeline.surveys.ztf.generator import generate_night  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("FINK_SHARED_DATA", REPO.parent / "shared" / "data"))

# Portal coefficients (reference 7.1): fraction of alerts per finkclass, June-Aug 2022.
REFERENCE_FRACTIONS = {
    "Unknown": 0.546, "Solar System MPC": 0.110, "V*": 0.065, "SN candidate": 0.0036,
    "Solar System candidate": 0.0039, "Early SN Ia candidate": 4.1e-5, "Kilonova candidate": 3.2e-6,
    "Microlensing candidate": 4.8e-5,
}  # fmt: skip

EG_HOSTS = {
    "Unknown", "Candidate_SN*", "SN", "Transient", "Fail", "Fail 504", "SN*_Candidate", "galaxy", "Galaxy",
    "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG", "LSB_G", "HII_G", "High_z_G",
    "GinPair", "GinGroup", "BClG", "GinCl", "PartofG", "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG",
    "SuperClG", "Void", "LINER", "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
}  # fmt: skip


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _avro_records(path: str) -> list[dict]:
    import fastavro

    with open(path, "rb") as fh:
        return list(fastavro.reader(fh))


def load_raw_alerts(data: Path) -> list[dict]:
    """Raw ZTF packets (schemas 3.2 to 4.02)."""
    out = []
    for path in sorted(glob.glob(str(data / "ztf" / "alerts" / "**" / "*.avro"), recursive=True)):
        out.extend(_avro_records(path))
    return out


def load_fink_rows(data: Path) -> list[dict]:
    """Fink-processed rows (Avro and Parquet), each tagged with its source folder."""
    rows = []
    root = data / "ztf" / "fink"
    for path in sorted(glob.glob(str(root / "**" / "*.parquet"), recursive=True)):
        if "/raw/" in path:
            continue
        for row in pq.read_table(path).to_pylist():
            row["_src"] = Path(path).parent.name
            rows.append(row)
    for path in sorted(glob.glob(str(root / "**" / "*.avro"), recursive=True)):
        try:
            records = _avro_records(path)
        except Exception as exc:  # snappy codec without cramjam
            print(f"# skipped {path}: {exc}", file=sys.stderr)
            continue
        for row in records:
            row["_src"] = Path(path).parent.name
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------


def pct(values, qs=(10, 50, 90)) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "-"
    return " / ".join(f"{np.percentile(v, q):.4g}" for q in qs)


def frac(mask) -> str:
    m = np.asarray(mask, dtype=bool)
    return f"{m.mean():.3f}" if len(m) else "-"


def top(values, k=6) -> str:
    c = Counter(values)
    total = sum(c.values())
    return ", ".join(f"{name} {cnt / total:.3f}" for name, cnt in c.most_common(k))


def finkclass(t: pa.Table) -> np.ndarray:
    """extract_fink_classification_ (reference 3.1) in numpy, for the generated alerts."""
    cds = np.asarray(t.column("cdsxmatch").to_pylist(), dtype=object)
    cand = t.column("candidate").combine_chunks()

    def c(name):
        return cand.field(name).to_numpy(zero_copy_only=False)

    def r(name):
        return t.column(name).to_numpy()

    eg = np.isin(cds, list(EG_HOSTS))
    snn = (r("snn_snia_vs_nonia") > 0.5) | (r("snn_sn_vs_all") > 0.5)
    good = (c("drb") > 0.5) & (c("classtar") > 0.4) & eg
    age = c("jd") - c("jdstarthist")
    roid = r("roid")
    nd = c("ndethist")
    f_early = snn & good & (nd <= 20) & (r("rf_snia_vs_nonia") > 0.5)
    f_sn = snn & good & (age <= 90) & (nd > 1) & (roid != 3)
    f_kn = (r("rf_kn_vs_nonkn") > 0.5) & good & (age < 5) & (roid != 3) & (nd < 20)
    f_mu = r("mulens") > 0
    trk = np.array([str(x).startswith("TRCK_") for x in t.column("tracklet").to_pylist()])
    out = np.full(t.num_rows, "Unknown", dtype=object)
    for flag, name in ((f_mu, "Microlensing candidate"), (f_sn, "SN candidate"), (f_early, "Early SN Ia candidate"),
                       (f_kn, "Kilonova candidate"), (roid == 2, "Solar System candidate"), (trk, "Tracklet"),
                       (roid == 3, "Solar System MPC")):  # fmt: skip
        out[flag] = name
    out[(f_mu.astype(int) + f_sn + (roid == 2) + (roid == 3)) > 1] = "Ambiguous"
    simbad = ~np.isin(cds, ["Unknown", "Transient", "Fail", "Fail 504"])
    simbad &= ~np.array([str(x).startswith(("Fail", "Galaxy")) for x in cds])
    out[simbad] = cds[simbad]
    return out


def compare(data: Path, n: int, seed: int, night: dt.date) -> list[tuple[str, str, str]]:
    raw = load_raw_alerts(data)
    fink = load_fink_rows(data)
    cands = [r["candidate"] for r in raw]

    t0 = time.perf_counter()
    gen = pa.Table.from_batches(list(generate_night(night, n, seed, with_cutouts=False)))
    t_light = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen_cut = pa.Table.from_batches(list(generate_night(night, 1000, seed, with_cutouts=True)))
    t_full = time.perf_counter() - t0
    gc = gen.column("candidate").combine_chunks()

    def g(name):
        return gc.field(name).to_numpy(zero_copy_only=False)

    def rc(name):
        return [c.get(name) for c in cands]

    def gr(name):
        return gen.column(name).to_numpy(zero_copy_only=False)

    rows: list[tuple[str, str, str]] = []
    add = rows.append
    add(("alerts compared", f"{len(raw)} raw ZTF / {len(fink)} Fink rows", f"{gen.num_rows} (+{gen_cut.num_rows} with cutouts)"))

    # --- candidate -----------------------------------------------------------------------
    add(("candidate.magpsf p10/50/90", pct(rc("magpsf")), pct(g("magpsf"))))
    add(("candidate.sigmapsf p10/50/90", pct(rc("sigmapsf")), pct(g("sigmapsf"))))
    add(("candidate.sigmapsf max", f"{max(rc('sigmapsf')):.4f}", f"{g('sigmapsf').max():.4f}"))
    add(("candidate.diffmaglim p10/50/90", pct(rc("diffmaglim")), pct(g("diffmaglim"))))
    add(("candidate.magfromlim p10/50/90", pct(rc("magfromlim")), pct(g("magfromlim"))))
    add(("candidate.fid g / r / i", _fid(rc("fid")), _fid(g("fid"))))
    add(("candidate.isdiffpos 't'", frac(np.array(rc("isdiffpos")) == "t"), frac(g("isdiffpos") == "t")))
    add(("candidate.ra p10/50/90", pct(rc("ra")), pct(g("ra"))))
    add(("candidate.dec p10/50/90", pct(rc("dec")), pct(g("dec"))))
    real_hours = ((np.array(rc("jd")) - 0.5) % 1) * 24
    gen_hours = ((g("jd") - 0.5) % 1) * 24
    add(("candidate.jd UTC hour min/p50/max", f"{real_hours.min():.2f} / {np.median(real_hours):.2f} / {real_hours.max():.2f}",
         f"{gen_hours.min():.2f} / {np.median(gen_hours):.2f} / {gen_hours.max():.2f}"))  # fmt: skip
    real_drb = np.array([x if x is not None else np.nan for x in rc("drb")])
    add(("candidate.drb null rate", frac(np.isnan(real_drb)), frac(gc.field("drb").is_null().to_numpy(zero_copy_only=False))))
    add(("candidate.drb p10/50/90", pct(real_drb), pct(g("drb"))))
    add(("candidate.drb < 0.5", frac(real_drb[~np.isnan(real_drb)] < 0.5), frac(g("drb") < 0.5)))
    add(("candidate.rb p10/50/90", pct(rc("rb")), pct(g("rb"))))
    add(("candidate.classtar p10/50/90", pct(rc("classtar")), pct(g("classtar"))))
    add(("candidate.ndethist p25/50/75/90", pct(rc("ndethist"), (25, 50, 75, 90)), pct(g("ndethist"), (25, 50, 75, 90))))
    add(("candidate.ndethist == 1", frac(np.array(rc("ndethist")) == 1), frac(g("ndethist") == 1)))
    real_age = np.array(rc("jd")) - np.array(rc("jdstarthist"))
    gen_age = g("jd") - g("jdstarthist")
    add(("jd - jdstarthist p50/75/90 (days)", pct(real_age, (50, 75, 90)), pct(gen_age, (50, 75, 90))))
    add(("jd - jdstarthist == 0 / <= 90", f"{frac(real_age == 0)} / {frac(real_age <= 90)}", f"{frac(gen_age < 1e-9)} / {frac(gen_age <= 90)}"))
    add(("candidate.ncovhist p10/50/90", pct(rc("ncovhist")), pct(g("ncovhist"))))
    add(("candidate.distnr p10/50/90", pct(rc("distnr")), pct(g("distnr"))))
    add(("candidate.magnr p10/50/90", pct(rc("magnr")), pct(g("magnr"))))
    add(("candidate.sgscore1 p10/50/90", pct([x for x in rc("sgscore1") if x > -998]), pct(g("sgscore1")[g("sgscore1") > -998])))
    add(("candidate.chipsf p10/50/90", pct(rc("chipsf")), pct(g("chipsf"))))
    add(("candidate.scorr p10/50/90", pct(rc("scorr")), pct(g("scorr"))))
    add(("candidate.fwhm p10/50/90", pct(rc("fwhm")), pct(g("fwhm"))))
    add(("candidate.elong p10/50/90", pct(rc("elong")), pct(g("elong"))))
    add(("candidate.tblid p10/50/90", pct(rc("tblid")), pct(g("tblid"))))
    add(("candidate.neargaiabright == -999", frac(np.array(rc("neargaiabright")) < -998), frac(g("neargaiabright") < -998)))
    real_ss = np.array(rc("ssdistnr"))
    add(("candidate.ssdistnr valid (>= 0)", frac(real_ss >= 0), frac(g("ssdistnr") >= 0)))
    add(("candidate.ssnamenr == 'null'", frac(np.array(rc("ssnamenr")) == "null"), frac(g("ssnamenr") == "null")))

    # --- history ---------------------------------------------------------------------------
    real_len = np.array([len(r["prv_candidates"] or []) for r in raw])
    gen_len = pc.list_value_length(gen.column("prv_candidates")).to_numpy(zero_copy_only=False)
    gen_len = np.nan_to_num(gen_len.astype(float))
    add(("prv_candidates length p10/50/90", pct(real_len), pct(gen_len)))
    add(("prv_candidates length mean / max", f"{real_len.mean():.1f} / {real_len.max()}", f"{gen_len.mean():.1f} / {int(gen_len.max())}"))
    add(("prv_candidates length == 0 / > 40", f"{frac(real_len == 0)} / {frac(real_len > 40)}", f"{frac(gen_len == 0)} / {frac(gen_len > 40)}"))
    real_prv = [p for r in raw for p in (r["prv_candidates"] or [])]
    gen_prv = pc.list_flatten(gen.column("prv_candidates")).combine_chunks() if gen.num_rows else None
    real_det = np.array([p["candid"] is not None for p in real_prv])
    gen_det = gen_prv.field("candid").is_valid().to_numpy(zero_copy_only=False)
    add(("prv_candidates detections (vs upper limits)", frac(real_det), frac(gen_det)))
    real_span = [r["candidate"]["jd"] - min(p["jd"] for p in r["prv_candidates"]) for r in raw if r["prv_candidates"]]
    jd_rep = np.repeat(g("jd"), gen_len.astype(int))
    gen_span = jd_rep - gen_prv.field("jd").to_numpy()
    add(("prv jd offset max (days)", f"{max(real_span):.2f}", f"{gen_span.max():.2f}"))
    add(("prv magpsf null in upper limits", frac([p["magpsf"] is None for p in real_prv if p["candid"] is None]),
         frac(gen_prv.field("magpsf").is_null().to_numpy(zero_copy_only=False)[~gen_det])))  # fmt: skip

    # --- cutouts -----------------------------------------------------------------------------
    for kind in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        real_sizes = [len(r[kind]["stampData"]) for r in raw]
        gen_sizes = pc.binary_length(gen_cut.column(kind).combine_chunks().field("stampData")).to_numpy()
        add((f"{kind} stamp bytes p5/50/95", pct(real_sizes, (5, 50, 95)), pct(gen_sizes, (5, 50, 95))))

    # --- Fink added values -------------------------------------------------------------------
    def fr(name):
        return [row.get(name) for row in fink if name in row]

    def num(values):
        out = []
        for v in values:
            if isinstance(v, dict) or v is None:
                continue
            out.append(float(v))
        return np.array(out)

    for name in ("rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_kn_vs_nonkn"):
        rv, gv = num(fr(name)), gr(name)
        add((f"{name} == 0 / p50 / p90 of > 0", f"{frac(rv == 0)} / {pct(rv[rv > 0], (50, 90))}", f"{frac(gv == 0)} / {pct(gv[gv > 0], (50, 90))}"))
    rv = num(fr("mulens"))
    add(("mulens > 0", frac(rv > 0), frac(gr("mulens") > 0)))
    add(("roid 0/1/2/3", _roid(num(fr("roid"))), _roid(gr("roid"))))
    real_cds = [v for v in fr("cdsxmatch") if v and not v.startswith("(")]
    gen_cds = gen.column("cdsxmatch").to_pylist()
    add(("cdsxmatch distinct values", str(len(set(real_cds))), str(len(set(gen_cds)))))
    add(("cdsxmatch top", top(real_cds), top(gen_cds)))
    real_lc = [v for v in fr("lc_features_g") if v is not None or True]
    add(("lc_features_g record null", frac([v is None for v in real_lc]), frac(gen.column("lc_features_g").is_null().to_numpy(zero_copy_only=False))))
    real_mean = [(v or {}).get("mean") for v in real_lc]
    gmean = gen.column("lc_features_g").combine_chunks().field("mean")
    gmean_np = gmean.to_numpy(zero_copy_only=False)
    add(("lc_features_g.mean null or NaN", frac([m is None or not np.isfinite(m) for m in real_mean]),
         frac(gmean.is_null().to_numpy(zero_copy_only=False) | ~np.isfinite(np.nan_to_num(gmean_np, nan=np.inf)))))  # fmt: skip
    rmean = gen.column("lc_features_r").combine_chunks().field("mean")
    real_rmean = [(v or {}).get("mean") for v in fr("lc_features_r")]
    add(("lc_features_r.mean null or NaN", frac([m is None or not np.isfinite(m) for m in real_rmean]),
         frac(np.isnan(np.nan_to_num(rmean.to_numpy(zero_copy_only=False).astype(float), nan=np.nan)))))  # fmt: skip
    add(("anomaly_score null", frac([v is None or (isinstance(v, float) and np.isnan(v)) for v in fr("anomaly_score")]),
         frac(gen.column("anomaly_score").is_null().to_numpy(zero_copy_only=False))))  # fmt: skip
    add(("anomaly_score p10/50/90", pct(num(fr("anomaly_score"))[num(fr("anomaly_score")) != 0]), pct(gr("anomaly_score"))))
    add(("DR3Name 'nan' or null", frac([v in (None, "nan") for v in fr("DR3Name")]), frac(np.array(gen.column("DR3Name").to_pylist()) == "nan")))
    add(("nalerthist p25/50/75", pct(num(fr("nalerthist")), (25, 50, 75)), pct(gr("nalerthist"), (25, 50, 75))))
    add(("mag_rate null", frac([v is None or (isinstance(v, float) and np.isnan(v)) for v in fr("mag_rate")]),
         frac(gen.column("mag_rate").is_null().to_numpy(zero_copy_only=False))))  # fmt: skip
    add(("from_upper True", frac([bool(v) for v in fr("from_upper") if v is not None]), frac(gr("from_upper"))))
    add(("slsn_score == -1", frac(num(fr("slsn_score")) == -1), frac(gr("slsn_score") == -1)))
    add(("is_transient True", frac([bool(v) for v in fr("is_transient") if v is not None]), frac(gr("is_transient"))))
    add(("tns non-empty", frac([bool(v) for v in fr("tns") if v is not None]), frac(np.array(gen.column("tns").to_pylist()) != "")))
    add(("tracklet TRCK_ / null", f"{frac([str(v).startswith('TRCK') for v in fr('tracklet')])} / {frac([v is None for v in fr('tracklet')])}",
         f"{frac(gen.column('tracklet').is_valid().to_numpy(zero_copy_only=False))} / {frac(gen.column('tracklet').is_null().to_numpy(zero_copy_only=False))}"))  # fmt: skip
    add(("spicy_id != -1", frac(num(fr("spicy_id")) != -1), frac(gr("spicy_id") != -1)))
    add(("x4lac != Unknown", frac([v not in (None, "Unknown") for v in fr("x4lac")]), frac(np.array(gen.column("x4lac").to_pylist()) != "Unknown")))
    add(("mangrove HyperLEDA match", frac([(dict(v) if v else {}).get("HyperLEDA_name", "None") != "None" for v in fr("mangrove")]),
         frac(np.array(pc.list_element(pc.map_lookup(gen.column("mangrove"), "HyperLEDA_name", "all"), 0).to_pylist()) != "None")))  # fmt: skip

    # --- classes --------------------------------------------------------------------------------
    classes = Counter(finkclass(gen))
    for name, ref in REFERENCE_FRACTIONS.items():
        add((f"finkclass {name}", f"{ref:.2e} (portal coefficient)", f"{classes[name] / gen.num_rows:.2e}"))
    add(("finkclass distinct labels", "-", str(len(classes))))
    add(("generation rate (alerts/min)", "-", f"{gen.num_rows / t_light * 60:,.0f} light / {gen_cut.num_rows / t_full * 60:,.0f} with cutouts"))
    return rows


def _fid(values) -> str:
    v = np.asarray(values)
    return " / ".join(f"{(v == f).mean():.3f}" for f in (1, 2, 3))


def _roid(values) -> str:
    v = np.asarray(values)
    return " / ".join(f"{(v == k).mean():.3f}" for k in (0, 1, 2, 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--n", type=int, default=20_000, help="generated alerts (without cutouts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--night", default="2024-04-10", help="night to generate (YYYY-MM-DD)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    if not args.data.exists():
        parser.error(f"shared data not found: {args.data}")
    rows = compare(args.data, args.n, args.seed, dt.date.fromisoformat(args.night))
    if args.markdown:
        print("| quantity | real samples | generator |")
        print("|---|---|---|")
        for name, real, gen in rows:
            print(f"| {name} | {real} | {gen} |")
    else:
        width = max(len(r[0]) for r in rows)
        for name, real, gen in rows:
            print(f"{name:<{width}}  real: {real:<40}  generated: {gen}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
