"""The lecture commit by commit (stages/): every step applies, the last ends at train_gpt2.py byte for byte, each
step is the size of a commit, refreshing and moving a change back are one command each, and every stage runs and
does what it is for."""

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, make_examples, script_in_process, write_jsonl

sys.path.insert(0, str(ROOT / "stages"))
import stage  # noqa: E402

# a small fresh GPT for the stages' runs: the lecture's shapes would take minutes a stage on a CPU
SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--num-samples", "2", "--max-length", "12"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def test_the_steps_apply_and_end_at_train_gpt2_byte_for_byte(capsys):
    assert stage.main(["--check"]) == 0
    chain = stage.stages()
    assert "".join(chain[max(chain)][3]) == (ROOT / "train_gpt2.py").read_text()
    # a stage that no longer matches what a step expects is an error, not a silent fuzz
    lines = list(chain[5][3])
    lines[lines.index("def first_batch(B, T):\n")] = "def first_batch(B, T):  # drifted\n"  # step 6 removes it
    with pytest.raises(stage.PatchError, match="the stages have drifted"):
        stage.apply(lines, chain[6][2], "06")


def test_every_step_is_the_size_of_a_commit_and_has_a_message():
    chain = stage.stages()
    for n, (path, message, diff, lines) in chain.items():
        assert message.startswith(f"Subject: [stage {n}] ") and "\nRun: " in message or n == max(chain), path
        changed = stage.changed_lines(diff)
        if n == 1:
            assert changed == len(lines) <= 170  # the first commit writes the file (the lecture's: 146 lines)
        elif n <= 15:
            assert changed <= 120, (path, changed)  # the lecture's largest step, DDP, changed about 100
        elif n < max(chain):  # beyond the lecture, a feature at a time (the last step: what is still to split)
            assert changed <= 200, (path, changed)


def test_the_readme_says_the_size_of_every_step():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (stage|changed lines) \|(.*)\|$", readme, re.M)
    stages = [int(x) for kind, cells in rows if kind == "stage" for x in cells.split("|")]
    sizes = [int(x) for kind, cells in rows if kind == "changed lines" for x in cells.split("|")]
    chain = stage.stages()
    assert stages == list(chain)
    assert sizes == [stage.changed_lines(diff) for _, _, diff, _ in chain.values()]
    old, new = chain[15][3], chain[max(chain)][3]  # what the project adds to the lecture's file
    diff = stage.make_diff(old, new).splitlines()[2:]
    added, removed = sum(line[:1] == "+" for line in diff), sum(line[:1] == "-" for line in diff)
    assert f"{added} insertions, {removed} deletions, from {len(old)} lines to {len(new)};" in " ".join(readme.split())


def copy_of_stages(dest):
    """stages/ and train_gpt2.py in a scratch folder, where stage.py can rewrite them."""
    shutil.copytree(ROOT / "stages", dest / "stages", ignore=shutil.ignore_patterns("out", "__pycache__"))
    shutil.copy(ROOT / "train_gpt2.py", dest / "train_gpt2.py")
    return dest


def run_stage_tool(root, *args):
    r = subprocess.run([sys.executable, str(root / "stages" / "stage.py"), *map(str, args)], cwd=root,
                       capture_output=True, text=True)
    return r


def test_a_change_to_train_gpt2_fails_the_check_lands_in_the_last_step_and_moves_back_in_one_command(tmp_path):
    root = copy_of_stages(tmp_path)
    target = root / "train_gpt2.py"
    old = "# GPT-2 used the tanh approximation of GELU"
    new = "# GPT-2 used the tanh approximation of GELU (erf was slow in TensorFlow)"
    target.write_text(target.read_text().replace(old, new))
    r = run_stage_tool(root, "--check")
    assert r.returncode == 1 and "--refresh" in r.stderr  # forgotten: CI fails

    def changed_in_last_step():
        diff = (root / "stages" / "22-beyond-the-lecture.patch").read_text()
        return any(line[:1] in "+-" and "erf was slow" in line for line in diff.splitlines())

    assert run_stage_tool(root, "--refresh").returncode == 0 and changed_in_last_step()
    # the lecture wrote the MLP in stage 1: move the comment there, and every stage after it takes it
    assert run_stage_tool(root, 1).returncode == 0
    stage1 = root / "stages" / "out" / "01" / "train_gpt2.py"
    stage1.write_text(stage1.read_text().replace(old, new))
    r = run_stage_tool(root, 1, "--move")
    assert r.returncode == 0, r.stderr
    assert run_stage_tool(root, "--check").returncode == 0 and not changed_in_last_step()
    for n in (1, 4, 7):
        assert run_stage_tool(root, n).returncode == 0
        assert new in (root / "stages" / "out" / f"{n:02d}" / "train_gpt2.py").read_text()


def test_a_new_stage_goes_in_between_in_one_command(tmp_path):
    root = copy_of_stages(tmp_path)
    # make room after the last stage but one by numbering the last step 90
    os.rename(root / "stages" / "22-beyond-the-lecture.patch", root / "stages" / "90-beyond-the-lecture.patch")
    last = max(n for n in stage.stages() if n < 22)
    assert run_stage_tool(root, last).returncode == 0
    new = tmp_path / "new.py"
    new.write_text((root / "stages" / "out" / f"{last:02d}" / "train_gpt2.py").read_text().replace(
        f"stage {last}", f"stage {last + 1}", 1))
    (tmp_path / "msg").write_text(f"Subject: [stage {last + 1}] a test stage\n\nRun: python stages/stage.py\n\n")
    same = root / "stages" / "out" / f"{last:02d}" / "train_gpt2.py"
    r = run_stage_tool(root, last + 1, "--add", same, "--name", "test", "--message", tmp_path / "msg")
    assert r.returncode == 1 and "a new stage must change something" in r.stderr  # and nothing written:
    assert run_stage_tool(root, "--check").returncode == 0
    r = run_stage_tool(root, last + 1, "--add", new, "--name", "test", "--message", tmp_path / "msg")
    assert r.returncode == 0, r.stderr
    assert run_stage_tool(root, "--check").returncode == 0
    listed = run_stage_tool(root).stdout.splitlines()
    assert [line.split()[0] for line in listed][-3:] == [str(last), str(last + 1), "90"] and "a test" in listed[-2]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every stage written out, as `python stages/stage.py N` writes it, into a scratch copy of stages/."""
    root = copy_of_stages(tmp_path_factory.mktemp("stages"))
    shutil.copy(ROOT / "input.txt", root / "input.txt")
    paths = {}
    for n in stage.stages():
        assert run_stage_tool(root, n).returncode == 0
        paths[n] = root / "stages" / "out" / f"{n:02d}" / "train_gpt2.py"
    return root, paths


def run_stage(written, n, *args):
    """python stages/out/NN/train_gpt2.py args..., offline, from the scratch folder, in this process (the stage runs
    as __main__; from stage 13 on it imports this project's hellaswag.py, found as stage.py --run finds it)."""
    root, paths = written
    r = script_in_process(paths[n], list(map(str, args)), root, OFFLINE)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def losses(out):
    return [float(m) for m in re.findall(r"^step +\d+ \| loss ([\d.]+)", out, re.M)]


def parameters(out):
    return int(re.search(r"^([\d,]+) parameters$", out, re.M).group(1).replace(",", ""))


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory):
    """A small GPT-2 with random weights, saved by transformers: OpenAI's format without the download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128)).eval()
    path = tmp_path_factory.mktemp("hf") / "small-gpt2"
    hf.save_pretrained(path)
    return path, hf


def import_stage(path):
    spec = importlib.util.spec_from_file_location(f"stage_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_stage_1_loads_weights_equal_to_transformers(written, small_gpt2):
    path, hf = small_gpt2
    out = run_stage(written, 1, "--init-from", path)
    assert f"loaded {path}" in out and "transformer.h.0.attn.c_attn.weight (192, 64)" in out
    model = import_stage(written[1][1]).GPT.from_pretrained(str(path))
    ours, theirs = model.state_dict(), {k: v for k, v in hf.state_dict().items() if not k.endswith(".attn.bias")}
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        conv1d = k.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))
        torch.testing.assert_close(ours[k], v.t() if conv1d else v, rtol=0, atol=0, msg=k)
    offline = run_stage(written, 1)  # no flag: OpenAI's gpt2, offline a fresh model, said in one line
    assert "could not load gpt2" in offline and "random weights instead" in offline


@pytest.mark.slow
def test_stages_2_and_3_sample(written, small_gpt2):
    out = run_stage(written, 2, "--init-from", small_gpt2[0], "--num-samples", 2, "--max-length", 12)
    assert out.count("> Hello, I'm a language model,") == 2
    out = run_stage(written, 3, *SMALL)
    assert "using device: cpu" in out and out.count("> Hello, I'm a language model,") == 2


@pytest.mark.slow
def test_stage_4_loss_at_init_is_about_ln_vocab(written):
    out = run_stage(written, 4, *SMALL)
    loss = float(re.search(r"loss at init ([\d.]+)", out).group(1))
    # Unseeded until stage 7, as in the lecture: PyTorch's default init gives logits of variance about 1/3, so
    # the loss is ln 50257 + 1/6 = 10.99, 0.07 apart from seed to seed (30 seeds: 10.82 to 11.17).
    assert 10.6 < loss < 11.45 and "logits (4, 32, 50257)" in out


@pytest.mark.slow
def test_stage_5_learns_its_one_batch_by_heart(written):
    steps = losses(run_stage(written, 5, *SMALL, "--lr", "3e-3", "--steps", 40))
    assert len(steps) == 40 and steps[0] > 10 and steps[-1] < 1


@pytest.mark.slow
def test_stages_6_and_7_loss_falls_on_fresh_batches_and_tying_saves_the_embedding(written):
    counts = {}
    for n in (6, 7):
        out = run_stage(written, n, *SMALL, "--lr", "3e-3", "--steps", 30)
        steps = losses(out)
        assert len(steps) == 30 and sum(steps[-5:]) / 5 < sum(steps[:5]) / 5 - 1, steps
        assert "batches of 4 x 32" in out
        counts[n] = parameters(out)
    assert counts[6] - counts[7] == 50257 * 64  # tied: wte and lm_head are one matrix


def step_lines(out):
    """{name: [values]} from the stages' step lines: loss, lr, norm, dt (ms), tok/sec."""
    rows = [dict(re.findall(r"(loss|lr|norm|dt|tok/sec) ([\d.e+-]+)", line.replace(",", "")))
            for line in out.splitlines() if line.startswith("step ")]
    return {key: [float(r[key].rstrip("ms")) for r in rows] for key in rows[0]}


@pytest.mark.slow
def test_stage_8_times_every_step_and_flash_attention_is_the_manual_one(written):
    runs = {attention: step_lines(run_stage(written, 8, *SMALL, "--steps", 3, "--attention", attention))
            for attention in ("flash", "manual")}
    assert all(dt > 0 for dt in runs["flash"]["dt"]) and len(runs["flash"]["tok/sec"]) == 3
    assert runs["flash"]["loss"] == pytest.approx(runs["manual"]["loss"], abs=1e-4)
    assert runs["flash"]["loss"][0] == pytest.approx(math.log(50304), abs=0.3)  # the padded vocabulary


@pytest.mark.slow
def test_stage_9_warms_up_then_decays_the_lr_and_clips(written):
    steps = step_lines(run_stage(written, 9, *SMALL, "--steps", 12, "--warmup-steps", 4))
    printed = dict(rel=1e-3)  # lr is printed to 4 significant digits
    assert steps["lr"][:4] == pytest.approx([1.5e-4, 3e-4, 4.5e-4, 6e-4], **printed)  # linear warmup to 6e-4
    cosine_end = 6e-5 + 0.5 * (1 + math.cos(math.pi * 7 / 8)) * 5.4e-4  # step 11 of 12: towards a tenth of the peak
    assert steps["lr"][4] == pytest.approx(6e-4, **printed) and steps["lr"][-1] == pytest.approx(cosine_end, **printed)
    assert all(b < a for a, b in zip(steps["lr"][4:], steps["lr"][5:])) and all(n > 0 for n in steps["norm"])


@pytest.mark.slow
def test_stage_10_accumulates_micro_batches_into_one_step(written):
    out = run_stage(written, 10, *SMALL, "--steps", 20, "--total-batch-size", 512, "--max-lr", "3e-3")
    assert "total batch 512 tokens = 4 x 32 x 4 accumulation steps" in out
    loss = step_lines(out)["loss"]
    assert len(loss) == 20 and sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 1, loss


@pytest.mark.slow
def test_stage_11_two_gloo_ranks_equal_one_process(written):
    root, paths = written
    args = [*SMALL, "--steps", 4, "--total-batch-size", 256]  # 2 micro-batches of 4 x 32: one on each rank
    one = step_lines(run_stage(written, 11, *args))["loss"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(paths[11]), *map(str, args)], cwd=root, capture_output=True, text=True,
                       env={**os.environ, **OFFLINE}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 x 32 x 2 ranks x 1 accumulation steps" in r.stdout and r.stdout.count("step ") == 4  # rank 0 prints
    assert step_lines(r.stdout)["loss"] == pytest.approx(one, abs=1e-5)


@pytest.mark.slow
def test_stage_12_reads_fineweb_shards_and_the_val_loss_falls(written, data):
    out = run_stage(written, 12, *SMALL, "--data-dir", data, "--steps", 20, "--eval-interval", 10, "--eval-steps", 4,
                    "--max-lr", "3e-3")
    assert f"train: 1 shard in {data}" in out and f"val: 1 shard in {data}" in out
    val = [float(v) for v in re.findall(r"^step +\d+ \| val loss ([\d.]+)", out, re.M)]
    assert len(val) == 3 and val[2] < val[1] < val[0]  # steps 0, 10 and 20
    root, paths = written
    r = subprocess.run([sys.executable, str(paths[12]), "--data-dir", str(root / "nothing")], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: no train shards in ")


def printed(out, what):
    """{step: value} from the stages' `step N | val loss X` or `step N | HellaSwag acc_norm X` lines."""
    return {int(m[0]): float(m[1]) for m in re.findall(rf"^step +(\d+) \| {what} ([\d.]+)", out, re.M)}


EVALUATING = [*SMALL, "--steps", 10, "--eval-interval", 5, "--eval-steps", 2, "--hellaswag-interval", 5,
              "--sample-interval", 5, "--max-lr", "3e-3"]


@pytest.mark.slow
def test_stage_13_writes_the_lectures_log_lines_and_scores_hellaswag_as_hellaswag_py_does(written, data, tmp_path):
    import hellaswag
    import plot
    import train_gpt2
    from gptkit.tokenizer import gpt2_tokenizer

    write_jsonl(tmp_path / "hellaswag_val.jsonl", make_examples(16, seed=3))
    log_dir = tmp_path / "log"
    out = run_stage(written, 13, *EVALUATING, "--data-dir", data, "--hellaswag-dir", tmp_path, "--log-dir", log_dir)
    lines = (log_dir / "log.txt").read_text().splitlines()
    # the lecture's lines: `{step} train {loss:.6f}` every step, `{step} val {loss:.4f}`, `{step} hella {acc:.4f}`
    assert [line for line in lines if " train " in line] == [f"{s} train {loss:.6f}" for s, loss in
                                                            enumerate(losses(out))] and len(losses(out)) == 10
    val, hella = printed(out, "val loss"), printed(out, "HellaSwag acc_norm")
    assert [line for line in lines if " train " not in line] == \
        [f"{s} {kind} {value[s]:.4f}" for s in (0, 5, 10) for kind, value in (("val", val), ("hella", hella))]
    assert "(16 examples)" in out and out.count("rank 0 sample 1: Hello, I'm a language model,") == 2  # 5, 10
    assert sorted(plot.read_log(log_dir)["hella"]) == [0, 5, 10]  # what plot.py and the notebook draw

    # its acc_norm is hellaswag.py's (packed rows, one forward per batch) on the same model, for a few models
    module, examples = import_stage(written[1][13]), hellaswag.load_examples(tmp_path / "hellaswag_val.jsonl")
    for seed in range(3):
        torch.manual_seed(seed)
        model = module.GPT(module.GPTConfig(n_layer=2, n_head=2, n_embd=64))
        acc_norm, scored = module.evaluate_hellaswag(model, examples, torch.autocast("cpu", enabled=False), "cpu", 0, 1)
        ours = train_gpt2.GPT(train_gpt2.GPTConfig(n_layer=2, n_head=2, n_embd=64))
        ours.load_state_dict(model.state_dict())
        result = hellaswag.evaluate(hellaswag.gpt_logits_fn(ours.eval()), examples, gpt2_tokenizer(), "cpu", 4)
        assert (acc_norm, scored) == (result["acc_norm"], 16)

    # offline and without the file: one line, and the run trains without HellaSwag
    out = run_stage(written, 13, *SMALL, "--data-dir", data, "--steps", 1, "--eval-steps", 1, "--sample-interval", 0,
                    "--hellaswag-dir", tmp_path / "none", "--log-dir", log_dir)
    assert f"offline, put the file at {tmp_path / 'none' / 'hellaswag_val.jsonl'}; not scored" in out
    assert "HellaSwag acc_norm" not in out and len(losses(out)) == 1


@pytest.mark.slow
def test_stage_14_checkpoints_hold_the_evaluated_model_and_this_projects_tools_read_them(written, data, tmp_path):
    import plot
    import train_gpt2

    log_dir = tmp_path / "log"
    out = run_stage(written, 14, *EVALUATING, "--hellaswag-interval", 0, "--data-dir", data, "--log-dir", log_dir,
                    "--checkpoint-interval", 5)
    assert sorted(os.listdir(log_dir)) == ["ckpt_000005.pt", "ckpt_000010.pt", "log.txt"]
    assert f"saved {log_dir / 'ckpt_000010.pt'}" in out
    saved = torch.load(log_dir / "ckpt_000010.pt", weights_only=True)  # plain data: no class to unpickle
    assert saved["step"] == 10 and saved["val_loss"] == pytest.approx(printed(out, "val loss")[10], abs=1e-4)
    # the trainer's reader (sample.py, hellaswag.py -m and the notebook use it) takes the run's newest checkpoint
    model = train_gpt2.load_model(str(log_dir))
    for k, v in saved["model"].items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    # and the checkpoint is the model the last val loss measured: after the last update
    module = import_stage(written[1][14])
    val_loader = module.DataLoaderLite(4, 32, 0, 1, "val", data)
    val_loss = module.evaluate_val_loss(model, val_loader, torch.autocast("cpu", enabled=False), "cpu", 2, 1)
    assert val_loss == pytest.approx(printed(out, "val loss")[10], abs=1e-4)
    assert plot.run_size(str(log_dir)) == parameters(out)  # the notebook's size, from the checkpoint


@pytest.mark.slow
def test_stage_15_resumes_exactly_and_the_ranks_move_to_the_next_shard_together(written, data, tmp_path):
    import numpy as np

    run = [*EVALUATING, "--hellaswag-interval", 0, "--sample-interval", 0, "--data-dir", data, "--checkpoint-interval", 5]
    whole = run_stage(written, 15, *run, "--log-dir", tmp_path / "a")
    resumed = run_stage(written, 15, *run, "--log-dir", tmp_path / "b", "--resume", tmp_path / "a" / "ckpt_000005.pt")
    assert f"resuming from {tmp_path / 'a' / 'ckpt_000005.pt'} at step 5" in resumed
    assert losses(resumed) == losses(whole)[5:]  # steps 5 to 9, to the last printed digit
    assert printed(resumed, "val loss") == {s: v for s, v in printed(whole, "val loss").items() if s >= 5}

    # two shards of uneven length: two ranks of B sequences read what one process of 2B reads, round by round,
    # and change shards at the same batch (the video's loader, stage 12's, lets the second rank move on first)
    for n, length in ((1, 1000), (2, 777)):
        np.save(tmp_path / f"t_train_{n:06d}.npy", np.arange(length, dtype=np.uint16) + 5000 * n)
    module = import_stage(written[1][15])
    ranks = [module.DataLoaderLite(2, 8, rank, 2, "train", tmp_path) for rank in (0, 1)]
    one = module.DataLoaderLite(4, 8, 0, 1, "train", tmp_path)
    for _ in range(150):  # a few passes over both shards
        (x0, y0), (x1, y1), (x, y) = ranks[0].next_batch(), ranks[1].next_batch(), one.next_batch()
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


@pytest.mark.slow
def test_stage_16_samples_with_a_kv_cache_and_its_chunked_loss_is_the_full_one(written, data, tmp_path):
    run = [*SMALL[:-2], "--sample-tokens", 8, "--steps", 4, "--eval-interval", 2, "--eval-steps", 2,
           "--hellaswag-interval", 0, "--sample-interval", 2, "--data-dir", data, "--max-lr", "3e-3"]
    full = run_stage(written, 16, *run, "--log-dir", tmp_path / "full")
    chunked = run_stage(written, 16, *run, "--log-dir", tmp_path / "chunked", "--loss-chunk-size", 16)
    assert losses(chunked) == pytest.approx(losses(full), abs=2e-6) and len(losses(full)) == 4
    assert full.count("rank 0 sample 1: Hello, I'm a language model,") == 2  # steps 2 and 4
    root, paths = written
    module = import_stage(paths[16])
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    prompt = [[1, 2, 3]]
    cached = model.generate(prompt, 6, temperature=0)  # greedy: with the cache, the same tokens as without it
    row = torch.tensor(prompt)
    for _ in range(6):
        row = torch.cat([row, model(row)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert cached == row.tolist()


@pytest.mark.slow
def test_stage_17_trains_a_preset_shuffled_and_starts_from_its_own_run(written, data, tmp_path):
    run = ["--model", "tiny", "-T", 32, "--eval-steps", 2, "--hellaswag-interval", 0, "--sample-interval", 0,
           "--data-dir", data]
    out = run_stage(written, 17, *run, "--steps", 4, "--eval-interval", 4, "--shuffle", "--log-dir", tmp_path / "a")
    assert parameters(out) == 7_265_024 and len(losses(out)) == 4  # tiny: 4 layers of 128
    again = run_stage(written, 17, *run, "--steps", 1, "--eval-interval", 1, "--init-from", tmp_path / "a",
                      "--log-dir", tmp_path / "b")
    assert f"loaded {tmp_path / 'a'}" in again
    assert printed(again, "val loss")[0] == printed(out, "val loss")[4]  # the run's newest checkpoint, read back


TINY = ["--model", "tiny", "-T", 32, "--eval-steps", 2, "--hellaswag-interval", 0, "--sample-interval", 0,
        "--max-steps", 6, "--eval-interval", 3]


@pytest.mark.slow
def test_stage_18_resumes_the_run_in_its_directory_exactly_and_evaluates_without_writing(written, data, tmp_path):
    whole = run_stage(written, 18, *TINY, "--data-dir", data, "--out-dir", tmp_path / "whole")
    run_stage(written, 18, *TINY, "--data-dir", data, "--out-dir", tmp_path / "split", "--stop-at", 3)
    resumed = run_stage(written, 18, *TINY, "--data-dir", data, "--out-dir", tmp_path / "split", "--resume")
    assert f"resuming from {tmp_path / 'split' / 'ckpt_000003.pt'} at step 3" in resumed
    assert losses(resumed) == losses(whole)[3:]  # steps 3 to 5, to the last printed digit
    assert (tmp_path / "split" / "log.txt").read_text() == (tmp_path / "whole" / "log.txt").read_text()
    evaluated = run_stage(written, 18, *TINY, "--data-dir", data, "--out-dir", tmp_path / "whole", "--eval-only",
                          "--resume")
    assert printed(evaluated, "val loss") == {6: printed(whole, "val loss")[6]}
    assert sorted(os.listdir(tmp_path / "whole")) == [".lock", "ckpt_000006.pt", "log.txt", "run.json"]


@pytest.mark.slow
def test_stage_19_says_bad_input_in_one_line(written, data, tmp_path):
    root, paths = written
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "ckpt_000001.pt").write_bytes(b"")
    for args, error in ((["--data-dir", root / "nothing", "--out-dir", tmp_path / "fresh"], "error: data directory"),
                        (["--data-dir", data, "--out-dir", tmp_path / "used"], "already holds checkpoints")):
        r = script_in_process(paths[19], list(map(str, TINY + args)), root, OFFLINE)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and error in r.stderr, r.stderr


@pytest.mark.slow
def test_stage_20_trains_in_float16_with_a_scaler_kept_in_the_checkpoint(written, data, tmp_path):
    out = run_stage(written, 20, *TINY, "--data-dir", data, "--out-dir", tmp_path, "--dtype", "float16",
                    "--max-steps", 2, "--eval-interval", 2)
    assert "float16 autocast with a gradient scaler" in out and len(losses(out)) == 2
    saved = torch.load(tmp_path / "ckpt_000002.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0 and saved["step"] == 2


@pytest.mark.slow
def test_stage_21_shards_the_model_over_two_gloo_ranks_and_plans_memory(written, data, tmp_path):
    root, paths = written
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(paths[21]), *map(str, TINY), "--data-dir", data, "--out-dir", str(tmp_path), "--fsdp",
                        "-B", "auto", "--max-steps", "2", "--eval-interval", "2"], cwd=root, capture_output=True,
                       text=True, env={**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "-B auto: " in r.stdout and "gathered 16-bit weights" in r.stdout  # FSDP: the plan counts the gathered
    assert (tmp_path / "ckpt_000002" / "meta.pt").is_file()  # a sharded checkpoint, every rank writing its part
    plan = run_stage(written, 21, "--plan", "--model", "gpt2-xl", "--nproc", 8, "--device-memory", 80)
    assert "memory plan per device" in plan
