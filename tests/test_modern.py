"""The modern recipe (gptkit/modern.py): each switch on its own, Muon against its definition, the WSD schedule, and
the recipe through the trainer: exact resume, FSDP, export, and the lecture recipe left bit for bit as it was."""

import json
import math
import subprocess
import sys
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch

import hellaswag
import train_gpt2 as tg
from gptkit import memory, modern
from gptkit.chunked_loss import chunked_cross_entropy
from gptkit.hf import export_hf, to_hf_model
from gptkit.shards import find_shards, open_shard
from gptkit.tokenizer import gpt2_tokenizer
from helpers import ROOT, assert_same_tensors, final_state, make_examples, train, write_jsonl
from plot import read_log

SHAPE = dict(block_size=64, vocab_size=50304, n_layer=2, n_head=4, n_embd=64)
EVERY = {name: (15.0 if name == "softcap" else True) for name in modern.SWITCHES}


def modern_model(seed=0, **switches):
    torch.manual_seed(seed)
    return modern.ModernGPT(modern.ModernConfig(**SHAPE, **switches))


def batches(data, n, B=4, T=32):
    tokens = torch.from_numpy(open_shard(find_shards(data, "train")[0])[: n * B * T + 1].astype(np.int64))
    return [(tokens[i * B * T : (i + 1) * B * T].view(B, T), tokens[i * B * T + 1 : (i + 1) * B * T + 1].view(B, T))
            for i in range(n)]


def test_with_every_switch_off_it_is_the_lecture_gpt():
    ours = modern_model()
    torch.manual_seed(0)
    lecture = tg.GPT(tg.GPTConfig(**SHAPE))
    assert_same_tensors(ours.state_dict(), lecture.state_dict())
    idx = torch.randint(0, 50304, (2, 20))
    for a, b in zip(ours(idx, idx), lecture(idx, idx)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the switches are exactly what ModernConfig adds to the lecture's GPTConfig
    added = {f.name for f in fields(modern.ModernConfig)} - {f.name for f in fields(tg.GPTConfig)}
    assert set(modern.SWITCHES) == added


@pytest.mark.slow  # 12 short trainings
@pytest.mark.parametrize("switch", [*modern.SWITCHES, "muon", "wsd", "all"])
def test_each_switch_trains_on_tiny_shakespeare(data, switch):
    switches = EVERY if switch == "all" else {switch: EVERY[switch]} if switch in EVERY else {}
    model = modern_model(**switches)
    if switch in ("muon", "all"):
        optimizer = modern.MuonAdamW(model, 0.1, 3e-3, 0.02, 0.0, fused=False)
    else:
        optimizer = tg.GPT.configure_optimizers(model, 0.1, 3e-3, "cpu")
    losses = []
    for step, (x, y) in enumerate(batches(data, 12)):
        _, loss = model(x, y)
        assert math.isfinite(loss.item())
        optimizer.zero_grad()
        loss.backward()
        lr = modern.wsd_lr(step, 2, 12, 3e-3, 3e-4, 0.4) if switch in ("wsd", "all") else 3e-3
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < losses[0] - 1.0, losses


def test_the_switches_change_the_parameters_they_name():
    base, every = modern_model().state_dict(), modern_model(**EVERY).state_dict()
    assert "transformer.wpe.weight" in base and "transformer.wpe.weight" not in every  # rotary: no table
    assert not any(k.endswith(("ln_1.weight", "ln_f.bias")) for k in every)  # RMSNorm: nothing to learn
    assert every["lm_head.weight"].abs().sum() == 0 and every["transformer.wte.weight"].abs().sum() > 0  # untied
    assert all(every[k].abs().sum() == 0 for k in every if k.endswith("c_proj.weight"))  # zero-init
    model = modern_model(untied_head=True)
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.num_params() == tg.GPT(tg.GPTConfig(**SHAPE)).num_params() + 50304 * 64
    for switches in ({}, EVERY, {"rotary": True}, {"rmsnorm": True}, {"untied_head": True}):  # the memory plan's count
        assert memory.parameter_count(modern.ModernConfig(**SHAPE, **switches)) == modern_model(**switches).num_params()


def test_rotary_attention_depends_on_distance_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cos, sin = modern.rotary_tables(torch.tensor([i, j]), 16)
        return (modern.rotate(q, cos[:1], sin[:1]) * modern.rotate(k, cos[1:], sin[1:])).sum().item()
    assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def perturbed(model):
    """An untrained zero-init model predicts the uniform distribution whatever its input: give it some weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_sampling_packed_rows_and_hellaswag_work_with_every_switch():
    model = perturbed(modern_model(**EVERY)).eval()
    prompts = [[5, 17, 42, 7, 99], [1, 2]]  # the KV cache against recomputing the whole prefix every token
    for prompt, out in zip(prompts, model.generate(prompts, 12, temperature=0)):
        x = torch.tensor([prompt])
        for _ in range(12):
            x = torch.cat([x, model(x)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
        assert out == x[0].tolist()
    examples = make_examples(5)
    sums, _ = hellaswag.score(hellaswag.gpt_logits_fn(model), examples, gpt2_tokenizer(), 3, "cpu")
    enc = gpt2_tokenizer()
    for i, ex in enumerate(examples):  # packed rows with restarted positions = each ending on its own
        ctx = enc.encode(ex["ctx"])
        for j, ending in enumerate(ex["endings"]):
            tokens = torch.tensor([ctx + enc.encode(" " + ending)])
            with torch.no_grad():
                logits = model(tokens)[0][0, len(ctx) - 1 : -1]
            ref = torch.nn.functional.cross_entropy(logits, tokens[0, len(ctx):], reduction="sum")
            assert sums[i, j].item() == pytest.approx(ref.item(), abs=1e-3)


def test_soft_cap_is_cap_tanh_with_its_gradient_and_leaves_the_logits_alone():
    z = (torch.randn(2, 35, 3, dtype=torch.float64) * 30).requires_grad_()  # 70 rows: blocks of 32, 32 and 6
    before = z.detach().clone()
    assert torch.autograd.gradcheck(lambda z: modern.SoftCap.apply(z, 15.0), (z,))
    torch.testing.assert_close(modern.SoftCap.apply(z, 15.0), 15 * torch.tanh(before / 15))
    assert torch.equal(z.detach(), before)  # float logits are copied, not capped in place
    zb = (torch.randn(2, 40, 9) * 30).bfloat16().requires_grad_()  # the head's logits under autocast
    before = zb.detach().clone()
    y = modern.SoftCap.apply(zb, 15.0)
    y.sum().backward()
    assert y.dtype == torch.float32 and zb.grad.dtype == torch.bfloat16 and torch.equal(zb.detach(), before)
    torch.testing.assert_close(y, 15 * torch.tanh(zb.float() / 15), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [70, 50])  # the model's one chunk (blocks of 32, 32, 6), and two chunks
def test_the_soft_capped_loss_is_cross_entropy_of_the_capped_logits_with_its_gradients(dtype, chunk_size):
    torch.manual_seed(0)
    x, weight = torch.randn(1, 70, 8, dtype=dtype).requires_grad_(), (torch.randn(50, 8, dtype=dtype) * 5).requires_grad_()
    targets = torch.randint(0, 50, (1, 70))
    loss = chunked_cross_entropy(x, weight, targets, chunk_size, 15.0)
    gx, gw = torch.autograd.grad(loss * 3, [x, weight])  # an upstream gradient other than 1
    xr, wr = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(15 * torch.tanh(xr[0] @ wr.t() / 15), targets[0])
    gx_ref, gw_ref = torch.autograd.grad(ref * 3, [xr, wr])
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-2, rtol=2e-2)
    assert gx.dtype == gw.dtype == dtype
    torch.testing.assert_close(loss.double(), ref.detach(), **tol)
    torch.testing.assert_close(gx.double(), gx_ref, **tol)
    torch.testing.assert_close(gw.double(), gw_ref, **tol)
    with torch.no_grad():  # evaluations: the same loss, no gradient made
        torch.testing.assert_close(chunked_cross_entropy(x, weight, targets, chunk_size, 15.0), loss)


def test_chunked_loss_through_the_soft_cap_matches_the_full_logits():
    model = modern_model(softcap=5.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # logits large enough for the cap to bend them
    idx, targets = torch.randint(0, 50304, (2, 2, 30)).unbind(0)
    x = model.hidden_states(idx)
    full = torch.nn.functional.cross_entropy(model.lm_head(x).flatten(0, 1), targets.flatten())
    gx_ref, gw_ref = torch.autograd.grad(full, [x, model.lm_head.weight], retain_graph=True)
    _, fused = model(idx, targets)  # the model's own loss, the cap inside it
    torch.testing.assert_close(fused, full)
    loss = chunked_cross_entropy(x, model.lm_head.weight, targets, 7, 5.0)
    gx, gw = torch.autograd.grad(loss, [x, model.lm_head.weight])
    torch.testing.assert_close(loss, full)
    torch.testing.assert_close(gx, gx_ref, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(gw, gw_ref, atol=1e-6, rtol=1e-4)


def test_muon_update_is_the_orthogonalised_momentum():
    """torch.optim.Muon's step against its definition computed with an SVD: the update of a 32 x 12 matrix is
    -lr * sqrt(32 / 12) * U V^T of the Nesterov momentum (whose SVD is U S V^T), up to Newton-Schulz's inexact
    singular values (quintic iterations land them between about 0.7 and 1.2)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(32, 12))
    optimizer = torch.optim.Muon([w], lr=0.1, momentum=0.9, weight_decay=0.0)
    grads, buf = [torch.randn(32, 12) for _ in range(3)], torch.zeros(32, 12)
    for g in grads:
        before = w.detach().clone()
        w.grad = g
        optimizer.step()
        buf = 0.9 * buf + 0.1 * g  # momentum as torch.optim.Muon keeps it: an average of the gradients
        nesterov = 0.1 * g + 0.9 * buf
        U, S, Vh = torch.linalg.svd(nesterov, full_matrices=False)
        update = (before - w.detach()) / (0.1 * math.sqrt(32 / 12))
        singular = torch.diagonal(U.T @ update @ Vh.T)  # update's components along the momentum's directions
        assert singular.min() > 0.6 and singular.max() < 1.25, singular
        off = U.T @ update @ Vh.T - torch.diag(singular)
        assert off.abs().max() < 0.05  # no mixing between directions: the same singular vectors
        torch.testing.assert_close(update, U @ torch.diag(singular) @ Vh, atol=0.05, rtol=0)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = modern_model(**EVERY)
    optimizer = modern.MuonAdamW(model, 0.1, 1e-3, 0.02, 0.0, fused=False, adamw_lr_scale=3.0)
    name = {id(p): n for n, p in model.named_parameters()}
    muon = {name[id(p)] for g in optimizer.muon.param_groups for p in g["params"]}
    adamw = {name[id(p)] for g in optimizer.adamw.param_groups for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2}
    assert adamw == set(name.values()) - muon and "lm_head.weight" in adamw and "transformer.wte.weight" in adamw
    assert [g["lr_scale"] for g in optimizer.param_groups] == [20.0, 3.0, 3.0]  # Muon at 0.02, AdamW at 3e-3
    assert [g["weight_decay"] for g in optimizer.adamw.param_groups] == [0.1, 0.0]


def test_memory_plan_counts_the_optimizer_state_muon_keeps():
    for switches in ({}, EVERY):
        model = modern_model(**switches)
        optimizer = modern.MuonAdamW(model, 0.1, 1e-3, 0.02, 0.0, fused=False)
        x = torch.randint(0, 50257, (2, 16))
        model(x, x)[1].backward()
        optimizer.step()
        kept = sum(t.numel() * t.element_size() for o in optimizer for state in o.state.values()
                   for t in state.values() if torch.is_tensor(t) and t.dim() > 0)  # not the scalar step counts
        assert kept == memory.plan(modern.ModernConfig(**SHAPE, **switches), 2, 16, muon=True)["Muon + AdamW state"]


def test_wsd_schedule_warms_up_holds_then_decays_linearly():
    def lr(step):
        return modern.wsd_lr(step, warmup_steps=10, max_steps=110, max_lr=1.0, min_lr=0.1, cooldown_frac=0.5)
    assert [lr(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr(10) == lr(30) == lr(55) == 1.0  # stable until the last 55 steps
    assert lr(55 + 55 // 2) == pytest.approx(1.0 - 0.9 * (27 / 55))
    assert lr(110) == lr(5000) == 0.1
    decay = [lr(s) for s in range(55, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_recipe_flags_resolve_to_switches_and_each_can_be_turned_off():
    args = tg.parse_args(["--recipe", "modern", "--no-rotary", "--softcap", "0", "--schedule", "cosine"])
    assert modern.switches(args) == {k: v for k, v in EVERY.items() if k not in ("rotary", "softcap")}
    assert args.muon and args.adamw_lr_scale == 3.0 and args.schedule == "cosine"
    lecture = tg.parse_args([])
    assert modern.switches(lecture) == {} and not lecture.muon and lecture.schedule == "cosine"
    assert modern.switches(tg.parse_args(["--qk-norm"])) == {"qk_norm": True}


def test_export_maps_an_untied_head_and_names_what_does_not_map(tmp_path):
    model = modern_model(untied_head=True, zero_init=False).eval()
    export_hf(model, tmp_path / "hf")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0][..., :50257], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="rotary position embeddings, QK-norm.*--eval-only"):
        to_hf_model(modern_model(**EVERY).state_dict(), modern.ModernConfig(**SHAPE, **EVERY))


# --- through the trainer -----------------------------------------------------------------------------------------

REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "lecture_reference.json").read_text())


def weights_fingerprint(state):
    """Two numbers per tensor, in float64: its norm and its dot product with a fixed random tensor. Float rounding,
    which differs between CPU kinds (AVX2, AVX-512, AMX), moves a norm by about 1e-6 of itself, while a change to the
    recipe (init, schedule, decay 0.1 -> 0.2, clipping) moves some norm by 4e-4 or more. The dot product is the
    touchier one: AdamW's first steps move an element by about the LR whatever the size of its gradient, so a
    gradient near zero whose sign rounds the other way on another CPU moves it by up to 5e-4 of the tensor's norm
    (a bias of an AMD EPYC's run against the fixture's); it still catches a wrong init or schedule (1e-1)."""
    out = {}
    for i, k in enumerate(sorted(state)):
        w = state[k].double()
        r = torch.randn(w.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        out[k] = [w.norm().item(), (w * r).sum().item()]
    return out


@pytest.mark.slow
def test_the_lecture_recipe_is_what_it_was(data, tmp_path):
    """tests/fixtures/lecture_reference.json was written by main before the modern recipe (commit ec8ed4c):
    `train_gpt2.py` with helpers.SMALL (less its --dtype, fp32 then), --max-steps 6 --eval-interval 3, on Tiny
    Shakespeare's shards, its weights through weights_fingerprint. The same commit on the same kind of CPU gives
    the same bits; across CPU kinds the losses differ in their sixth decimal, so the test allows float rounding."""
    train(data, tmp_path, "--max-steps", 6, "--eval-interval", 3)
    log = [line.split() for line in (tmp_path / "log.txt").read_text().splitlines()]
    ref = [line.split() for line in REFERENCE["log"]]
    assert [l[:2] for l in log] == [l[:2] for l in ref]
    for line, want in zip(log, ref):
        assert abs(float(line[2]) - float(want[2])) <= 1e-5, (line, want)
    got, want = weights_fingerprint(final_state(tmp_path)["model"]), REFERENCE["weights_fingerprint"]
    assert got.keys() == want.keys()
    for k in got:
        (norm, dot), (want_norm, want_dot) = got[k], want[k]
        assert abs(norm - want_norm) <= 1e-5 * want_norm, (k, norm, want_norm)
        assert abs(dot - want_dot) <= 2e-3 * want_norm, (k, dot, want_dot)


@pytest.mark.slow
def test_the_modern_recipe_resumes_exactly(data, tmp_path):
    run = ("--recipe", "modern", "--max-steps", 8, "--eval-interval", 4)
    train(data, tmp_path / "straight", *run)
    train(data, tmp_path / "split", *run, "--stop-at", 4)
    r = train(data, tmp_path / "split", "--resume")  # the recipe comes back from the checkpoint
    assert "resuming from" in r.stdout
    assert read_log(tmp_path / "split") == read_log(tmp_path / "straight")
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "split")
    assert a["config"] == b["config"] and a["config"]["rotary"] and a["args"]["muon"]
    assert_same_tensors(a["model"], b["model"])
    for p in a["optimizer"]["state"]:  # Muon's momentum and AdamW's moments
        assert_same_tensors(a["optimizer"]["state"][p], b["optimizer"]["state"][p])
    losses = read_log(tmp_path / "straight")["train"]
    assert losses[0] == pytest.approx(math.log(50304), abs=1e-3)  # the zero-initialised head: uniform predictions
    model = tg.load_model(str(tmp_path / "straight"))
    assert isinstance(model, modern.ModernGPT) and model.config == modern.ModernConfig(**a["config"])


SHARDED_MUON = """
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor
from torch.optim._muon import _zeropower_via_newtonschulz, DEFAULT_A, DEFAULT_B, DEFAULT_C
dist.init_process_group("gloo")
torch.manual_seed(0)
layer = torch.nn.Linear(16, 24, bias=False)
before, grad = layer.weight.detach().clone(), torch.randn(24, 16)
fully_shard(layer)  # rank 0 holds rows 0-11, rank 1 rows 12-23
optimizer = torch.optim.Muon(layer.parameters(), lr=0.1, weight_decay=0, momentum=0.0, nesterov=False)
layer.weight.grad = distribute_tensor(grad, layer.weight.device_mesh, layer.weight.placements)
optimizer.step()
update = (before - layer.weight.full_tensor()) / (0.1 * (24 / 16) ** 0.5)
orthogonalise = lambda g: _zeropower_via_newtonschulz(g, (DEFAULT_A, DEFAULT_B, DEFAULT_C), 5, 1e-7).float()
whole = (update - orthogonalise(grad)).abs().max().item()
per_shard = (update - torch.cat([orthogonalise(grad[:12]), orthogonalise(grad[12:])])).abs().max().item()
if dist.get_rank() == 0:
    print(f"{whole} {per_shard}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_muon_on_fsdp_shards_orthogonalises_each_whole_matrix(tmp_path):
    """torch.optim.Muon on FSDP2's sharded (DTensor) parameters: DTensor gathers what each Newton-Schulz matmul
    needs, so a matrix split over two ranks is orthogonalised whole, not shard by shard (within bf16 rounding)."""
    (tmp_path / "sharded_muon.py").write_text(SHARDED_MUON)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(tmp_path / "sharded_muon.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    whole, per_shard = map(float, r.stdout.split()[-2:])
    assert whole < 0.05 and per_shard > 0.2  # the update's entries are about 0.3


@pytest.mark.slow
def test_the_modern_recipe_under_ddp_and_fsdp_trains_as_one_process_does(data, tmp_path):
    run = ("--recipe", "modern", "--max-steps", 4, "--eval-interval", 4, "--total-batch-size", 128)
    train(data, tmp_path / "one", *run)
    train(data, tmp_path / "ddp", *run, "-B", 1, nproc=2)
    train(data, tmp_path / "fsdp", *run, "-B", 1, "--fsdp", nproc=2)
    ddp = final_state(tmp_path / "ddp")
    assert ddp["args"]["muon"] and ddp["config"]["rotary"]
    # Losses, not weights: Newton-Schulz runs in bf16 and lifts every singular value of the update towards 1, the
    # noise-sized ones of a nearly low-rank gradient too, so summing in another order moves weights by up to 15%
    # of their (small, zero-initialised) norm in 4 steps, while the losses agree to about 1e-4 (a summing order of
    # the loss's own, as the soft-capped loss has, moved the fourth one by that much)
    one = read_log(tmp_path / "one")
    assert one["train"][3] < one["train"][0] - 0.2
    for other in ("ddp", "fsdp"):
        for kind in ("train", "val"):
            assert read_log(tmp_path / other)[kind] == pytest.approx(one[kind], abs=3e-4), other


@pytest.mark.slow
def test_modern_checkpoints_in_the_tools(data, tmp_path):
    train(data, tmp_path / "run", "--recipe", "modern", "--max-steps", 2, "--eval-interval", 0)
    small = ("-B", 2, "-T", 32, "--total-batch-size", 64, "--eval-steps", 2, "--hellaswag-interval", 0)
    r = train(data, tmp_path / "eval", "--init-from", tmp_path / "run", "--eval-only", "--eval-interval", 1,
              "--sample-interval", 1, "--num-samples", 1, "--sample-tokens", 4, *small, small=False)
    assert "val loss" in r.stdout and "sample 0" in r.stdout
    r = subprocess.run([sys.executable, "-m", "gptkit.hf", str(tmp_path / "run"), str(tmp_path / "hf")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "cannot be exported as GPT-2" in r.stderr and "Traceback" not in r.stderr
    more = ("--max-steps", 1, "--eval-interval", 0, "--sample-interval", 0, *small)
    train(data, tmp_path / "more", "--init-from", tmp_path / "run", *more, small=False)  # its architecture comes along
    r = train(data, tmp_path / "other", "--init-from", "tiny", "--rotary", *more, small=False, check=False)
    assert r.returncode == 1 and "brings its own architecture" in r.stderr
    model = tg.load_model(str(tmp_path / "run")).eval()
    assert asdict(model.config)["softcap"] == 15.0
    # hellaswag.py scores it with gptkit.modern's model (transformers has none): as the trainer's own evaluation does
    examples = make_examples(6, seed=2)
    write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    r = subprocess.run([sys.executable, str(ROOT / "hellaswag.py"), "-m", str(tmp_path / "run"), "--cache-dir",
                        str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, gpt2_tokenizer(), "cpu")
    assert f"acc_norm {expected['acc_norm']:.4f} ({expected['correct_norm']}/6)" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("loss_chunk_size", [16, 0])  # the soft cap inside the chunked loss, and the full one
def test_every_switch_compiles_to_the_eager_numbers(loss_chunk_size):
    model = perturbed(modern_model(**EVERY))
    model.loss_chunk_size = loss_chunk_size
    idx, targets = torch.randint(0, 50304, (2, 2, 24)).unbind(0)
    eager = model(idx, targets)[1]
    compiled = torch.compile(model)(idx, targets)[1]
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
