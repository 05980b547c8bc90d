"""docs/benchmarks.md's tables, generated from bench/results/*.json: one table per benchmark script, one row per
figure, each with the command that measured it, the machine, torch, the date and the commit.

    python bench/report.py            # rewrite the generated part of docs/benchmarks.md
    python bench/report.py --check    # exit 1 when the page does not match the JSON files (a test runs this)

A figure is a number whose name says what it measures (tokens/s, ms per step, seconds, peak memory, a fraction of
a limit, a speed-up, a loss); the rest of each JSON file (settings, curves) stays in the file. The commit is the one
the JSON file names (bench/common.py records it), else the commit that added the file.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PAGE = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN = "<!-- bench/report.py writes from here to the end marker: do not edit by hand -->"
END = "<!-- end of bench/report.py's tables -->"
# the names of figures: what they measure, not how the run was set up
FIGURE = re.compile(r"(tokens_per_s|ms_per_step|_ms$|examples_per_s|_s$|^seconds|peak_|_gib$|_mib$|fraction_of|"
                    r"speedup|^mfu$|val_loss|loss_difference|tflops|gflops|_gbs$|over_)")
MAX_ROWS = 40  # per file: a file with more figures shows its first MAX_ROWS and says how many it holds


def figures(value, path=""):
    """(name, number) for every figure in a JSON value, its name the path of keys (items of a list by their own
    name, else their index)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from figures(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and len(value) <= 20:
        for i, item in enumerate(value):
            label = item.get("name", i) if isinstance(item, dict) else i
            yield from figures(item, f"{path}[{label}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and FIGURE.search(path.split(".")[-1]):
        yield path, value


def commit_of(path, record):
    if record.get("commit"):
        return record["commit"]
    r = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h", "--", os.path.relpath(path, ROOT)],
                       cwd=ROOT, capture_output=True, text=True)
    found = r.stdout.split()
    return found[-1] if r.returncode == 0 and found else "?"


def benchmark_of(command):
    """bench/train_throughput.py ... -> train_throughput."""
    found = re.search(r"bench/(\w+)\.py", command)
    return found.group(1) if found else "other"


def tables():
    """The generated markdown: a section per benchmark script with its figures, each naming its run (r1, r2, ...),
    and the runs below it: file, command, machine, torch, date, commit; runs in date order."""
    records = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        records.append((benchmark_of(record.get("command", "")), record.get("date", ""), path, record))
    out = [BEGIN, ""]
    for bench in sorted({r[0] for r in records}):
        runs = sorted((r for r in records if r[0] == bench), key=lambda r: (r[1], r[2]))
        out += [f"### {bench}", "", "| figure | value | run |", "|---|---|---|"]
        for n, (_, _, _, record) in enumerate(runs, 1):
            rows = list(figures({k: v for k, v in record.items() if k not in ("command", "device", "torch", "date",
                                                                              "commit")}))
            out += [f"| {name} | {value:,} | r{n} |" for name, value in rows[:MAX_ROWS]]
            if len(rows) > MAX_ROWS:
                out.append(f"| ({len(rows) - MAX_ROWS} more in the file) |  | r{n} |")
        out += ["", "| run | file | command | machine | torch | date | commit |", "|---|---|---|---|---|---|---|"]
        for n, (_, date, path, record) in enumerate(runs, 1):
            out.append(f"| r{n} | `{os.path.basename(path)}` | `{record.get('command', '?')}` | "
                       f"{record.get('device', '?')} | {record.get('torch', '?')} | {date or '?'} | "
                       f"{commit_of(path, record)} |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def page_with_tables(page):
    """The page with its generated part replaced (appended when it has none yet)."""
    if BEGIN in page and END in page:
        return page[:page.index(BEGIN)] + tables() + page[page.index(END) + len(END) + 1:]
    return page.rstrip() + "\n\n## The figures\n\n" + tables()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    with open(PAGE) as f:
        page = f.read()
    wanted = page_with_tables(page)
    if args.check:
        if wanted != page:
            print(f"{PAGE} does not match bench/results/*.json: run python bench/report.py", file=sys.stderr)
            return 1
        return 0
    with open(PAGE, "w") as f:
        f.write(wanted)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
