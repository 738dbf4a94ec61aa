"""Consumer: `fink_datatransfer` vs fink-client 12.3, whole processes on the same topics.

A light-packet topic and a full-packet topic of synthetic ZTF alerts are published once to a
private embedded broker (with their `_schema` and `_status` companions, as the transfer job
writes them); each tool then downloads each topic `--runs` times into a fresh folder, as users
run it, and the headline is the median whole-process wall time: start-up, imports, reading and
writing, and each tool's own way of knowing it is done, included.

* ours: the `fink_datatransfer` command at its defaults (Delta, the survey's partitioning,
  -batchsize 50,000); it stops on the status topic's end record.
* fink-client 12.3 (its own venv, `.venv-compat`, created with `pip install fink-client==12.3.0`
  when missing): its transfer loop, `finkctl_transfer.poll`, unchanged, run by -nconsumers
  processes over a queue of partitions exactly as `finkctl transfer` does, at its defaults:
  no partitioning, Parquet, -batchsize 100, maxtimeout 10 s (`finkctl auth register`'s default).
  It stops by time-outs (a partition that yields nothing for maxtimeout is put back in the
  queue, and dropped after 4 empty looks): that wait counts, as users wait for it.
  Deviations, both in its favour: the CLI's lag table and schema poll are skipped (they join
  consumer groups; on the embedded broker, Tansu, the CLI stops there with "Consumer group is
  rebalancing"), so the driver is given the schema and each partition's size instead.

Both tools use the same number of consumer processes (the number of cores: both defaults).
Beside the wall times: steady-state rates (the last 75 % of the rows over the time their data
files took, which leaves out start-up and the time-outs at the end), the CPU seconds of each
process tree, a raw fetch rate (values consumed, neither decoded nor written: the ceiling), and
the consumer's own phases (fetch, decode, write, status, other) from one in-process run on the
light topic. Every output is checked to hold every alert. Last line:
`ratio vs fink-client (light): X`, fink-client's median wall time over ours.

    .venv/bin/python bench/consumer.py [--light 100000] [--full 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMPAT_VENV = REPO / ".venv-compat"
FINK_CLIENT = "fink-client==12.3.0"
FINK_CLIENT_DEFAULTS = {"batchsize": 100, "maxtimeout": 10.0, "partitionby": None, "outformat": "parquet"}


def _installing_compat_venv() -> bool:
    """True while another process (the compat test, another bench) installs into .venv-compat."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(COMPAT_VENV) in cmdline and ("pip" in cmdline or "venv" in cmdline) and process.pid != os.getpid():
            return True
    return False


def ensure_fink_client() -> Path:
    """Python of the compat venv (fink-client 12.3.0), creating the venv when missing; an
    installation already running elsewhere is waited for rather than raced."""
    python = COMPAT_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('fink-client'))"]
    while _installing_compat_venv():
        print(f"waiting for another installation into {COMPAT_VENV} ...", flush=True)
        time.sleep(20)
    if python.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == \
            FINK_CLIENT.split("==")[1]:
        return python
    print(f"creating {COMPAT_VENV} with {FINK_CLIENT} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(COMPAT_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", FINK_CLIENT], check=True)
    return python


FINK_CLIENT_DRIVER = r"""
# fink-client 12.3's transfer loop (fink_client.scripts.finkctl_transfer.poll, unchanged) run the
# way `finkctl transfer` runs it (transfer_): a queue of partitions, -nconsumers processes,
# fastavro decoding, avro_to_arrow, pq.write_to_dataset. Skipped: its lag table and schema poll,
# which join consumer groups (the schema and each partition's size are given instead).
import json, sys
from multiprocessing import Lock, Process, Queue, Value
from types import SimpleNamespace
import fastavro, numpy as np
from fink_client.scripts.finkctl_transfer import poll
servers, topic, outdir, nconsumers, schema_path, lags, options = sys.argv[1:8]
options = json.loads(options)
schema = fastavro.schema.parse_schema(json.load(open(schema_path)))
config = {"bootstrap.servers": servers, "group.id": "bench_fink_client_" + outdir.replace("/", "_"),
          "auto.offset.reset": "earliest"}
args = SimpleNamespace(survey="ztf", topic=topic, limit=None, outdir=outdir, nconsumers=int(nconsumers),
                       verbose=False, **options)
queue = Queue()
for partition, lag in enumerate(json.loads(lags)):
    queue.put({"partition": partition, "offset": 0, "lag": lag, "status": 0})
counter, lock = Value("i", 0), Lock()
rng = np.random.RandomState(0)
procs = [Process(target=poll, args=(i + 1, queue, schema, config, rng, args, counter, lock))
         for i in range(int(nconsumers))]
for p in procs:
    p.start()
for p in procs:
    p.join()
print(counter.value)
"""


@dataclass
class Runs:
    """Whole-process runs of one tool on one topic."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def data_files(root: Path) -> list[tuple[float, int]]:
    """(mtime, rows) of every data file under `root`, oldest first."""
    import pyarrow.parquet as pq

    files = [p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts and not p.name.startswith(".")
             and not any(part.startswith("_") for part in p.relative_to(root).parts)]
    return sorted((p.stat().st_mtime, pq.ParquetFile(p).metadata.num_rows) for p in files)


def steady_rate(root: Path) -> float:
    """Alerts/s over the last 75 % of the rows, from the data files' times."""
    files = data_files(root)
    total = sum(n for _, n in files)
    done, start = 0, files[0][0]
    for mtime, n in files:
        done += n
        if done >= total / 4:
            start = mtime
            break
    rows = sum(n for t, n in files if t > start)
    return rows / max(files[-1][0] - start, 1e-3)


def distinct_alerts(root: Path, fmt: str) -> int:
    if fmt == "delta":
        from fink_pipeline.consumer.readers import delta_table_counts

        return delta_table_counts(str(root), "candid")[1]
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(root), format="parquet", partitioning="hive", ignore_prefixes=["_", "."])
    return len(set(dataset.to_table(columns=["candid"])["candid"].to_pylist()))


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of `cmd` and its children (fails loudly)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{cmd[0]} failed with exit code {done.returncode}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_ours(topic: str, published, servers: str, nconsumers: int, out: Path) -> tuple[float, float, float]:
    wall, cpu = timed([str(REPO / ".venv" / "bin" / "fink_datatransfer"), "-topic", topic, "-outdir", str(out),
                       "-servers", servers, "-nconsumers", str(nconsumers)])
    rows = distinct_alerts(out, "delta")
    assert rows == published.total, f"fink_datatransfer wrote {rows} distinct alerts of {published.total}"
    return wall, cpu, steady_rate(out)


def run_fink_client(topic: str, published, servers: str, nconsumers: int, out: Path,
                    compat_python: Path, schema_path: Path) -> tuple[float, float, float]:
    lags = [published.per_partition.get(p, {"count": 0})["count"] for p in range(len(published.per_partition))]
    wall, cpu = timed([str(compat_python), "-c", FINK_CLIENT_DRIVER, servers, topic, str(out), str(nconsumers),
                       str(schema_path), json.dumps(lags), json.dumps(FINK_CLIENT_DEFAULTS)])
    rows = distinct_alerts(out, "parquet")
    if rows != published.total:
        print(f"  fink-client wrote {rows:,} distinct alerts of {published.total:,}", flush=True)
    return wall, cpu, steady_rate(out)


def _raw_fetch(servers: str, topic: str, partitions: list[int], out) -> None:
    from confluent_kafka import TopicPartition

    from fink_pipeline.consumer.core import kafka_consumer
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.status import read_status

    settings = KafkaSettings(bootstrap_servers=servers)
    status = read_status(settings, topic)
    expected = sum(status.final_offsets[p].count for p in partitions if p in status.final_offsets)
    consumer = kafka_consumer(settings, f"raw-{os.getpid()}")
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    first = consumer.consume(num_messages=1, timeout=30)  # connected, fetching: the clock starts
    t0 = time.monotonic()
    got = len(first)
    while got < expected:
        got += len([m.value() for m in consumer.consume(num_messages=20_000, timeout=1.0)])
    out.put((got, time.monotonic() - t0))
    consumer.close()


def raw_fetch_rate(servers: str, topic: str, n_partitions: int, nconsumers: int) -> float:
    """Alerts/s of `nconsumers` processes that only fetch the values, each timed from its first message."""
    context = mp.get_context("spawn")
    out = context.Queue()
    groups = [list(range(n_partitions))[i::nconsumers] for i in range(nconsumers)]
    procs = [context.Process(target=_raw_fetch, args=(servers, topic, g, out)) for g in groups]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(n for n, _ in results) / max(s for _, s in results)


def consumer_phases(settings, topic: str, work: Path):
    """One in-process `consume_topic` run (one consumer, all partitions, Delta by finkclass),
    writes not overlapped with decoding so that each phase's CPU is its own."""
    import deltalake  # noqa: F401 - imported before the clock, as in a running consumer

    from fink_pipeline.consumer.core import consume_topic
    from fink_pipeline.consumer.delta_sink import DeltaSink
    from fink_pipeline.consumer.partitioning import Partitioning

    sink = DeltaSink(str(work / "phases"), Partitioning("finkclass"))
    return consume_topic(settings, topic, sink, group_id="bench-phases", quarantine_dir=str(work / "phases_q"),
                         overlap_writes=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--light", type=int, default=100_000, help="alerts in the light-packet topic")
    parser.add_argument("--full", type=int, default=2_000, help="alerts in the full-packet topic (~55 KB each)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool on each topic (median)")
    parser.add_argument("--nconsumers", type=int, default=os.cpu_count() or 1,
                        help="consumer processes of both tools (default: the number of cores, both tools' default)")
    parser.add_argument("--skip-fink-client", action="store_true")
    args = parser.parse_args()

    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.surveys import get_survey

    compat_python = None if args.skip_fink_client else ensure_fink_client()
    survey = get_survey("ztf")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.nconsumers} consumer processes "
          f"per tool; light {args.light:,} alerts, full {args.full:,}; {args.runs} runs each", flush=True)
    rows, ratios, phases = [], {}, None
    with tempfile.TemporaryDirectory(prefix="bench-consumer-") as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        servers = broker.address
        settings = KafkaSettings(bootstrap_servers=servers)
        for label, n in (("light", args.light), ("full", args.full)):
            if n <= 0:
                continue
            topic = f"ftransfer_ztf_2024-03-01_{label}{int(time.time())}"
            published = publish_synthetic_topic(settings, topic, survey, n, packet=label, keep_ids=False)
            schema_path = work / f"schema_{label}.json"
            schema_path.write_text(json.dumps(published.avro_schema))
            print(f"[{label}] published {published.total:,} alerts to {topic} in {published.seconds:.1f} s", flush=True)
            raw = raw_fetch_rate(servers, topic, len(published.per_partition), args.nconsumers)
            tools = {"fink_datatransfer": Runs()}
            if compat_python is not None:
                tools["fink-client 12.3"] = Runs()
            for run in range(args.runs):  # interleaved: both tools see the same machine load
                for tool, runs in tools.items():
                    out = work / f"{label}_{tool.split()[0]}_{run}"
                    if tool == "fink_datatransfer":
                        wall, cpu, steady = run_ours(topic, published, servers, args.nconsumers, out)
                    else:
                        wall, cpu, steady = run_fink_client(topic, published, servers, args.nconsumers, out,
                                                            compat_python, schema_path)
                    runs.walls.append(wall)
                    runs.cpus.append(cpu)
                    runs.steady.append(steady)
                    print(f"[{label}] {tool} run {run + 1}: {wall:.1f} s wall, {cpu:.1f} CPU-s, "
                          f"steady {steady:,.0f} alerts/s", flush=True)
            for tool, runs in tools.items():
                rows.append((label, tool, runs, published.total, raw))
            if "fink-client 12.3" in tools:
                ratios[label] = tools["fink-client 12.3"].wall / tools["fink_datatransfer"].wall
            if label == "light":
                phases = consumer_phases(settings, topic, work)
    print()
    print(f"{'packet':6} {'tool':18} {'alerts':>8} {'median wall s':>13} {'walls s':>20} {'alerts/s':>9} "
          f"{'steady/s':>9} {'CPU-s':>7} {'raw fetch/s':>11}")
    for label, tool, runs, total, raw in rows:
        walls = " / ".join(f"{w:.1f}" for w in runs.walls)
        print(f"{label:6} {tool:18} {total:>8,} {runs.wall:>13.1f} {walls:>20} {total / runs.wall:>9,.0f} "
              f"{statistics.median(runs.steady):>9,.0f} {statistics.median(runs.cpus):>7.1f} {raw:>11,.0f}")
    if phases is not None:
        per = 100_000 / max(phases.consumed, 1)
        print("consumer phases, one in-process consumer on the light topic, writes not overlapped "
              f"({phases.consumed:,} alerts, "
              f"{phases.batches} batches, {phases.seconds:.1f} s): CPU-s per 100k "
              + ", ".join(f"{k} {v * per:.2f}" for k, v in phases.phase_cpu_seconds.items())
              + f" (total {sum(phases.phase_cpu_seconds.values()) * per:.2f}); wall s "
              + ", ".join(f"{k} {v:.2f}" for k, v in phases.phase_wall_seconds.items()))
    if "full" in ratios:
        print(f"ratio vs fink-client (full): {ratios['full']:.1f}")
    if "light" in ratios:
        print(f"ratio vs fink-client (light): {ratios['light']:.1f}")


if __name__ == "__main__":
    main()
