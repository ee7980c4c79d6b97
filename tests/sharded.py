"""Runs the test suite as N parallel pytest processes (``make test`` calls it).

Most of the suite is single-threaded Python (the Triton interpreter, tiny models under the
``one_thread`` fixture), so one process leaves a core idle on the 2-core CI machine. Each
shard runs every N-th test in collection order (conftest's ``FASTCELLS_TEST_SHARD``) with
``OMP_NUM_THREADS`` set to its share of the cores, writes its log to ``--logs``, and the
run fails if any shard fails. Every shard's summary is printed; a failed shard's whole log.

    python -m tests.sharded [--shards 2] [--logs DIR] [--paths tests/...] [-- pytest args]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2, help="parallel pytest processes")
    parser.add_argument("--logs", default="build/test-logs", help="folder of the shards' logs")
    parser.add_argument("--paths", nargs="+", default=["tests"], help="what pytest collects")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error(f"--shards must be >= 1, got {args.shards}")
    root = Path(__file__).resolve().parent.parent
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.shards)
    procs = []
    start = time.monotonic()
    for i in range(args.shards):
        env = dict(os.environ, FASTCELLS_TEST_SHARD=f"{i}/{args.shards}",
                   OMP_NUM_THREADS=str(threads))
        log = logs / f"shard{i}.log"
        cmd = [sys.executable, "-m", "pytest", *args.paths, "-q", "-p", "no:cacheprovider",
               "--durations=15", *args.pytest_args]
        with open(log, "w") as f:
            procs.append((i, log, subprocess.Popen(cmd, cwd=root, env=env, stdout=f,
                                                   stderr=subprocess.STDOUT)))
    print(f"{args.shards} shards of `pytest {' '.join(args.paths)}`, {threads} thread(s) each; logs in {logs}/",
          flush=True)
    failed = []
    for i, log, proc in procs:
        rc = proc.wait()
        text = log.read_text(errors="replace")
        lines = text.splitlines()
        print(f"\n===== shard {i}/{args.shards}: exit {rc} "
              f"({time.monotonic() - start:.0f} s since start)")
        print(text if rc != 0 else "\n".join(lines[-25:]), flush=True)
        if rc != 0:
            failed.append(i)
    if failed:
        print(f"\nshards {failed} failed (logs above and in {logs}/)")
        return 1
    print(f"\nall {args.shards} shards passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
