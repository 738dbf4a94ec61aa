"""Consumer throughput: `fink_datatransfer` vs fink-client 12.3 `finkctl transfer`, same topic,
same machine, same number of consumers, in one run.

For a light-packet topic and a full-packet topic (synthetic ZTF alerts published to a private
embedded broker) it prints, in alerts/s:

* the raw fetch rate (consume the values without decoding, same number of processes): the ceiling;
* `fink_datatransfer` writing Parquet (the format both tools write) and Delta;
* fink-client 12.3's transfer loop writing Parquet: `finkctl_transfer.poll`, unchanged, run
  by -nconsumers processes over a queue of partitions exactly as `finkctl transfer` does, once
  with its default -batchsize (100, on the first --client-limit alerts: it is slow there) and
  once with our default batch size (50,000: the engines compared at equal batching). The CLI
  itself is not timed: its lag table and schema poll join consumer groups, which on the
  embedded broker (Tansu) take ~23 s each, or minutes after an unclean leave.

Compared rates are steady-state: the last 75% of the rows over the time their data files took,
for both tools alike (this leaves out start-up, the first batches and fink-client's idle
time-outs at the end). Our end-to-end rate, start-up included, is printed too. Outputs are
checked to hold every alert. fink-client runs from its own venv (`.venv-compat`, created with
`pip install fink-client==12.3.0` when missing). Last line: `ratio vs fink-client (light): X`,
each tool as users run it (defaults: ours Delta, -batchsize 50,000; fink-client Parquet,
-batchsize 100); the line above it also gives the Parquet-vs-Parquet ratio at equal batching.

    .venv/bin/python bench/consumer.py [--light 300000] [--full 10000] [--nconsumers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMPAT_VENV = REPO / ".venv-compat"
DEFAULT_BATCHSIZE = 50_000  # fink_datatransfer's -batchsize default
FINK_CLIENT_DEFAULT_BATCHSIZE = 100  # `finkctl transfer -batchsize` default
FINK_CLIENT = "fink-client==12.3.0"


def _installing_compat_venv() -> bool:
    """True while another process (the compat test, another bench) installs into .venv-compat."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(COMPAT_VENV) in cmdline and ("pip" in cmdline or "venv" in cmdline) and process.pid != os.getpid():
            return True
    return False


def ensure_fink_client() -> Path:
    """Path of `finkctl` in the compat venv (fink-client 12.3.0), creating the venv when missing;
    an installation already running elsewhere is waited for rather than raced."""
    finkctl = COMPAT_VENV / "bin" / "finkctl"
    python = COMPAT_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('fink-client'))"]
    while _installing_compat_venv():
        print(f"waiting for another installation into {COMPAT_VENV} ...", flush=True)
        time.sleep(20)
    if finkctl.exists() and subprocess.run(check, capture_output=True, text=True).stdout.strip() == \
            FINK_CLIENT.split("==")[1]:
        return finkctl
    print(f"creating {COMPAT_VENV} with {FINK_CLIENT} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(COMPAT_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", FINK_CLIENT], check=True)
    return finkctl


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
    """Alerts/s of `nconsumers` processes that only fetch the values (no decoding, no writing),
    each timed from its first message."""
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


FINK_CLIENT_DRIVER = r"""
# Runs fink-client 12.3's own transfer loop (fink_client.scripts.finkctl_transfer.poll, unchanged)
# the way `finkctl transfer` does: a queue of partitions, -nconsumers processes, fastavro
# decoding, avro_to_arrow, pq.write_to_dataset. Skipped: the group-based lag table and schema
# poll of the CLI, which on the embedded broker wait ~23 s or more per consumer-group join.
import json, sys
from multiprocessing import Lock, Process, Queue, Value
from types import SimpleNamespace
import fastavro, numpy as np
from fink_client.scripts.finkctl_transfer import poll
servers, topic, outdir, nconsumers, batchsize, schema_path, lags, limit = sys.argv[1:9]
schema = fastavro.schema.parse_schema(json.load(open(schema_path)))
config = {"bootstrap.servers": servers, "group.id": "bench_fink_client", "auto.offset.reset": "earliest"}
args = SimpleNamespace(survey="ztf", topic=topic, limit=int(limit) or None, outdir=outdir, outformat="parquet",
                       partitionby="finkclass", batchsize=int(batchsize), nconsumers=int(nconsumers),
                       maxtimeout=3.0, verbose=False)
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


def data_files(root: Path) -> list[tuple[float, int]]:
    """(mtime, rows) of every data file under `root`, oldest first."""
    import pyarrow.parquet as pq

    files = [p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts and not p.name.startswith(".")]
    return sorted((p.stat().st_mtime, pq.ParquetFile(p).metadata.num_rows) for p in files)


def steady_rate(root: Path) -> tuple[float, float]:
    """(alerts/s, span in s) over the last 75% of the rows, from the data files' times: leaves
    out start-up, consumer-group joins and the first batches, and fink-client's idle time-outs
    at the end, for both tools alike."""
    files = data_files(root)
    total = sum(n for _, n in files)
    done, start = 0, files[0][0]
    for mtime, n in files:
        done += n
        if done >= total / 4:
            start = mtime
            break
    rows = sum(n for t, n in files if t > start)
    span = files[-1][0] - start
    return rows / max(span, 1e-3), span


def count_distinct(root: Path, fmt: str) -> int:
    if fmt == "delta":
        from fink_pipeline.consumer.readers import delta_table_counts

        return delta_table_counts(str(root), "candid")[1]
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(root), format="parquet", partitioning="hive", ignore_prefixes=["_", "."])
    return len(set(dataset.to_table(columns=["candid"])["candid"].to_pylist()))


def run(cmd: list[str], env: dict | None = None) -> float:
    """Wall seconds of `cmd` (fails loudly)."""
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{cmd[0]} failed with exit code {done.returncode}")
    return time.monotonic() - t0


def fink_client_run(label: str, topic: str, published, servers: str, nconsumers: int, work: Path,
                    compat_python: Path, batchsize: int, limit: int) -> float:
    """Steady alerts/s of fink-client's transfer loop with `-batchsize batchsize`."""
    import json

    out = work / f"finkclient_{label}_{batchsize}"
    schema_path = work / f"schema_{label}.json"
    schema_path.write_text(json.dumps(published.avro_schema))
    lags = json.dumps([published.per_partition.get(p, {"count": 0})["count"] for p in range(len(published.per_partition))])
    cmd = [str(compat_python), "-c", FINK_CLIENT_DRIVER, servers, topic, str(out), str(nconsumers),
           str(batchsize), str(schema_path), lags, str(limit)]
    wall = run(cmd)
    rows = count_distinct(out, "parquet")
    assert rows >= min(limit or published.total, published.total) * 0.9, f"fink-client wrote {rows} distinct alerts"
    rate, span = steady_rate(out)
    print(f"[{label}] fink-client 12.3 transfer loop, -batchsize {batchsize}: {rate:,.0f} alerts/s steady "
          f"({rows:,} alerts, {span:.1f} s); wall {wall:.1f} s incl. its final idle time-outs", flush=True)
    return rate


def bench_topic(label: str, topic: str, published, servers: str, nconsumers: int, work: Path,
                compat_python: Path | None, client_limit: int) -> dict:
    total = published.total
    results: dict[str, float] = {}
    results["raw"] = raw_fetch_rate(servers, topic, len(published.per_partition), nconsumers)
    print(f"[{label}] raw fetch, no decoding (ceiling): {results['raw']:,.0f} alerts/s", flush=True)
    for fmt in ("parquet", "delta"):
        out = work / f"ours_{label}_{fmt}"
        cmd = [str(REPO / ".venv" / "bin" / "fink_datatransfer"), "-topic", topic, "-outdir", str(out),
               "-servers", servers, "-nconsumers", str(nconsumers), "-format", fmt]
        wall = run(cmd)
        rows = count_distinct(out, fmt)
        assert rows == total, f"fink_datatransfer {fmt} wrote {rows} distinct alerts of {total}"
        rate, span = steady_rate(out)
        results[f"ours_{fmt}"] = rate
        print(f"[{label}] fink_datatransfer -format {fmt} (default -batchsize {DEFAULT_BATCHSIZE}): {rate:,.0f} "
              f"alerts/s steady ({span:.1f} s); {total / wall:,.0f} alerts/s end to end ({wall:.1f} s with start-up)",
              flush=True)
    if compat_python is not None:
        # as users run it (its default -batchsize 100), on the first alerts of the topic
        results["fink_client_default"] = fink_client_run(label, topic, published, servers, nconsumers, work,
                                                         compat_python, FINK_CLIENT_DEFAULT_BATCHSIZE, client_limit)
        # with our batch size: the engines compared at equal batching
        results["fink_client_same_batch"] = fink_client_run(label, topic, published, servers, nconsumers, work,
                                                            compat_python, DEFAULT_BATCHSIZE, 0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--light", type=int, default=300_000, help="alerts in the light-packet topic")
    parser.add_argument("--full", type=int, default=10_000, help="alerts in the full-packet topic (55 KB each)")
    parser.add_argument("--nconsumers", type=int, default=2)
    parser.add_argument("--client-limit", type=int, default=40_000,
                        help="alerts fink-client reads with its default -batchsize (it is slow there)")
    parser.add_argument("--skip-fink-client", action="store_true")
    args = parser.parse_args()

    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.surveys import get_survey

    compat_python = None if args.skip_fink_client else ensure_fink_client().parent / "python"
    survey = get_survey("ztf")
    print(f"{os.cpu_count()} cores; {args.nconsumers} consumers; light {args.light:,} alerts, full {args.full:,}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-consumer-") as tmp, EmbeddedBroker() as broker:
        work = Path(tmp)
        servers = broker.address
        settings = KafkaSettings(bootstrap_servers=servers)
        results = {}
        for label, packet, n in (("light", "light", args.light), ("full", "full", args.full)):
            if n <= 0:
                continue
            topic = f"ftransfer_ztf_2024-03-01_{label}{int(time.time())}"
            published = publish_synthetic_topic(settings, topic, survey, n, packet=packet, keep_ids=False)
            print(f"[{label}] published {published.total:,} alerts to {topic} in {published.seconds:.1f} s",
                  flush=True)
            results[label] = bench_topic(label, topic, published, servers, args.nconsumers, work,
                                         compat_python, args.client_limit if label == "light" else args.client_limit // 20)
    print()
    for label, res in results.items():
        line = (f"{label}: raw fetch {res['raw']:,.0f}/s | ours parquet {res['ours_parquet']:,.0f}/s, "
                f"delta {res['ours_delta']:,.0f}/s")
        if "fink_client_default" in res:
            line += (f" | fink-client {res['fink_client_default']:,.0f}/s (its defaults), "
                     f"{res['fink_client_same_batch']:,.0f}/s (our batch size)"
                     f" | ratio defaults (delta vs fink-client): {res['ours_delta'] / res['fink_client_default']:.1f}x"
                     f", same batch size, parquet vs parquet: {res['ours_parquet'] / res['fink_client_same_batch']:.1f}x")
        print(line)
    if "light" in results and "fink_client_default" in results["light"]:
        light = results["light"]
        print(f"ratio vs fink-client (light): {light['ours_delta'] / light['fink_client_default']:.1f}")


if __name__ == "__main__":
    main()
