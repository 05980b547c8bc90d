"""play.ipynb, plot.py and sample.py on a tiny run made by the trainer."""

import json
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import plot
import sample as sample_py
from helpers import ROOT, in_process, make_examples, train, write_jsonl


pytestmark = pytest.mark.slow  # a training run, subprocesses and a notebook kernel


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("play")
    write_jsonl(tmp / "hellaswag_val.jsonl", make_examples(4, seed=6))
    train(data, tmp / "run", "--max-steps", 4, "--eval-interval", 2, "--hellaswag-interval", 2,
          "--hellaswag-dir", tmp)
    return tmp / "run"


def test_read_log_resumed_missing_and_partial(tmp_path):
    (tmp_path / "log.txt").write_text(
        "0 val 10.9000\n0 train 10.950000\n1 train 9.000000\n2 train 8.000000\n"
        "1 train 9.500000\n2 train 8.500000\n"  # a resumed run repeats steps 1 and 2: the later lines win
        "3 train 7.000000\n3 garbage\nnot a line at all\n"
        "4 train 6.5")  # the trainer is still writing this line
    series = plot.read_log(tmp_path)
    assert series["train"] == {0: 10.95, 1: 9.5, 2: 8.5, 3: 7.0}
    assert series["val"] == {0: 10.9}
    assert series["hella"] == {}  # a series the run never wrote


def test_plot_writes_a_png_of_the_logged_series(run, tmp_path):
    png = tmp_path / "p.png"
    fig = plot.plot_runs([str(run)], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {kind: {} for kind in plot.KINDS}
    for line in (run / "log.txt").read_text().splitlines():
        step, kind, value = line.split()
        logged[kind][int(step)] = float(value)
    loss_ax, hella_ax = fig.axes
    plotted = {line.get_label(): dict(zip(line.get_xdata(), line.get_ydata())) for ax in fig.axes for line in ax.lines}
    assert plotted["run train"] == logged["train"] and plotted["run val"] == logged["val"]
    assert plotted["run hella"] == logged["hella"] and sorted(logged["hella"]) == [0, 2, 4]
    # reference lines for a tiny model fall back to the smallest size: GPT-2 124M and GPT-3 125M
    assert [line.get_ydata()[0] for line in hella_ax.lines[1:]] == [0.2945, 0.337, 0.25]  # and chance
    # Tiny Shakespeare: GPT-2's FineWeb-Edu val loss would compare unlike with unlike, so no line, and a note
    assert len(loss_ax.lines) == 2 and "no GPT-2 line" in loss_ax.get_title() and "tinyshakespeare" in loss_ax.get_title()
    assert loss_ax.yaxis.get_major_formatter()(8.0, 0) == "8"  # plain tick labels on the log scale


def test_plot_reference_line_only_for_fineweb_edu_and_no_empty_panel(tmp_path):
    (tmp_path / "log.txt").write_text("0 train 10.9\n1 train 9.5\n1 val 9.4\n")
    (tmp_path / "run.json").write_text('{"corpus": "edufineweb", "n_params": 124439808}')
    fig = plot.plot_runs([str(tmp_path)])
    assert len(fig.axes) == 1  # no HellaSwag logged: no empty HellaSwag panel
    assert fig.axes[0].lines[-1].get_ydata()[0] == plot.GPT2_124M_VAL_LOSS


def test_plot_command_line(run):
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), str(run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (run / "plot.png").exists()
    assert "min train loss" in r.stdout and "max HellaSwag" in r.stdout


def sample(*args, own_process=False):
    """sample.py's output: in a process of its own, or its main in this one."""
    args = list(map(str, args))
    if own_process:
        r = subprocess.run([sys.executable, str(ROOT / "sample.py"), *args], capture_output=True, text=True)
    else:
        r = in_process(lambda: sample_py.main(args), ["sample.py", *args])
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_sample_command_is_reproducible(run):
    seeded = ["-m", run, "--prompt", "KING:", "--num-samples", 3, "--max-new-tokens", 12, "--no-stop-at-eot",
              "--device", "cpu"]
    out = sample(*seeded, "--seed", 1, own_process=True)
    assert out.count("--- sample") == 3 and out.count("KING:") >= 3
    assert out == sample(*seeded, "--seed", 1, own_process=True)  # another process, the same samples
    assert out == sample(*seeded, "--seed", 1) != sample(*seeded, "--seed", 2)
    # greedy: fp32 weights give the trainer's model's own tokens; bf16 weights (half the bytes a token reads) run too
    import train_gpt2
    from gptkit.tokenizer import gpt2_tokenizer

    greedy = ["-m", run, "--prompt", "KING:", "--num-samples", 1, "--max-new-tokens", 12, "--temperature", 0,
              "--no-stop-at-eot", "--device", "cpu"]
    enc, model = gpt2_tokenizer(), train_gpt2.load_model(str(run)).eval()
    expected = enc.decode(model.generate([enc.encode("KING:")], 12, temperature=0)[0])
    assert sample(*greedy, "--dtype", "float32") == f"--- sample 1/1\n{expected}\n"
    assert sample(*greedy, "--dtype", "bfloat16").startswith("--- sample 1/1\nKING:")


def test_notebook_is_stored_without_outputs_and_executes(run, monkeypatch):
    raw = json.loads((ROOT / "play.ipynb").read_text())
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in raw["cells"])
    nb = nbformat.read(ROOT / "play.ipynb", as_version=4)
    monkeypatch.setenv("PLAY_RUNS", str(run))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "min val loss" in text and "Hello, I'm a language model," in text
    assert "lm_head.weight is wte.weight: True" in text
    assert "std after 24 additions: 4.99 (sqrt(24) = 4.90)" in text and "each scaled by 1/sqrt(24): std 0.99" in text
    assert "summed: gradients 4.00x the whole batch's" in text and "divided by 4: gradients 1.00x" in text
