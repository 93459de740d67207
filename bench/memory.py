#!/usr/bin/env python3
"""Peak memory and time of `prism-syncd --once` on large trees, against rsync.

For each `--files N` (given once or more; default 10,000, 100,000 and
1,000,000) the script writes a tree of N small files, 100 to a folder, into
a source folder per tool, and times with GNU time (wall clock and peak RSS,
`%e %M`) for prism (`--local SRC --remote file://DST --once`) and for
`rsync -a --delete SRC/ DST/`:

1. the initial sync into an empty destination (one run: a second one would
   need a fresh destination, and a tree just deleted slows the next one,
   see bench.py's `set_aside`);
2. a no-op resync, `--runs` times;
3. an incremental resync after 1 % of the files got a new content (of
   another size, so rsync's size-and-mtime check sees it), `--runs` times;
   the old contents go back after each run and are synced untimed (and
   checked: the next timed run starts from there).

Files are empty by default (`--size 0`), so that a million of them costs
inodes and folder entries only: about 1 GiB of disk per tree, four trees
(each tool's source and destination) per size. The changed files get 16
bytes. Medians of the runs are printed with the ratios prism/rsync. Each
destination is compared with its source (names, sizes and the contents of
files that are not empty) after the initial sync, after the no-op runs and
after every incremental and restoring run.

    python3 bench/memory.py --bin-dir target/release
    python3 bench/memory.py --files 100000 --runs 5 --bin-dir target/release

Standard library only; Linux only (GNU time at /usr/bin/time).
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench
from bench import GNU_TIME, PRISM_LOCAL_META, PRISM_REMOTE_META, Problem, set_aside

FILES_PER_FOLDER = 100
CHANGED_SIZE = 16


def tree_paths(files):
    """The relative paths of a tree of `files` files, 100 to a folder."""
    width = len(str(max(files - 1, 1) // FILES_PER_FOLDER))
    return [f"d{i // FILES_PER_FOLDER:0{width}d}/f{i % FILES_PER_FOLDER:02d}" for i in range(files)]


def write_tree(root, paths, size):
    content = b"x" * size
    made = set()
    for rel in paths:
        folder = rel.rsplit("/", 1)[0]
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        with open(root / rel, "wb") as f:
            f.write(content)


def changed_paths(paths):
    """1 % of the paths (at least one), spread over the tree."""
    step = 100 if len(paths) >= 100 else len(paths)
    return paths[::step]


def listing(root, skip_top):
    """{relative path: (size, digest of the content)} of every file below
    root; folders are implied. An empty file is not opened: its size says
    all (a million of them would cost a million opens per look)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top]
            prefix = ""
        else:
            prefix = rel_dir + "/"
        for name in filenames:
            path = os.path.join(dirpath, name)
            size = os.lstat(path).st_size
            digest = None
            if size:
                with open(path, "rb") as f:
                    digest = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
            found[prefix + name] = (size, digest)
    return found


class Tool(bench.Tool):
    """bench.py's tool (prism or rsync, its own source and destination),
    timed under GNU time and checked by names, sizes and contents."""

    def __init__(self, name, work, bins, env):
        super().__init__(name, work, bins, env)
        for folder in (self.src, self.dst, self.state, self.logs):
            folder.mkdir(parents=True, exist_ok=True)

    def sync(self, label):
        """(seconds, peak RSS in KiB) of one sync."""
        return super().sync(label, measure_rss=True)

    def verify(self, what):
        src = listing(self.src, {PRISM_LOCAL_META})
        dst = listing(self.dst, {PRISM_REMOTE_META})
        if src != dst:
            missing = sorted(set(src) - set(dst))[:5]
            extra = sorted(set(dst) - set(src))[:5]
            differ = sorted(p for p in set(src) & set(dst) if src[p] != dst[p])[:5]
            raise Problem(f"{self.name} after {what}: the destination differs from the source "
                          f"(missing {missing}, extra {extra}, other content {differ})")


def set_sizes(tool, paths, size):
    content = b"y" * size
    for rel in paths:
        with open(tool.src / rel, "wb") as f:
            f.write(content)


def measure_size(files, args, bins, env, work):
    paths = tree_paths(files)
    changes = changed_paths(paths)
    tools = [Tool(name, work / f"n{files}", bins, env) for name in ("prism", "rsync")]
    started = time.monotonic()
    for tool in tools:
        write_tree(tool.src, paths, args.size)
    print(f"{files:,} files: wrote a source per tool in {time.monotonic() - started:.0f} s", flush=True)
    results = {tool.name: {} for tool in tools}
    # Turns per run, so neither tool always goes first.
    order = lambda run: tools if run % 2 == 0 else tools[::-1]  # noqa: E731
    for tool in order(0):
        os.sync()
        results[tool.name]["initial"] = [tool.sync("initial")]
        tool.verify("the initial sync")
    for run in range(args.runs):
        for tool in order(run):
            os.sync()
            results[tool.name].setdefault("noop", []).append(tool.sync("noop"))
    for tool in tools:
        tool.verify("the no-op syncs")
    for run in range(args.runs):
        for tool in order(run):
            set_sizes(tool, changes, CHANGED_SIZE)
            os.sync()
            results[tool.name].setdefault("incremental", []).append(tool.sync("incremental"))
            tool.verify("an incremental sync")
            set_sizes(tool, changes, args.size)
            # rsync compares size and mtime at one-second resolution: the
            # old size is back, so it sees the change.
            tool.sync("restore")
            # The next timed run starts from here: it must be the tree the
            # other runs started from.
            tool.verify("a restoring sync")
    print(f"{files:,} files: measured in {time.monotonic() - started:.0f} s", flush=True)
    # The trees go now, after their last timed run: the next size's trees
    # are written into a file system this one no longer fills.
    set_aside([work / f"n{files}"], work / "set-aside")
    return {
        tool: {phase: {"runs": [{"seconds": round(s, 4), "peak_rss_kib": rss} for s, rss in runs],
                       "median_s": statistics.median(s for s, _ in runs),
                       "median_peak_rss_kib": statistics.median(rss for _, rss in runs)}
               for phase, runs in phases.items()}
        for tool, phases in results.items()
    }


def print_report(report):
    print()
    print(f"peak memory and time, medians of {report['runs']} runs (initial: one run), "
          f"files of {report['size']} bytes, 100 to a folder")
    print(f"{'files':>10} {'phase':<12} {'prism MiB':>10} {'rsync MiB':>10} {'ratio':>6} "
          f"{'prism s':>9} {'rsync s':>9} {'ratio':>6}")
    for files, tools in report["sizes"].items():
        for phase in ("initial", "noop", "incremental"):
            p, r = tools["prism"][phase], tools["rsync"][phase]
            pm, rm = p["median_peak_rss_kib"] / 1024, r["median_peak_rss_kib"] / 1024
            print(f"{int(files):>10,} {phase:<12} {pm:>10.1f} {rm:>10.1f} {pm / rm:>5.1f}× "
                  f"{p['median_s']:>9.3f} {r['median_s']:>9.3f} {p['median_s'] / r['median_s']:>5.2f}×")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, action="append",
                   help="files in a tree; give it more than once (default 10000, 100000, 1000000)")
    p.add_argument("--size", type=int, default=0, help="bytes in each file (default 0)")
    p.add_argument("--runs", type=int, default=3, help="no-op and incremental runs (default 3)")
    p.add_argument("--bin-dir", type=Path, required=True, help="where prism-syncd is")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the scratch folder (default the system temp dir)")
    p.add_argument("--json-out", type=Path, default=None, help="also write the results as JSON to this file")
    args = p.parse_args()
    sizes = args.files or [10_000, 100_000, 1_000_000]
    if min(sizes) < 1 or args.runs < 1 or args.size < 0 or args.size == CHANGED_SIZE:
        p.error(f"--files and --runs must be at least 1, --size at least 0 and not {CHANGED_SIZE}")
    if GNU_TIME is None:
        sys.exit("GNU time is missing: apt-get install time")
    if not os.access(args.bin_dir / "prism-syncd", os.X_OK):
        sys.exit(f"{args.bin_dir / 'prism-syncd'} is missing: cargo build --release")
    if shutil.which("rsync") is None:
        sys.exit("rsync is missing: apt-get install rsync")
    work = Path(tempfile.mkdtemp(prefix="prism-memory-", dir=args.workdir))
    # Each tree needs one inode per file and folder: say so before hours go.
    # A size's trees are set aside, not deleted, until the end (see
    # measure_size), so every size's trees are on the disk together.
    free_inodes = os.statvfs(work).f_favail
    needed_inodes = 4 * sum(sizes) * (1 + 1 / FILES_PER_FOLDER)
    if free_inodes < needed_inodes:
        sys.exit(f"{work} has {free_inodes:,} free inodes; the trees need {needed_inodes:,.0f}")
    env = dict(os.environ, HOME=str(work), XDG_RUNTIME_DIR=str(work), PRISM_SYNC_CONFIG=str(work / "none.toml"))
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": args.runs, "size": args.size,
              "load_before": [round(x, 2) for x in os.getloadavg()], "sizes": {}}
    try:
        for files in sizes:
            report["sizes"][str(files)] = measure_size(files, args, args.bin_dir, env, work)
    except Problem as problem:
        sys.exit(f"failed: {problem}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    print(f"load average before {report['load_before']}, after {report['load_after']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
