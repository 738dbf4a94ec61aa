"""Catalogue cross-match in a transfer: its cost over the same transfer without a catalogue, and
LSDB's cross-match of the same alerts and catalogues (issue 16).

Data (generated once under bench/results/ and reused):

* an archive of 4 nights x 250,000 synthetic ZTF alerts (no cutouts), 1,000,000 alerts;
* catalogues as Parquet (`ra`, `dec` in degrees, `id` int64) of 100,000 and 10,000,000
  sources, each matched with a fixed radius of 1.5 arcsec: 10,000 sources are placed on the
  positions of randomly drawn alerts, moved by less than 1 arcsec, the rest is uniform on the
  sphere; the 10M catalogue holds the 100k one plus 9.9M more uniform sources;
* the true pairs (alert, source) within the radius of each catalogue, found by brute force on a
  3-D grid of unit vectors (numpy, independent of both tools), to check both.

Cases, each in its own process tree; its peak RSS and peak PSS are printed (PSS counts a page
shared by several processes, such as the memory-mapped catalogue index, once in all), with the
RSS per kind of process at the peak; the embedded broker, which stands for the Kafka cluster,
is not counted:

* plain: whole transfers (`run_transfer` as bench/end_to_end.py runs it: one Dagster run,
  validation -> Spark job -> Kafka topic -> Delta table) of the 4 nights, light packet, all
  classes, in a process that started a local[2] Spark session and a private broker beforehand
  (not counted) and ran a 1-night warm-up transfer; median of --runs;
* ours 100k / 10M: the same transfers with the catalogue (`catalog_filename`, radius 1.5
  arcsec, light packet as well); each run reads and indexes the catalogue afresh (an empty
  catalogue directory, as a new request), its pairs are checked against the true pairs; the
  warm-up matches a 1,000-source catalogue; median of --runs (--runs-large for catalogues
  over 1M sources). Then the match apart: reading + indexing the catalogue
  (`prepare_crossmatch`), and the Spark selection counted with minus without the catalogue;
* cold: `fink-pipeline request submit --wait` subprocesses (a JVM per transfer, a fresh state
  directory, as a user meets it: whole-process wall time), without and with each catalogue,
  one run each;
* LSDB: bench/crossmatch_lsdb.py in bench/.venv-lsdb (lsdb from PyPI, created here when
  missing): import, load (`lsdb.from_dataframe` of both tables), `crossmatch(...).compute()`
  on dask's default scheduler (threads, one per core); whole-process wall time and the match
  step; median of --runs (--runs-large). With --lsdb-hats (default) also with the catalogue
  already in HATS (written once beforehand with `to_hats`, not counted, cached; opened with
  `lsdb.open_catalog`), as LSDB's published catalogues are used. Deviation from LSDB's
  defaults: n_neighbors=--lsdb-neighbors instead of 1, so that every match within the radius is
  returned (the largest number of matches of one alert is printed and must stay below it).

The crossmatch transfers publish only the matched (alert, source) rows (~21,700), the plain
one every alert (1,000,000): the match column and the cold and LSDB rows say what the match
itself costs.

Last lines: `crossmatch transfer vs plain transfer (10M sources): Y` then
`crossmatch transfer vs plain transfer (100k sources): X` (median in-process transfer time with
the catalogue / median without).

    .venv/bin/python bench/crossmatch.py [--runs 3] [--runs-large 1] [--only data,plain,ours,cold,lsdb]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from procs import TreeRSS, run_sampled  # noqa: E402  (bench/ is on sys.path)

RESULTS = REPO / "bench" / "results"
START = dt.date(2024, 3, 1)
LSDB_VENV = REPO / "bench" / ".venv-lsdb"
LSDB_REQUIREMENT = "lsdb==0.11.1"
LSDB_RUNNER = REPO / "bench" / "crossmatch_lsdb.py"
RADIUS_ARCSEC = 1.5
JITTER_ARCSEC = 1.0
PARTS = ("data", "plain", "ours", "cold", "lsdb")
ARCSEC = math.pi / (180 * 3600)


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- data


def archive_root(nights: int, per_night: int) -> Path:
    return RESULTS / f"archive_ztf_{nights}x{per_night}"


def ensure_archive(nights: int, per_night: int) -> Path:
    """The archive (generated when missing or incomplete)."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    root = archive_root(nights, per_night)
    marker = root / "complete.json"
    wanted = {"nights": nights, "alerts_per_night": per_night, "start": START.isoformat()}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return root
    log(f"generating {nights} nights x {per_night:,} alerts into {root} ...")
    began = time.perf_counter()
    report = generate_archive(get_survey("ztf"), str(root), START, nights=nights, alerts_per_night=per_night,
                              seed=16, with_cutouts=False)
    assert report.total_alerts == nights * per_night
    marker.write_text(json.dumps(wanted))
    log(f"archive written in {time.perf_counter() - began:.0f} s")
    return root


def alert_positions(root: Path):
    """(candid, ra, dec) of every alert of the archive, as numpy arrays."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(root / "ztf" / "science"), format="parquet", partitioning="hive").to_table(
        columns={"candid": pc.field("candid"), "ra": pc.field("candidate", "ra"),
                 "dec": pc.field("candidate", "dec")})
    return (table.column("candid").to_numpy(), table.column("ra").to_numpy().astype("f8"),
            table.column("dec").to_numpy().astype("f8"))


def unit_vectors(ra_deg, dec_deg):
    import numpy as np

    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def jittered(ra_deg, dec_deg, rng, max_arcsec: float):
    """Positions moved by a distance uniform in [0, max_arcsec) in a uniform direction (exact on
    the sphere: rotation in the tangent plane of each point)."""
    import numpy as np

    n = len(ra_deg)
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    p = unit_vectors(ra_deg, dec_deg)
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros(n)], axis=1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=1)
    d = rng.uniform(0, max_arcsec, n) * ARCSEC
    theta = rng.uniform(0, 2 * np.pi, n)
    q = p * np.cos(d)[:, None] + (east * np.cos(theta)[:, None] + north * np.sin(theta)[:, None]) * np.sin(d)[:, None]
    return np.degrees(np.arctan2(q[:, 1], q[:, 0])) % 360.0, np.degrees(np.arcsin(np.clip(q[:, 2], -1, 1)))


def uniform_sphere(n: int, rng):
    import numpy as np

    return rng.uniform(0, 360.0, n), np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))


def catalogue_path(size: int, planted: int, tag: str) -> Path:
    return RESULTS / f"crossmatch_catalogue_{size}_{planted}_{tag}.parquet"


def ensure_catalogues(root: Path, sizes: list[int], planted: int) -> dict[int, Path]:
    """The catalogues (smallest first; each larger one holds the smallest one's rows plus
    uniform sources), written when missing."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    tag = root.name.removeprefix("archive_ztf_")
    paths = {size: catalogue_path(size, planted, tag) for size in sizes}
    if all(p.exists() for p in paths.values()):
        return paths
    smallest = min(sizes)
    if planted > smallest:
        raise SystemExit(f"--planted {planted} exceeds the smallest catalogue ({smallest})")
    candid, ra, dec = alert_positions(root)
    rng = np.random.default_rng(16)
    picked = rng.choice(len(candid), size=planted, replace=False)
    near_ra, near_dec = jittered(ra[picked], dec[picked], rng, JITTER_ARCSEC)
    far_ra, far_dec = uniform_sphere(smallest - planted, rng)
    base_ra, base_dec = np.concatenate([near_ra, far_ra]), np.concatenate([near_dec, far_dec])
    for size in sorted(sizes):
        if paths[size].exists():
            continue
        log(f"writing the {size:,}-source catalogue ...")
        extra_ra, extra_dec = uniform_sphere(size - smallest, np.random.default_rng(size))
        cat_ra, cat_dec = np.concatenate([base_ra, extra_ra]), np.concatenate([base_dec, extra_dec])
        # int64 ids beyond 2^32, rows shuffled so that the placed sources are spread
        ids = 5_000_000_000 + np.arange(size, dtype=np.int64)
        order = np.random.default_rng(size + 1).permutation(size)
        table = pa.table({"ra": cat_ra[order], "dec": cat_dec[order], "id": ids[order]})
        tmp = paths[size].with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.rename(paths[size])
    return paths


def true_pairs(root: Path, catalogue: Path, radius_arcsec: float):
    """Every (candid, id) with an angular separation <= radius: brute force on a grid of the unit
    vectors (cells larger than the chord of the radius, the 27 cells around each alert), cached
    beside the catalogue. Returns a pyarrow table (candid, id)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    cached = truth_path(catalogue, radius_arcsec)
    if cached.exists() and cached.stat().st_mtime >= catalogue.stat().st_mtime:
        return pq.read_table(cached)
    candid, ra, dec = alert_positions(root)
    source = pq.read_table(catalogue, columns=["ra", "dec", "id"])
    a = unit_vectors(ra, dec)
    s = unit_vectors(source.column("ra").to_numpy(), source.column("dec").to_numpy())
    ids = source.column("id").to_numpy()
    chord = 2 * math.sin(radius_arcsec * ARCSEC / 2)
    cell = chord * 1.01
    span = int(math.ceil(2.0 / cell)) + 4
    assert span**3 < 2**62

    def keys(ijk):
        return (ijk[:, 0] * span + ijk[:, 1]) * span + ijk[:, 2]

    s_ijk = np.floor((s + 1.0) / cell).astype(np.int64) + 1
    s_keys = keys(s_ijk)
    order = np.argsort(s_keys, kind="stable")
    s_sorted = s_keys[order]
    a_ijk = np.floor((a + 1.0) / cell).astype(np.int64) + 1
    left, right = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                q = keys(a_ijk + np.array([dx, dy, dz]))
                lo, hi = np.searchsorted(s_sorted, q, "left"), np.searchsorted(s_sorted, q, "right")
                count = hi - lo
                hit = np.nonzero(count)[0]
                if not len(hit):
                    continue
                alert_idx = np.repeat(hit, count[hit])
                starts = np.repeat(lo[hit], count[hit])
                offsets = np.arange(len(alert_idx)) - np.repeat(np.cumsum(count[hit]) - count[hit], count[hit])
                source_idx = order[starts + offsets]
                d = np.linalg.norm(a[alert_idx] - s[source_idx], axis=1)
                keep = d <= chord
                left.append(alert_idx[keep])
                right.append(source_idx[keep])
    alert_idx, source_idx = np.concatenate(left), np.concatenate(right)
    table = pa.table({"candid": candid[alert_idx].astype(np.int64), "id": ids[source_idx]})
    pq.write_table(table, cached)
    return table


def truth_path(catalogue: Path, radius_arcsec: float) -> Path:
    return catalogue.with_name(catalogue.stem + f"_truth_{radius_arcsec:g}.parquet")


def pair_set(table) -> set[tuple[int, int]]:
    return set(zip(table.column("candid").to_pylist(), table.column("id").to_pylist()))


# ---------------------------------------------------------------- our transfers


def catalogue_fields(catalogue: Path | None) -> dict:
    if catalogue is None:
        return {}
    return {"catalog_filename": str(catalogue), "ra_col": "ra", "dec_col": "dec", "id_col": "id",
            "radius_arcsec": RADIUS_ARCSEC}


def crossmatch_available() -> bool:
    from fink_pipeline.transfer.request import TransferRequest

    return "catalog_filename" in TransferRequest.model_fields


def ensure_warmup_catalogue(catalogue: Path, rows: int = 1000) -> Path:
    """The first `rows` sources of `catalogue`: the warm-up transfer's catalogue (it loads the
    cross-match code in the Python workers without mapping a large index)."""
    import pyarrow.parquet as pq

    path = catalogue.with_name(f"crossmatch_catalogue_warmup_{rows}.parquet")
    if not path.exists() or path.stat().st_mtime < catalogue.stat().st_mtime:
        pq.write_table(pq.read_table(catalogue).slice(0, rows), path)
    return path


def worker(spec: dict) -> None:
    """One case in this process: Spark session + private broker, a 1-night warm-up, then `runs`
    transfers of the archive's nights, each checked; with a catalogue, each run reads and
    indexes it afresh (a new catalogue directory: what a new request pays), then the match step
    is timed apart. Prints `RESULT <json>`."""
    from end_to_end import run_in_process
    from fink_pipeline.consumer.readers import delta_table_counts
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import delete_topic
    from fink_pipeline.spark import build_spark_session
    from fink_pipeline.transfer.crossmatch.prepare import CATALOG_DIR_ENV
    from fink_pipeline.transfer.request import TransferRequest

    archive = Path(spec["archive"])
    catalogue = Path(spec["catalogue"]) if spec.get("catalogue") else None
    stop = (START + dt.timedelta(days=spec["nights"] - 1)).isoformat()
    work = tempfile.TemporaryDirectory(prefix="bench-crossmatch-")
    root = Path(work.name)
    (root / "archive").symlink_to(archive)
    truth = pair_set(_read_parquet(spec["truth"])) if spec.get("truth") else None
    began = time.perf_counter()
    spark = build_spark_session("local[2]")
    spark_start = time.perf_counter() - began
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    fields = catalogue_fields(catalogue)
    runs, extra = [], {}
    try:
        with TreeRSS(os.getpid(), exclude={broker.pid}) as rss:
            os.environ[CATALOG_DIR_ENV] = str(root / "catalogs-warm-up")
            warm_fields = catalogue_fields(Path(spec["warm_up_catalogue"])) if catalogue is not None else {}
            warm = TransferRequest(start=START.isoformat(), stop=START.isoformat(), content="light", **warm_fields)
            began = time.perf_counter()
            run_in_process(warm.with_identity(), bootstrap, root)
            warm_up = time.perf_counter() - began
            for i in range(spec["runs"]):
                os.environ[CATALOG_DIR_ENV] = str(root / f"catalogs-{i}")
                request = TransferRequest(start=START.isoformat(), stop=stop, content="light",
                                          **fields).with_identity()
                rss.mark()
                cpu0 = cpu_seconds()
                began = time.perf_counter()
                published = run_in_process(request, bootstrap, root)
                seconds = time.perf_counter() - began
                cpu = cpu_seconds() - cpu0
                peak = rss.peak()
                peak_pss, breakdown = rss.peak_pss(), rss.breakdown()
                uri = str(root / "tables" / request.topic)
                key = ["candid", "id"] if catalogue is not None else "candid"
                rows, distinct = delta_table_counts(uri, key)
                run = {"seconds": seconds, "published": published, "rows": rows, "distinct": distinct,
                       "peak_rss": peak, "peak_pss": peak_pss, "breakdown": breakdown, "cpu_s": cpu}
                if truth is not None:
                    from deltalake import DeltaTable

                    got = pair_set(DeltaTable(uri).to_pyarrow_table(columns=["candid", "id"]))
                    run["pairs"] = len(got)
                    run["pairs_equal_truth"] = got == truth
                runs.append(run)
                delete_topic(settings, request.topic)
                shutil.rmtree(uri, ignore_errors=True)
            if catalogue is not None:
                extra = match_step(spark, archive, catalogue, START.isoformat(), stop, root)
    finally:
        broker.stop()
        spark.stop()
        work.cleanup()
    print("RESULT " + json.dumps({"spark_start": spark_start, "warm_up": warm_up, "runs": runs, **extra}),
          flush=True)


def match_step(spark, archive: Path, catalogue: Path, start: str, stop: str, root: Path, repeat: int = 2) -> dict:
    """The match apart from the transfer: reading and indexing the catalogue
    (`prepare_crossmatch` into an empty directory), and the Spark selection job counted with and
    without the catalogue (`build_transfer_dataframe(...).count()`, best of `repeat` each; the
    difference is the match in Spark: positions read, UDF, explode)."""
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.surveys import get_survey
    from fink_pipeline.transfer.crossmatch.prepare import prepare_crossmatch
    from fink_pipeline.transfer.plan import plan_transfer
    from fink_pipeline.transfer.request import TransferRequest
    from fink_pipeline.transfer.select import build_transfer_dataframe

    request = TransferRequest(start=start, stop=stop, content="light", **catalogue_fields(catalogue))
    began = time.perf_counter()
    prepare_crossmatch(request, get_survey("ztf"), directory=root / "catalogs-index-only")
    index_s = time.perf_counter() - began
    nights = list_nights(str(archive), "ztf")
    plans = {"with": plan_transfer(request, str(archive), nights),
             "without": plan_transfer(TransferRequest(start=start, stop=stop, content="light"), str(archive), nights)}
    counts, seconds = {}, {}
    for name in ("without", "with") * repeat:
        began = time.perf_counter()
        counts[name] = build_transfer_dataframe(spark, plans[name]).count()
        seconds[name] = min(seconds.get(name, math.inf), time.perf_counter() - began)
    return {"index_s": index_s, "count_with_s": seconds["with"], "count_without_s": seconds["without"],
            "count_with": counts["with"], "count_without": counts["without"]}


def _read_parquet(path: str):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def cpu_seconds() -> float:
    """CPU seconds of this process and its descendants so far (exited children once reaped)."""
    import psutil

    total = 0.0
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def run_case(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"case {spec.get('label')} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-6000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["process_s"] = seconds
    return result


def run_cold(archive: Path, catalogue: Path | None, nights: int) -> dict:
    """`fink-pipeline request submit --wait` as a subprocess (broker started beforehand by
    `fink-pipeline broker start`, not counted); whole-process wall time and peak RSS."""
    work = tempfile.TemporaryDirectory(prefix="bench-crossmatch-cold-")
    root = Path(work.name)
    (root / "archive").symlink_to(archive)
    env = {**os.environ, "FINK_PIPELINE_HOME": str(root / "state")}
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("FINK_PIPELINE_CATALOG_DIR", None)  # the index is built in the fresh state dir, as a user's first time
    cli = [sys.executable, "-m", "fink_pipeline.cli.main"]
    subprocess.run([*cli, "broker", "start"], env=env, check=True, capture_output=True)
    stop = (START + dt.timedelta(days=nights - 1)).isoformat()
    extra = [] if catalogue is None else ["--catalog", str(catalogue), "--ra-col", "ra", "--dec-col", "dec",
                                          "--id-col", "id", "--radius-arcsec", f"{RADIUS_ARCSEC:g}"]
    try:
        cmd = [*cli, "request", "submit", "--start", START.isoformat(), "--stop", stop, "--content", "light",
               "--archive", str(root / "archive"), "--tables", str(root / "tables"), *extra, "--wait"]
        done, seconds, peak = run_sampled(cmd, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"request submit failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                               f"{done.stderr[-4000:]}")
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        published = next(int(line.split()[0].replace(",", "")) for line in lines if "alerts published to" in line)
        return {"seconds": seconds, "peak_rss": peak, **run_sampled.last, "published": published,
                "stdout": done.stdout[-2000:]}
    finally:
        subprocess.run([*cli, "broker", "stop"], env=env, capture_output=True)
        work.cleanup()


# ---------------------------------------------------------------- LSDB


def ensure_lsdb() -> Path:
    """The interpreter of bench/.venv-lsdb with LSDB installed (created when missing)."""
    python = LSDB_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('lsdb'))"]
    if python.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == \
            LSDB_REQUIREMENT.split("==")[1]:
        return python
    log(f"creating {LSDB_VENV} with {LSDB_REQUIREMENT} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LSDB_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", LSDB_REQUIREMENT], check=True)
    return python


def run_lsdb(python: Path, archive: Path, catalogue: Path, neighbors: int, pairs_out: Path | None,
             hats: Path | None = None) -> dict:
    cmd = [str(python), str(LSDB_RUNNER), str(archive), str(catalogue), "--radius-arcsec", f"{RADIUS_ARCSEC:g}",
           "--n-neighbors", str(neighbors)]
    if pairs_out is not None:
        cmd += ["--pairs", str(pairs_out)]
    if hats is not None:
        cmd += ["--hats", str(hats)]
    done, seconds, peak = run_sampled(cmd)
    if done.returncode != 0:
        raise RuntimeError(f"LSDB failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "seconds": seconds, "peak_rss": peak, **run_sampled.last}


# ---------------------------------------------------------------- main


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def label_of(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 and size % 1_000_000 == 0 else f"{size // 1000}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=4)
    parser.add_argument("--alerts-per-night", type=int, default=250_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 10_000_000],
                        help="catalogue sizes (sources); the smallest gives the last line")
    parser.add_argument("--planted", type=int, default=10_000, help="sources placed on alert positions")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--runs-large", type=int, default=1, help="runs per case for catalogues over 1M sources")
    parser.add_argument("--lsdb-neighbors", type=int, default=16,
                        help="LSDB n_neighbors (its default is 1: nearest neighbour only)")
    parser.add_argument("--lsdb-hats", action=argparse.BooleanOptionalAction, default=True,
                        help="also run LSDB with the catalogue already in HATS (written beforehand with to_hats, "
                        "not counted; opened with lsdb.open_catalog), as LSDB's published catalogues are")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run among {', '.join(PARTS)}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; choose among {PARTS}")
    sizes = sorted(set(args.sizes))
    runs_of = {size: args.runs if size <= 1_000_000 else args.runs_large for size in sizes}
    n_alerts = args.nights * args.alerts_per_night

    log(f"{platform.machine()}, {os.cpu_count()} cores; {args.nights} nights x {args.alerts_per_night:,} alerts "
        f"({n_alerts:,}), light packet, all classes; catalogues {', '.join(f'{s:,}' for s in sizes)} sources "
        f"({args.planted:,} on alert positions, < {JITTER_ARCSEC:g} arcsec), radius {RADIUS_ARCSEC:g} arcsec")
    began = time.perf_counter()
    archive = ensure_archive(args.nights, args.alerts_per_night)
    catalogues = ensure_catalogues(archive, sizes, args.planted)
    truth = {size: true_pairs(archive, catalogues[size], RADIUS_ARCSEC) for size in sizes}
    log(f"data ready in {time.perf_counter() - began:.0f} s (cached under {RESULTS.relative_to(REPO)}/); "
        + "; ".join(f"{label_of(s)}: {truth[s].num_rows:,} true pairs" for s in sizes))

    rows = []  # (case, sources, runs, median s, match s, process s, pairs, peak RSS, note)
    plain = ours = None
    ours_by_size: dict[int, dict] = {}
    want_ours = "ours" in parts or "cold" in parts
    if want_ours and not crossmatch_available():
        log("our cross-match is not in this tree yet (TransferRequest has no catalog_filename): skipping 'ours'"
            " and the cold runs with a catalogue")
        want_ours = False
    if "plain" in parts:
        spec = {"label": "plain", "archive": str(archive), "catalogue": None, "nights": args.nights,
                "runs": args.runs}
        plain = run_case(spec)
        check_plain(plain, n_alerts)
        log(f"plain: {seconds_list(plain)} s "
            f"(Spark start {plain['spark_start']:.1f} s, warm-up {plain['warm_up']:.1f} s, not counted); peak RSS "
            + "; ".join(r["breakdown"] for r in plain["runs"]))
        rows.append(("plain transfer", "-", len(plain["runs"]), median(r["seconds"] for r in plain["runs"]), None,
                     None, None, max(r["peak_rss"] for r in plain["runs"]), max(r["peak_pss"] for r in plain["runs"]),
                     f"{median(r['cpu_s'] for r in plain['runs']):.0f} CPU-s"))
    if want_ours and "ours" in parts:
        warm_up_catalogue = ensure_warmup_catalogue(catalogues[sizes[0]])
        for size in sizes:
            spec = {"label": f"ours {size}", "archive": str(archive), "catalogue": str(catalogues[size]),
                    "warm_up_catalogue": str(warm_up_catalogue),
                    "truth": str(truth_path(catalogues[size], RADIUS_ARCSEC)), "nights": args.nights,
                    "runs": runs_of[size]}
            ours = run_case(spec)
            ours_by_size[size] = ours
            for run in ours["runs"]:
                counts_agree = run["published"] == run["rows"] == run["distinct"] == run["pairs"]
                if not (run["pairs_equal_truth"] and counts_agree):
                    raise RuntimeError(f"crossmatch transfer {label_of(size)}: published {run['published']:,}, table "
                                       f"{run['rows']:,} rows ({run['distinct']:,} distinct pairs), pairs equal to the "
                                       f"{truth[size].num_rows:,} true pairs: {run['pairs_equal_truth']}")
            match_s = ours["count_with_s"] - ours["count_without_s"]
            log(f"ours {label_of(size)}: {seconds_list(ours)} s (warm-up {ours['warm_up']:.1f} s); catalogue read + "
                f"index {ours['index_s']:.1f} s; selection job counted with / without the catalogue "
                f"{ours['count_with_s']:.1f} / {ours['count_without_s']:.1f} s "
                f"({ours['count_with']:,} / {ours['count_without']:,} rows); peak RSS "
                + "; ".join(r["breakdown"] for r in ours["runs"]))
            rows.append((f"crossmatch transfer {label_of(size)}", f"{size:,}", len(ours["runs"]),
                         median(r["seconds"] for r in ours["runs"]), ours["index_s"] + match_s, None,
                         ours["runs"][0]["pairs"], max(r["peak_rss"] for r in ours["runs"]),
                         max(r["peak_pss"] for r in ours["runs"]),
                         f"{median(r['cpu_s'] for r in ours['runs']):.0f} CPU-s; index {ours['index_s']:.1f} s + "
                         f"Spark match {match_s:.1f} s; = true pairs"))
    if "cold" in parts:
        for size in [None] + (sizes if want_ours else []):
            catalogue = None if size is None else catalogues[size]
            name = "plain" if size is None else f"crossmatch {label_of(size)}"
            expected = n_alerts if size is None else truth[size].num_rows
            result = run_cold(archive, catalogue, args.nights)
            if result["published"] != expected:
                raise RuntimeError(f"cold {name} transfer published {result['published']:,}, expected {expected:,}")
            rows.append((f"cold CLI {name}", "-" if size is None else f"{size:,}", 1, None, None,
                         result["seconds"], None if size is None else result["published"], result["peak_rss"],
                         result["peak_pss"],
                         "request submit --wait, whole process"))
            log(f"cold {name}: {result['seconds']:.1f} s, peak RSS {mib(result['peak_rss'])} MiB "
                f"({result['breakdown']}), peak PSS {mib(result['peak_pss'])} MiB")
    lsdb_versions = None
    if "lsdb" in parts:
        python = ensure_lsdb()
        variants = [(size, False) for size in sizes] + ([(size, True) for size in sizes] if args.lsdb_hats else [])
        for size, from_hats in variants:
            name = f"LSDB {label_of(size)}" + (" (HATS)" if from_hats else "")
            hats = None
            if from_hats:
                hats = catalogues[size].with_name(catalogues[size].stem + "_hats")
                if hats.exists() and hats.stat().st_mtime < catalogues[size].stat().st_mtime:
                    shutil.rmtree(hats)  # written from an older catalogue file
                if not (hats / "collection.properties").exists():
                    prepared = run_lsdb(python, archive, catalogues[size], args.lsdb_neighbors, None, hats)
                    log(f"{name}: catalogue written as HATS (from_dataframe + to_hats, not counted) in "
                        f"{prepared['hats_write_s']:.1f} s")
            results = []
            tag = "hats" if from_hats else "df"
            for i in range(runs_of[size]):
                pairs_out = RESULTS / f"crossmatch_lsdb_pairs_{size}_{tag}.parquet" if i == 0 else None
                results.append(run_lsdb(python, archive, catalogues[size], args.lsdb_neighbors, pairs_out, hats))
                log(f"{name} run {i + 1}: " + json.dumps(results[-1]))
            first = results[0]
            lsdb_versions = f"lsdb {first['lsdb']}, dask {first['dask']}, scheduler {first['scheduler']}"
            same = pair_set(_read_parquet(str(RESULTS / f"crossmatch_lsdb_pairs_{size}_{tag}.parquet"))) == \
                pair_set(truth[size])
            note = (f"{'= true pairs' if same else '!= TRUE PAIRS'}; max {first['max_per_alert']}/alert "
                    f"(n_neighbors={args.lsdb_neighbors})")
            if first["max_per_alert"] >= args.lsdb_neighbors:
                note += " TRUNCATED"
            rows.append((name, f"{size:,}", len(results), None,
                         median(r["match_s"] for r in results), median(r["seconds"] for r in results),
                         first["pairs"], max(r["peak_rss"] for r in results), max(r["peak_pss"] for r in results),
                         f"load {median(r['load_s'] for r in results):.1f} s, import "
                         f"{median(r['import_s'] for r in results):.1f} s; {note}"))

    log("")
    if lsdb_versions:
        log(f"LSDB: {lsdb_versions}; alerts and catalogue read with pyarrow/pandas, from_dataframe (defaults: "
            f"orders 0-7, 5 arcsec margin) for both, or (HATS) the catalogue written beforehand with to_hats and "
            f"opened with open_catalog; crossmatch(radius_arcsec={RADIUS_ARCSEC:g}, n_neighbors={args.lsdb_neighbors}"
            f" instead of its default 1, to return every match) .compute()")
    header = (f"{'case':<28}{'sources':>12}{'runs':>5}{'transfer s':>11}{'match s':>9}{'process s':>10}"
              f"{'pairs':>9}{'peak RSS MiB':>13}{'PSS MiB':>8}  note")
    log(header)
    for case, sources, n, seconds, match, process, pairs, peak, pss, note in rows:
        log(f"{case:<28}{sources:>12}{n:>5}{fmt(seconds):>11}{fmt(match):>9}{fmt(process):>10}"
            f"{'-' if pairs is None else f'{pairs:,}':>9}{mib(peak):>13}{mib(pss):>8}  {note}")
    log("true pairs: " + ", ".join(f"{label_of(s)} {truth[s].num_rows:,}" for s in sizes)
        + "; peak RSS and PSS: whole process tree (driver, Spark JVM, Python workers; not the broker), RSS sampled "
        "every 0.1 s, PSS every 0.5 s (PSS shares a memory-mapped index among the processes that map it)")
    if plain is not None and ours_by_size:
        plain_s = median(r["seconds"] for r in plain["runs"])
        for size in sorted(ours_by_size, reverse=True):
            ratio = median(r["seconds"] for r in ours_by_size[size]["runs"]) / plain_s
            log(f"crossmatch transfer vs plain transfer ({label_of(size)} sources): {ratio:.2f}")


def seconds_list(result: dict) -> str:
    return ", ".join(f"{r['seconds']:.1f}" for r in result["runs"])


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def check_plain(result: dict, expected: int) -> None:
    for run in result["runs"]:
        if not run["published"] == run["rows"] == run["distinct"] == expected:
            raise RuntimeError(f"plain transfer: published {run['published']:,}, table {run['rows']:,} rows "
                               f"({run['distinct']:,} distinct), archive {expected:,}")


if __name__ == "__main__":
    main()
