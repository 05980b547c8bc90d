"""The import rules: no cycle among the project's files (imports inside functions count too); fineweb.py needs
neither torch nor the trainer; importing hellaswag.py or train_gpt2.py runs nothing and loads no trainer."""

import ast
import json
import re
import subprocess
import sys

from helpers import ROOT


def project_modules():
    """{module name: path} for the scripts at the top level and the gptkit package."""
    files = [*ROOT.glob("*.py"), *(ROOT / "gptkit").glob("*.py")]
    return {(f"gptkit.{f.stem}" if f.parent.name == "gptkit" else f.stem): f for f in files}


def imports_of(path, modules):
    """Every module the file imports, anywhere in it (inside functions too): the project's by name, and the
    top-level names of the others."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
    return {name if name in modules else name.split(".")[0] for name in found} - {"gptkit"}


def reachable(start, graph):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle_and_the_light_scripts_stay_light():
    modules = project_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    assert "train_gpt2" in graph["hellaswag"] or "train_gpt2" in graph["sample"]  # the parser sees real imports
    cycles = [name for name in modules if name in reachable(name, graph)]
    assert cycles == [], f"import cycle through {cycles}"
    for name in [m for m in modules if m.startswith("gptkit.")] + ["hellaswag", "fineweb"]:
        assert "train_gpt2" not in reachable(name, graph), name
    assert {"torch", "train_gpt2", "hellaswag"}.isdisjoint(reachable("fineweb", graph))


def test_importing_runs_nothing_and_loads_no_trainer(tmp_path):
    code = ("import sys, fineweb; assert 'torch' not in sys.modules, 'fineweb loads torch'; "
            "import hellaswag; assert 'train_gpt2' not in sys.modules, 'hellaswag loads the trainer'; "
            "import torch.distributed as dist, train_gpt2, sample, plot; assert not dist.is_initialized(); "
            "assert 'transformers' not in sys.modules and 'datasets' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_trainer_stays_lecture_sized():
    """The layout's budget: train_gpt2.py stays within 700 lines and no function in it runs past 80 but train(), the
    one training loop with its events inline as in the lecture (stage 15's is 81 lines with the features of the
    video), so that what grows goes to gptkit/ and the lecture stays readable in one sitting."""
    source = (ROOT / "train_gpt2.py").read_text()
    assert len(source.splitlines()) <= 700
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.FunctionDef)}
    assert lengths.pop("train") <= 160
    assert [(name, n) for name, n in lengths.items() if n >= 80] == []


def test_the_readme_is_a_short_front_door_to_every_page_of_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages and [p for p in pages if f"(docs/{p}" not in readme] == []
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:  # every relative link leads to a file
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_benchmark_page_is_generated_from_the_results():
    sys.path.insert(0, str(ROOT / "bench"))
    import report

    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert report.page_with_tables(page) == page, "docs/benchmarks.md is stale: run python bench/report.py"
    for path in (ROOT / "bench" / "results").glob("*.json"):  # every file's figures are on the page, with its run
        record = json.loads(path.read_text())
        name, value = next(report.figures({k: v for k, v in record.items() if k != "date"}))  # each has one
        assert f"| {name} | {value:,} |" in page and f"`{path.name}`" in page, path.name
    changed = page.replace("| r1 |", "| r9 |", 1)
    assert report.page_with_tables(changed) != changed  # an edit by hand is caught
