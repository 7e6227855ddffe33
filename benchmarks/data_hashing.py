"""Hashing throughput of Loom's streaming sha256 against `sha256sum`, and its memory.

    python benchmarks/data_hashing.py                       # 2 files x 256 MiB, 3 rounds
    python benchmarks/data_hashing.py --size-mib 2048 --files 4 --rounds 5

Throughput: the same files, in the same run, hashed by
``loom.workloads.hashing.sha256_path`` (one reused 1 MiB buffer, ``readinto``) and
by ``sha256sum`` (coreutils) as the bare baseline. The files are read once first so
both read from the page cache; rounds alternate the two; the best round of each
counts. Ratio = Loom MB/s / sha256sum MB/s (goal >= 0.9). ``openssl dgst -sha256``
is timed too, as a second reference: hashlib runs OpenSSL's sha256 (SHA-NI where
the CPU has it), while coreutils' sha256sum may use its own portable C code.

Memory: a fresh process hashes a small file and the large file, each with its
address space capped (RLIMIT_AS) at what the interpreter already uses plus
--headroom-mib, which is less than the large file: a hasher that buffered the
file could not finish. Peak RSS (getrusage) and the peak of Python allocations
during the call (tracemalloc) are reported for both sizes; constant memory means
they do not grow with the file.

Writes benchmarks/results/data_hashing.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

CHILD = r"""
import json, resource, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
from loom.workloads.hashing import sha256_path
def vm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1])
headroom = int(sys.argv[3]) * 1024 * 1024
limit = vm_kib() * 1024 + headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
tracemalloc.start()
digest, size = sha256_path(sys.argv[2])
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"digest": digest, "bytes": size, "addressSpaceLimitBytes": limit,
                  "tracemallocPeakBytes": peak,
                  "maxRssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def loom_hash(paths: list[Path]) -> tuple[float, list[str]]:
    from loom.workloads.hashing import sha256_path

    start = time.perf_counter()
    digests = [sha256_path(p)[0] for p in paths]
    return time.perf_counter() - start, digests


def sha256sum(paths: list[Path]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - start
    return elapsed, ["sha256:" + line.split()[0] for line in out.splitlines()]


def openssl_dgst(paths: list[Path]) -> tuple[float, list[str]] | None:
    """A second reference: OpenSSL's own file hasher (the library hashlib uses)."""
    import shutil

    if not shutil.which("openssl"):
        return None
    start = time.perf_counter()
    out = subprocess.run(["openssl", "dgst", "-sha256", "-r", *map(str, paths)], check=True, capture_output=True,
                         text=True).stdout
    elapsed = time.perf_counter() - start
    return elapsed, ["sha256:" + line.split()[0] for line in out.splitlines()]


def memory(path: Path, headroom_mib: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "operator"), str(path), str(headroom_mib)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="size of each file (MiB)")
    parser.add_argument("--files", type=int, default=2, help="number of files")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each hasher")
    parser.add_argument("--headroom-mib", type=int, default=64,
                        help="address space allowed beyond the interpreter's own in the memory test (< file size)")
    parser.add_argument("--dir", default=None, help="where the test files go (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_hashing.json"))
    args = parser.parse_args(argv)
    if args.headroom_mib >= args.size_mib:
        parser.error("--headroom-mib must be smaller than --size-mib, or the memory test proves nothing")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="loom-hash-bench-") as tmp:
        paths = [Path(tmp) / f"f{i}.bin" for i in range(args.files)]
        for p in paths:
            make_file(p, args.size_mib * 1024 * 1024)
        small = Path(tmp) / "small.bin"
        make_file(small, 4 * 1024 * 1024)
        total = sum(p.stat().st_size for p in paths)
        sha256sum(paths)  # warm the page cache for both
        loom_times, base_times, ossl_times = [], [], []
        for _ in range(args.rounds):
            t, ours = loom_hash(paths)
            loom_times.append(t)
            t, theirs = sha256sum(paths)
            base_times.append(t)
            assert ours == theirs, (ours, theirs)  # same digests, or the comparison means nothing
            ossl = openssl_dgst(paths)
            if ossl:
                ossl_times.append(ossl[0])
                assert ossl[1] == ours
        mem_small = memory(small, args.headroom_mib)
        mem_large = memory(paths[0], args.headroom_mib)

    mbps = lambda t: total / t / 1e6  # noqa: E731
    result = {
        "benchmark": "data_hashing",
        "files": args.files,
        "fileBytes": args.size_mib * 1024 * 1024,
        "totalBytes": total,
        "rounds": args.rounds,
        "loom": {"bestSeconds": min(loom_times), "MBps": mbps(min(loom_times)), "seconds": loom_times},
        "sha256sum": {"bestSeconds": min(base_times), "MBps": mbps(min(base_times)), "seconds": base_times},
        "ratio": mbps(min(loom_times)) / mbps(min(base_times)),
        "goal": 0.9,
        "openssl": ({"bestSeconds": min(ossl_times), "MBps": mbps(min(ossl_times)), "seconds": ossl_times,
                     "ratioLoomToOpenssl": mbps(min(loom_times)) / mbps(min(ossl_times))} if ossl_times else None),
        "memory": {
            "headroomBytes": args.headroom_mib * 1024 * 1024,
            "smallFile": {"bytes": mem_small["bytes"], "maxRssKiB": mem_small["maxRssKiB"],
                          "tracemallocPeakBytes": mem_small["tracemallocPeakBytes"]},
            "largeFile": {"bytes": mem_large["bytes"], "maxRssKiB": mem_large["maxRssKiB"],
                          "tracemallocPeakBytes": mem_large["tracemallocPeakBytes"],
                          "addressSpaceLimitBytes": mem_large["addressSpaceLimitBytes"]},
            "rssGrowthKiB": mem_large["maxRssKiB"] - mem_small["maxRssKiB"],
        },
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"ratio loom/sha256sum = {result['ratio']:.3f} (goal >= 0.9); "
          f"{result['loom']['MBps']:.0f} vs {result['sha256sum']['MBps']:.0f} MB/s"
          + (f" (openssl dgst {result['openssl']['MBps']:.0f} MB/s, loom/openssl "
             f"{result['openssl']['ratioLoomToOpenssl']:.2f})" if result["openssl"] else "") + "; "
          f"peak RSS {mem_small['maxRssKiB']} KiB (4 MiB file) vs {mem_large['maxRssKiB']} KiB "
          f"({args.size_mib} MiB file, address space capped {args.headroom_mib} MiB above start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
