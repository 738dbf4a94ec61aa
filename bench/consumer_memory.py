"""Peak memory of `fink_datatransfer` must not grow with the topic: max RSS of the consumer's
whole process tree (command + consumer processes), sampled with psutil every 50 ms, for a
100,000-alert topic and a 10x larger one, in one run.

    .venv/bin/python bench/consumer_memory.py                # 100,000 vs 1,000,000 light alerts
    .venv/bin/python bench/consumer_memory.py --large 300000 # quicker
    .venv/bin/python bench/consumer_memory.py --packet full --small 5000 --large 50000

Before it, the larger run's peak RSS in each quarter of its duration: memory that grows with
what has been consumed shows as rising quarters; a working set that has reached its plateau,
as equal ones (the smaller topic may end before the plateau: each consumer reads a few batches).

Last line: `peak RSS ratio (large/small): X` (flat means within 1.2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_tree_rss(cmd: list[str], interval: float = 0.05
                  ) -> tuple[int, float, int, list[int], list[tuple[float, int]]]:
    """(max summed RSS of the process tree in bytes, wall seconds, exit code, each process's
    own peak RSS, command first, and every sample: seconds since the start, summed RSS) of `cmd`."""
    process = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    own: dict[int, int] = {}
    samples: list[tuple[float, int]] = []
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    started = time.monotonic()
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
            sizes = {p.pid: p.memory_info().rss for p in tree if p.is_running()}
        except psutil.Error:
            sizes = {}  # a process ended between listing and reading: next sample
        samples.append((time.monotonic() - started, sum(sizes.values())))
        for pid, rss in sizes.items():
            own[pid] = max(own.get(pid, 0), rss)
        time.sleep(interval)
    seconds = time.monotonic() - started
    reader.join(5)
    if process.returncode != 0:
        print("".join(stderr)[-3000:], file=sys.stderr)
    per_process = [own.pop(process.pid, 0), *sorted(own.values(), reverse=True)]
    peak = max((rss for _, rss in samples), default=0)
    return peak, seconds, process.returncode, per_process, samples


def quarter_peaks(samples: list[tuple[float, int]], seconds: float) -> list[int]:
    """The peak summed RSS in each quarter of a run of `seconds` (0 for a quarter without a sample)."""
    peaks = [0, 0, 0, 0]
    for at, rss in samples:
        quarter = min(3, int(4 * at / seconds)) if seconds > 0 else 0
        peaks[quarter] = max(peaks[quarter], rss)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--packet", default="light", choices=("light", "full"))
    parser.add_argument("--nconsumers", type=int, default=2)
    parser.add_argument("--format", default="delta", choices=("delta", "parquet"))
    args = parser.parse_args()

    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.surveys import get_survey

    survey = get_survey("ztf")
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.address)
        for label, n in (("small", args.small), ("large", args.large)):
            topic = f"ftransfer_ztf_2024-03-01_mem{label}{int(time.time())}"
            published = publish_synthetic_topic(settings, topic, survey, n, packet=args.packet, keep_ids=False)
            print(f"{label}: published {published.total:,} {args.packet} alerts in {published.seconds:.0f} s", flush=True)
            cmd = [str(REPO / ".venv" / "bin" / "fink_datatransfer"), "-topic", topic, "-outdir",
                   str(Path(tmp) / label), "-servers", broker.address, "-nconsumers", str(args.nconsumers),
                   "-format", args.format]
            peak, seconds, code, per_process, samples = peak_tree_rss(cmd)
            if code != 0:
                raise SystemExit(f"fink_datatransfer failed with exit code {code}")
            peaks[label] = peak
            print(f"{label}: {n:,} alerts in {seconds:.1f} s ({n / seconds:,.0f} alerts/s), "
                  f"peak RSS of the consumer tree {peak / 2**20:,.0f} MiB (each process's own peak: command "
                  f"{per_process[0] / 2**20:,.0f}, then {', '.join(f'{r / 2**20:,.0f}' for r in per_process[1:])} MiB)",
                  flush=True)
    # samples and seconds are the large run's: it is the loop's last
    print("large: peak RSS per quarter of the run: "
          + " / ".join(f"{q / 2**20:,.0f}" for q in quarter_peaks(samples, seconds)) + " MiB", flush=True)
    ratio = peaks["large"] / peaks["small"]
    print(f"peak RSS ratio (large/small): {ratio:.2f}")


if __name__ == "__main__":
    main()
