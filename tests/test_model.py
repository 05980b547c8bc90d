"""The model half of train_gpt2.py: GPT-2 exactly (parity with transformers), sampling, presets."""

import copy
import math
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import train_gpt2 as tg
from gptkit import cpu, distributed, memory, modern, sampling
from gptkit.flops import flops_per_token, peak_flops
from gptkit.hf import export_hf
from gptkit.signals import StopRequest
from gptkit.tokenizer import GPT2_VOCAB_SIZE
from helpers import ROOT


def random_hf_model(tmp_path, n_layer, n_head, n_embd, vocab_size, n_positions, seed=0):
    """A randomly initialised transformers GPT-2, every parameter perturbed (biases and LayerNorms too, which
    GPT-2's init leaves at 0/1) so that a mis-mapped or un-transposed weight cannot go unnoticed."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                     n_positions=n_positions, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)
    return hf


SHAPES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    "other": dict(n_layer=3, n_head=6, n_embd=96, vocab_size=500, n_positions=64),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_transformers_and_export_round_trip(tmp_path, shape):
    hf = random_hf_model(tmp_path / "hf", **SHAPES[shape])
    ours = tg.GPT.from_pretrained(str(tmp_path / "hf")).eval()
    idx = torch.randint(0, SHAPES[shape]["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx, labels=idx)  # transformers shifts the labels itself
        logits, loss = ours(idx[:, :-1], targets=idx[:, 1:])
        torch.testing.assert_close(logits, ref.logits[:, :-1], atol=1e-4, rtol=0)
        torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=0)

        export_hf(ours, tmp_path / "export")
        back = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
        torch.testing.assert_close(back(idx).logits, ref.logits, atol=1e-4, rtol=0)


def test_export_drops_padded_vocab_rows(tmp_path):
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(block_size=32, vocab_size=tg.PADDED_VOCAB_SIZE, n_layer=1, n_head=2, n_embd=32)).eval()
    export_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.vocab_size == GPT2_VOCAB_SIZE
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (1, 16))
    with torch.no_grad():
        ours, _ = model(idx)
        torch.testing.assert_close(hf(idx).logits, ours[..., :GPT2_VOCAB_SIZE], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small")
    hf = random_hf_model(path, n_layer=2, n_head=4, n_embd=64, vocab_size=300, n_positions=64, seed=3)
    return hf, tg.GPT.from_pretrained(str(path)).eval()


def recompute_greedy(model, prompt, n):
    """The lecture's loop: run the whole prefix again for every new token."""
    x = torch.tensor([prompt])
    for _ in range(n):
        logits, _ = model(x)
        x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[0].tolist()


def test_greedy_kv_cache_equals_recompute_and_transformers(small):
    hf, ours = small
    prompts = [[5, 17, 42, 7, 99], [1, 2], [250, 3, 3, 9, 12, 60, 61, 8]]  # ragged batch
    out = ours.generate(prompts, max_new_tokens=20, temperature=0)
    for p, o in zip(prompts, out):
        assert len(o) == len(p) + 20
        assert o == recompute_greedy(ours, p, 20)
        ref = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                          do_sample=False, max_new_tokens=20, min_new_tokens=20, pad_token_id=0)
        assert o == ref[0].tolist()


def test_seeded_sampling_is_reproducible_and_seed_dependent(small):
    _, ours = small
    def draw(seed, **kw):
        return ours.generate([[1, 2, 3]] * 2, 30, generator=torch.Generator().manual_seed(seed), **kw)
    assert draw(0) == draw(0)
    assert draw(0) != draw(1)
    assert draw(0)[0] != draw(0)[1]  # rows of one batch are different samples
    assert draw(5, top_k=40, top_p=0.9) == draw(5, top_k=40, top_p=0.9)
    greedy = ours.generate([[1, 2, 3]], 30, temperature=0)
    assert draw(2, top_k=1)[0] == greedy[0]
    assert draw(2, top_p=1e-6)[0] == greedy[0]


@pytest.mark.parametrize("kwargs, expected", [
    ({}, [0.5, 0.25, 0.15, 0.06, 0.04, 0.0]),
    ({"temperature": 0.5}, [0.25 / 0.335, 0.0625 / 0.335, 0.0225 / 0.335, 0.0036 / 0.335, 0.0016 / 0.335, 0.0]),
    ({"top_k": 3}, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0, 0.0, 0.0]),
    ({"top_p": 0.6}, [2 / 3, 1 / 3, 0.0, 0.0, 0.0, 0.0]),  # 0.5 alone is short of 0.6; 0.5 + 0.25 reaches it
    ({"top_k": 4, "top_p": 0.8}, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0, 0.0, 0.0]),
    ({"top_k": 3, "temperature": 0.5}, [0.25 / 0.335, 0.0625 / 0.335, 0.0225 / 0.335, 0.0, 0.0, 0.0]),
    ({"top_p": 0.7, "temperature": 0.5}, [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),  # the nucleus of the sharpened distribution
])
def test_sampler_draws_from_the_kept_distribution(kwargs, expected):
    """20,000 rows of the same logits in one call: each token's share of the draws is its probability after
    temperature, top-k and top-p (to within 5 standard errors), and a token whose probability is 0 never comes."""
    probs = torch.tensor([0.5, 0.25, 0.15, 0.06, 0.04, 0.0])
    order = torch.tensor([3, 0, 5, 1, 4, 2])  # vocabulary ids of those probabilities: not already sorted
    logits = torch.full((6,), float("-inf")).index_put((order,), probs.log()).expand(20_000, 6)
    drawn = sampling.sample_next_token(logits, generator=torch.Generator().manual_seed(0), **kwargs)
    share = torch.bincount(drawn, minlength=6).double()[order] / len(drawn)
    expected = torch.tensor(expected, dtype=torch.double)
    assert share[expected == 0].sum() == 0
    torch.testing.assert_close(share, expected, atol=5 * 0.5 / len(drawn) ** 0.5, rtol=0)


def test_the_padding_rows_of_the_vocabulary_are_never_sampled():
    """The rows that pad GPT-2's 50,257 tokens to 50,304 are no token: even where they hold the largest logits (here
    the real tokens' rows are 0, so about half of the padding rows' logits beat them all), nothing draws them."""
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.lm_head.weight[:GPT2_VOCAB_SIZE] = 0  # tied: the embeddings too
    for how in ({"temperature": 0}, {"top_k": 50}, {"top_p": 0.9}, {}):
        out = model.generate([[1, 2, 3]] * 2, 8, generator=torch.Generator().manual_seed(0), **how)
        assert max(max(row) for row in out) < GPT2_VOCAB_SIZE, how


def test_stop_token_and_streaming_callback(small):
    _, ours = small
    greedy = ours.generate([[1, 2, 3]], 20, temperature=0)[0]
    stop = greedy[3 + 5]  # the 6th generated token
    first = greedy.index(stop, 3)
    streamed = []
    out = ours.generate([[1, 2, 3]], 20, temperature=0, stop_token=stop, on_token=streamed.append)
    assert out[0] == greedy[:first]
    assert [s[0] for s in streamed] == greedy[3 : first + 1]


def test_prompts_as_a_tensor_as_hugging_face_users_pass_them(small):
    _, ours = small
    prompts = [[5, 17, 42], [1, 2, 3]]
    assert ours.generate(torch.tensor(prompts), 6, temperature=0) == ours.generate(prompts, 6, temperature=0)


def test_generation_stops_at_block_size(small):
    _, ours = small
    out = ours.generate([list(range(60))], 50, temperature=0)
    assert len(out[0]) == 64


def test_kv_cache_fed_in_pieces_gives_the_full_forward(small):
    """A cache filled 3 tokens, then 4 (a second causal block after cached ones), then 1 at a time."""
    _, ours = small
    idx = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    cache = sampling.KVCache(ours.config, 2, 10, "cpu", torch.float32)
    with torch.no_grad():
        pieces = [ours.hidden_states(idx[:, a:b], cache=cache) for a, b in ((0, 3), (3, 7), (7, 8), (8, 10))]
        torch.testing.assert_close(torch.cat(pieces, dim=1), ours.hidden_states(idx), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="KV cache holds 10 positions; cannot add 1 after 10"):
        cache.positions(1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_sampling_on_packed_weights_gives_the_plain_models_tokens(small, dtype):
    if not cpu.can_pack(torch.zeros(1, dtype=dtype)):
        pytest.skip(f"oneDNN does not take {dtype} weights here")
    _, ours = small
    model = copy.deepcopy(ours).to(dtype)
    x = torch.randn(3, 1, 64, dtype=dtype)
    linear = model.transformer.h[0].mlp.c_fc
    with torch.no_grad():
        if dtype == torch.bfloat16:  # bit for bit
            assert torch.equal(cpu.PackedLinear(linear, 3)(x), linear(x))
        else:  # oneDNN's own order of additions
            torch.testing.assert_close(cpu.PackedLinear(linear, 3)(x), linear(x), atol=1e-5, rtol=1e-5)
        gelu = cpu.PackedLinear(linear, 3, gelu=True)(x)  # the GELU on the fp32 sums: within bf16 rounding
        torch.testing.assert_close(gelu, F.gelu(linear(x), approximate="tanh"), **({} if dtype == torch.bfloat16
                                                                                      else dict(atol=1e-5, rtol=1e-5)))
        with cpu.packed_linears(model, 3):
            assert type(model.transformer.h[1].attn.c_attn) is cpu.PackedLinear
            assert type(model.lm_head) is cpu.PackedLinear
            mlp = model.transformer.h[1].mlp
            assert mlp.c_fc.gelu and type(mlp.gelu) is torch.nn.Identity and not mlp.c_proj.gelu
            packed, = model.generate([[1, 2, 3]], 12, temperature=0)
        assert type(model.lm_head) is torch.nn.Linear and model.transformer.wte.weight is model.lm_head.weight
        assert type(mlp.c_fc) is torch.nn.Linear and cpu.is_tanh_gelu(mlp.gelu)
        plain = [1, 2, 3]
        for _ in range(12):  # the plain modules, no cache: the lecture's loop
            logits, _ = model(torch.tensor([plain]))
            plain.append(logits[0, -1].argmax().item())
    assert packed == plain
    with pytest.raises(RuntimeError), cpu.packed_linears(model, 1):
        raise RuntimeError
    assert type(model.lm_head) is torch.nn.Linear  # put back after an error too


def test_weights_are_not_packed_under_autocast_or_when_memory_is_short(small, monkeypatch):
    _, model = small
    weight = model.lm_head.weight
    with torch.autocast("cpu", dtype=torch.bfloat16):  # sampling during training: the plain modules, in bf16
        assert not cpu.can_pack(weight)
    if not cpu.can_pack(weight):
        pytest.skip("oneDNN does not take fp32 weights here")
    monkeypatch.setattr(cpu, "available_memory", lambda: 2 * weight.numel() * weight.element_size())
    with cpu.packed_linears(model, 2):  # the copy (the head and more) would take over half of it
        assert type(model.lm_head) is torch.nn.Linear
    monkeypatch.setattr(cpu, "available_memory", lambda: None)  # where the system does not say
    with cpu.packed_linears(model, 2):
        assert type(model.lm_head) is cpu.PackedLinear


def test_parameter_counts_on_meta_device():
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200}
    for name, count in expected.items():
        config, _, _ = tg.preset(name, vocab_size=GPT2_VOCAB_SIZE)
        with torch.device("meta"):
            model = tg.GPT(config)
        assert model.num_params() == count == memory.parameter_count(config)  # the memory plan's formula too
        assert model.lm_head.weight is model.transformer.wte.weight


def test_presets_carry_paper_settings():
    config, batch, lr = tg.preset("gpt3-1.3b")
    assert (config.n_layer, config.n_embd, config.n_head, config.block_size) == (24, 2048, 32, 2048)
    assert (batch, lr) == (2**20, 2e-4)
    assert config.vocab_size == 50304


def test_gpt2_init():
    torch.manual_seed(0)
    model = tg.GPT(tg.preset("gpt2")[0])
    assert model.transformer.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.01)
    assert model.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 24**0.5, rel=0.01)
    assert model.transformer.h[0].attn.c_proj.bias.abs().max().item() == 0


def test_flops_per_token_and_peaks():
    config = tg.GPTConfig(block_size=128, vocab_size=1000, n_layer=2, n_head=4, n_embd=64)
    model = tg.GPT(config)
    n = model.num_params() - model.transformer.wpe.weight.numel()
    assert flops_per_token(config) == 6 * n + 12 * 2 * 64 * 128
    assert flops_per_token(config, T=64) == 6 * n + 12 * 2 * 64 * 64
    # the modern recipe: no wpe, and an untied head's token embedding is a lookup, not a matmul
    untied = modern.ModernGPT(modern.ModernConfig(**asdict(config), rotary=True, untied_head=True))
    n = untied.num_params() - untied.transformer.wte.weight.numel()
    assert flops_per_token(untied.config, T=64) == 6 * n + 12 * 2 * 64 * 64
    assert peak_flops("NVIDIA H100 80GB HBM3") == peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops("cpu") is None


def test_clear_errors(small, tmp_path):
    with pytest.raises(ValueError, match="unknown model preset 'gpt5'; known presets: tiny, mini, gpt2"):
        tg.preset("gpt5")
    _, ours = small
    with pytest.raises(ValueError, match="longer than the model's block_size 64"):
        ours.generate([list(range(65))], 5)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="is not a GPT-2 checkpoint directory"):
        tg.GPT.from_pretrained(str(tmp_path))


def test_load_model_takes_every_model_identity(small, tmp_path):
    _, ours = small
    export_hf(ours, tmp_path / "hf")
    (tmp_path / "run").mkdir()
    torch.save({"model": ours.state_dict(), "config": asdict(ours.config)}, tmp_path / "run" / "ckpt_000007.pt")
    idx = torch.randint(0, 300, (1, 10))
    for identity in (tmp_path / "hf", tmp_path / "run", tmp_path / "run" / "ckpt_000007.pt"):
        model = tg.load_model(str(identity)).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(idx)[0], ours(idx)[0], atol=1e-5, rtol=0)
    assert tg.load_model("tiny").config == tg.preset("tiny")[0]  # a preset: fresh weights
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds neither checkpoints"):
        tg.load_model(str(tmp_path / "empty"))


def test_generation_under_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(block_size=64, vocab_size=300, n_layer=2, n_head=4, n_embd=64)).eval()
    prompts = [[1, 2, 3], [4, 5]]
    eager = model.generate(prompts, 12, temperature=0)
    model.hidden_states = torch.compile(model.hidden_states)  # the prefill and the one-token decode step compile once
    assert model.generate(prompts, 12, temperature=0) == eager
    assert model.generate(prompts, 12, generator=torch.Generator().manual_seed(3)) == \
        model.generate(prompts, 12, generator=torch.Generator().manual_seed(3))


def loss_and_grads(model, forward, idx, targets, chunk=0):
    model.zero_grad(set_to_none=True)
    model.loss_chunk_size = chunk
    _, loss = forward(idx, targets)
    (loss * 0.25).backward()  # a scale, as gradient accumulation applies, must reach the gradients
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_chunked_cross_entropy_matches_the_full_logits(compiled):
    torch.manual_seed(0)
    model = tg.GPT(tg.GPTConfig(block_size=64, vocab_size=300, n_layer=2, n_head=4, n_embd=64))
    idx, targets = torch.randint(0, 300, (2, 2, 40)).unbind(0)
    ref_loss, ref_grads = loss_and_grads(model, model, idx, targets)
    forward = torch.compile(model) if compiled else model
    loss, grads = loss_and_grads(model, forward, idx, targets, chunk=23)  # 80 positions: a ragged last chunk
    assert loss == pytest.approx(ref_loss, abs=1e-5)
    for name, g in ref_grads.items():  # the tied embedding gets both its uses
        assert (grads[name] - g).abs().max().item() <= 1e-6 + 1e-4 * g.abs().max().item(), name
    with torch.no_grad():
        logits, no_grad_loss = forward(idx, targets)
        assert logits is None and no_grad_loss.item() == pytest.approx(ref_loss, abs=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_bf16, bf16_grads = loss_and_grads(model, model, idx, targets)
        loss_bf16, chunked_bf16 = loss_and_grads(model, forward, idx, targets, chunk=23)
    assert loss_bf16 == pytest.approx(ref_bf16, abs=1e-2)
    for name, g in bf16_grads.items():
        assert (chunked_bf16[name] - g).abs().max().item() <= 0.02 * g.abs().max().item(), name


def test_lr_schedule_warms_up_decays_on_a_cosine_and_stays_at_the_floor():
    def lr(step):
        return tg.get_lr(step, warmup_steps=10, max_steps=110, max_lr=1.0, min_lr=0.1)
    assert [lr(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear: (step + 1) / warmup
    assert lr(10) == pytest.approx(1.0)
    assert lr(35) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))  # a quarter of the way down
    assert lr(60) == pytest.approx(0.55)  # halfway: the middle of max and min
    assert lr(110) == lr(111) == lr(10_000) == 0.1
    decay = [lr(s) for s in range(10, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_weight_decay_on_matrices_only_and_the_tied_matrix_once():
    model = tg.GPT(tg.preset("tiny")[0])
    decay, no_decay = model.configure_optimizers(0.1, 1e-3, "cpu").param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    name = {id(p): n for n, p in model.named_parameters()}
    matrices = [n for n, p in model.named_parameters() if p.dim() == 2]
    assert sorted(name[id(p)] for p in decay["params"]) == sorted(matrices)
    assert "transformer.wte.weight" in matrices and "lm_head.weight" not in name.values()  # one tensor, two names
    assert {name[id(p)].rsplit(".", 1)[-1] for p in no_decay["params"]} == {"bias", "weight"}  # LayerNorm gains
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == model.num_params()


def test_stop_request_acknowledges_then_aborts_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    said = []
    with StopRequest(announce=said.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and "stopping after this step" in said[0]
        with pytest.raises(KeyboardInterrupt, match="without a checkpoint"):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_manual_attention_equals_flash_attention_in_training_sampling_and_packed_rows(small):
    _, flash = small
    manual = tg.GPT(replace(flash.config, attention="manual")).eval()
    manual.load_state_dict(flash.state_dict())
    idx = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for a, b in zip(manual(idx[:, :-1], idx[:, 1:]), flash(idx[:, :-1], idx[:, 1:])):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # packed rows: positions restart and a block mask hides one segment from the other
        pos = torch.cat([torch.arange(20), torch.arange(10, 30)])[None].expand(3, -1)
        seg = (torch.arange(40) >= 20)[None]
        mask = ((seg[:, :, None] == seg[:, None, :]) & torch.ones(40, 40, dtype=torch.bool).tril())[:, None]
        torch.testing.assert_close(manual.hidden_states(idx, pos=pos, mask=mask),
                                   flash.hidden_states(idx, pos=pos, mask=mask), atol=1e-5, rtol=1e-5)
    prompts = [[5, 17, 42, 7, 99], [1, 2]]  # the KV cache, ragged prompts
    assert manual.generate(prompts, 15, temperature=0) == flash.generate(prompts, 15, temperature=0)


def test_padded_vocabulary_gives_the_same_loss_on_the_real_rows():
    torch.manual_seed(0)
    real = tg.GPT(tg.GPTConfig(block_size=32, vocab_size=GPT2_VOCAB_SIZE, n_layer=1, n_head=2, n_embd=32)).eval()
    padded = tg.GPT(replace(real.config, vocab_size=tg.PADDED_VOCAB_SIZE)).eval()
    state = real.state_dict()
    with torch.no_grad():
        for name, p in padded.state_dict().items():
            p[: state[name].size(0)].copy_(state[name])  # the same weights; 47 extra rows, never a target
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (2, 17))
    with torch.no_grad():
        logits_real, loss_real = real(idx[:, :-1], idx[:, 1:])
        logits_padded, _ = padded(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(logits_padded[..., :GPT2_VOCAB_SIZE], logits_real)
    loss_on_real_rows = torch.nn.functional.cross_entropy(logits_padded[..., :GPT2_VOCAB_SIZE].flatten(0, 1),
                                                          idx[:, 1:].flatten())
    torch.testing.assert_close(loss_on_real_rows, loss_real)


PEAK_MEMORY = """
import sys, torch
sys.path.insert(0, {root!r})
from memory_plan import peak_kib
import train_gpt2 as tg
from gptkit import distributed
torch.manual_seed(0)
model = tg.GPT(tg.preset("mini")[0])
distributed.wrap_model(model, False, 1, "cpu", activation_checkpointing={ac})
idx = torch.randint(0, 50257, (8, 257), generator=torch.Generator().manual_seed(0))
before = peak_kib()
model(idx[:, :-1], idx[:, 1:])[1].backward()
print(peak_kib() - before)
"""


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_gradients_with_less_memory():
    torch.manual_seed(0)
    plain = tg.GPT(tg.GPTConfig(block_size=64, vocab_size=300, n_layer=3, n_head=4, n_embd=64))
    checkpointed = tg.GPT(plain.config)
    checkpointed.load_state_dict(plain.state_dict())
    distributed.wrap_model(checkpointed, False, 1, "cpu", activation_checkpointing=True)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints stay interchangeable
    idx = torch.randint(0, 300, (2, 41))
    for model in (plain, checkpointed):
        model(idx[:, :-1], idx[:, 1:])[1].backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")
    peaks = {}  # KiB the forward and backward pass add to the process's peak memory, mini preset, B=8, T=256
    for ac in (False, True):
        r = subprocess.run([sys.executable, "-c", PEAK_MEMORY.format(root=str(ROOT), ac=ac)], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "bench")})
        assert r.returncode == 0, r.stderr
        peaks[ac] = int(r.stdout)
    assert peaks[True] < peaks[False] - 50_000  # at least 50 MB less
