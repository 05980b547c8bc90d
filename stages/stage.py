"""
The lecture commit by commit: every stage of "Let's reproduce GPT-2" as a complete train_gpt2.py you can read, run
and diff against the stage before. The steps are unified diffs in this folder (NN-name.patch, a message on top),
from an empty file through the lecture's stages to, last, step 16, "beyond the lecture": this project's
train_gpt2.py. Each step is applied to what the steps before it gave.

    python stages/stage.py                  # the stages, one line each
    python stages/stage.py 6                # write stage 6 to stages/out/06/train_gpt2.py (and its step, 06.patch)
    python stages/stage.py 6 --show         # print stage 6's message and diff
    python stages/stage.py 6 --run -- -B 8  # write stage 6 and run it (from the repo root), passing -B 8 on
    python stages/stage.py --check          # every step applies and the last one ends at train_gpt2.py
    python stages/stage.py --refresh        # train_gpt2.py changed: re-derive the last step from it
    python stages/stage.py 7 --move         # after editing stages/out/07/train_gpt2.py: make it stage 7, re-derive
                                            # the steps after it (git merge-file carries the edit forward)
    python stages/stage.py 11 --add new.py --name ddp --message msg.txt   # a new stage between the others

The patches are applied by the small strict applier below, not by `git apply` or `patch`: these patches are our
own, exact, and applied to exactly the text they were made from, so there is nothing to fuzz or merge, a context
line that differs is an error (the stages have drifted), and no tool beyond Python is needed to follow along.
"""

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.path.join(ROOT, "train_gpt2.py")
OUT = os.path.join(HERE, "out")
DIFF_START = "--- a/train_gpt2.py\n"
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    pass


def step_files():
    """{stage number: step file} in order: 01-....patch, 02-....patch, ..., 16-beyond-the-lecture.patch."""
    names = sorted(f for f in os.listdir(HERE) if re.fullmatch(r"\d\d-[\w-]+\.patch", f))
    return {int(f[:2]): os.path.join(HERE, f) for f in names}


def split_step(text):
    """A step file -> (its message, its diff)."""
    at = text.find(DIFF_START)
    if at < 0:
        raise PatchError(f"no diff in the step (it starts at a line {DIFF_START.strip()!r})")
    return text[:at], text[at:]


def apply(lines, diff, name="the step"):
    """Apply a unified diff to lines (each ending in a newline), strictly: every context and removed line must
    be exactly where the diff says."""
    out, pos = [], 0
    body = diff.splitlines(keepends=True)[2:]  # past the --- and +++ lines
    i = 0
    while i < len(body):
        m = HUNK.match(body[i])
        if not m:
            raise PatchError(f"{name}: expected a hunk header at diff line {i + 3}: {body[i]!r}")
        old_start, old_len = int(m.group(1)), int(m.group(2) or 1)
        start = old_start - 1 if old_len else old_start  # an empty old side names the line before the insertion
        if start < pos:
            raise PatchError(f"{name}: hunks out of order at diff line {i + 3}")
        out += lines[pos:start]
        pos = start
        i += 1
        while i < len(body) and not body[i].startswith("@@"):
            tag, text = body[i][0], body[i][1:]
            if tag in " -":
                if pos >= len(lines) or lines[pos] != text:
                    raise PatchError(f"{name}: line {pos + 1} is {lines[pos] if pos < len(lines) else 'past the end'!r}"
                                     f", the step expects {text!r}: the stages have drifted")
                pos += 1
            if tag in " +":
                out.append(text)
            elif tag not in "-\\":
                raise PatchError(f"{name}: a diff line must start with ' ', '+' or '-': {body[i]!r}")
            i += 1
    return out + lines[pos:]


def make_diff(old, new):
    """The unified diff (3 lines of context) from old to new, as the step files hold it."""
    return "".join(difflib.unified_diff(old, new, "a/train_gpt2.py", "b/train_gpt2.py"))


def read(path):
    with open(path) as f:
        return f.read()


def stages():
    """{stage number: (step file, message, diff, the train_gpt2.py lines after it)}, every step applied in turn."""
    lines, result = [], {}
    for n, path in step_files().items():
        message, diff = split_step(read(path))
        lines = apply(lines, diff, os.path.basename(path))
        result[n] = (path, message, diff, lines)
    return result


def title(message):
    """The first line of a step's message: 'Subject: [stage 6] a simple data loader' -> 'a simple data loader'."""
    first = message.splitlines()[0] if message else ""
    return re.sub(r"^Subject: \[[^]]*\] ", "", first)


def changed_lines(diff):
    """Lines a step adds plus lines it removes: the size of the commit."""
    return sum(1 for line in diff.splitlines()[2:] if line[:1] in "+-")


def write_stage(n, chain):
    path, message, diff, lines = chain[n]
    folder = os.path.join(OUT, f"{n:02d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train_gpt2.py"), "w") as f:
        f.writelines(lines)
    with open(os.path.join(folder, os.path.basename(path)), "w") as f:
        f.write(message + diff)
    return os.path.join(folder, "train_gpt2.py")


def write_step(path, message, old, new):
    with open(path, "w") as f:
        f.write(message + make_diff(old, new))


def refresh(chain):
    """The last step ("beyond the lecture") made anew: from the last lecture stage to today's train_gpt2.py."""
    numbers = list(chain)
    path, message, _, _ = chain[numbers[-1]]
    before = chain[numbers[-2]][3] if len(numbers) > 1 else []
    write_step(path, message, before, read(TARGET).splitlines(keepends=True))
    return path


def move_back(n, chain):
    """Stage n's written-out file was edited (a change of train_gpt2.py moved back to where the lecture made it):
    step n becomes the diff to the edited file, and every later stage gets the same edit by a three-way merge
    (git merge-file, base: stage n as it was), except the last, which is train_gpt2.py itself."""
    edited = read(os.path.join(OUT, f"{n:02d}", "train_gpt2.py")).splitlines(keepends=True)
    numbers = list(chain)
    old_n = chain[n][3]
    new_stages = {j: stage[3] for j, stage in chain.items()}
    new_stages[n] = edited
    with tempfile.TemporaryDirectory() as tmp:
        for j in numbers[numbers.index(n) + 1 : -1]:
            files = {}
            for name, lines in (("ours", chain[j][3]), ("base", old_n), ("theirs", edited)):
                files[name] = os.path.join(tmp, name)
                with open(files[name], "w") as f:
                    f.writelines(lines)
            r = subprocess.run(["git", "merge-file", "-p", files["ours"], files["base"], files["theirs"]],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise PatchError(f"the edit does not carry into stage {j} without a conflict; edit that stage "
                                 "by hand (write it, edit it, --move it) first")
            new_stages[j] = r.stdout.splitlines(keepends=True)
    new_stages[numbers[-1]] = read(TARGET).splitlines(keepends=True)
    for i, j in enumerate(numbers):
        if j >= n:
            write_step(chain[j][0], chain[j][1], new_stages[numbers[i - 1]] if i else [], new_stages[j])


def add_stage(n, name, source, message, chain):
    """A new step n: from the stage before it to the file source; the step after it is re-derived to start from
    there (the last, "beyond the lecture", goes on ending at train_gpt2.py)."""
    before = max(j for j in chain if j < n)
    after = min(j for j in chain if j > n)
    new = read(source).splitlines(keepends=True)
    if new == chain[before][3]:
        raise PatchError(f"{source} is stage {before} as it stands: a new stage must change something")
    path = os.path.join(HERE, f"{n:02d}-{name}.patch")
    write_step(path, read(message), chain[before][3], new)
    write_step(chain[after][0], chain[after][1], new, chain[after][3])
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, help="the stage to write (1 is the first)")
    parser.add_argument("--show", action="store_true", help="print the stage's message and diff")
    parser.add_argument("--run", action="store_true", help="run the stage (arguments after -- go to it)")
    parser.add_argument("--check", action="store_true", help="check that the last stage is train_gpt2.py")
    parser.add_argument("--refresh", action="store_true", help="re-derive the last step from train_gpt2.py")
    parser.add_argument("--move", action="store_true", help="make the edited stages/out/NN/train_gpt2.py stage N")
    parser.add_argument("--add", metavar="FILE", help="a new stage N: this file, between the stages around it")
    parser.add_argument("--name", help="with --add: the step's file name, NN-NAME.patch")
    parser.add_argument("--message", metavar="FILE", help="with --add: the step's message (Subject: [stage N] ...)")
    argv = sys.argv[1:] if argv is None else argv
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        chain = stages()
        if args.refresh:
            print(f"wrote {refresh(chain)}")
            chain = stages()
        if args.check or args.refresh:
            if chain[max(chain)][3] != read(TARGET).splitlines(keepends=True):
                raise PatchError("the last stage is not train_gpt2.py: run `python stages/stage.py --refresh` to "
                                 "re-derive the last step from it")
            print(f"{len(chain)} steps apply; the last gives train_gpt2.py byte for byte")
            return 0
        if args.n is None:
            for n, (path, message, diff, lines) in chain.items():
                print(f"{n:2d}  {title(message):60s} {len(lines):4d} lines, {changed_lines(diff):4d} changed")
            return 0
        if args.add:
            if args.n is None or args.n in chain or not min(chain) < args.n < max(chain) or not args.name \
                    or not args.message:
                parser.error("--add needs a new stage number between the others, --name and --message")
            print(f"wrote {add_stage(args.n, args.name, args.add, args.message, chain)}")
            return 0
        if args.n not in chain:
            parser.error(f"no stage {args.n}: the stages are {', '.join(map(str, chain))}")
        if args.move:
            move_back(args.n, chain)
            print(f"stage {args.n} is the edited file; the steps from {args.n} on are re-derived")
            return 0
        if args.show:
            print(chain[args.n][1] + chain[args.n][2], end="")
            return 0
        path = write_stage(args.n, chain)
        if args.run:  # from the repo root, where input.txt is, with its modules (fineweb.py, ...) importable
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
            return subprocess.run([sys.executable, path, *passed], cwd=ROOT, env=env).returncode
        # from stage 13 on a stage imports this project's modules (hellaswag.py): --run puts them on the path
        print(f"wrote {os.path.relpath(path, ROOT)}: python stages/stage.py {args.n} --run (-- its flags)")
        return 0
    except (PatchError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
