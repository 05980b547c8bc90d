"""Our GPT as a Hugging Face transformers GPT-2: export_hf writes a complete model directory (weights, config,
tokenizer, generation config) that transformers, its pipelines and lm-evaluation-harness load offline.

    python -m gptkit.hf runs/quickstart my-gpt2-hf      # a run directory (its newest checkpoint) or a checkpoint
"""

import json
import os
import socket
from dataclasses import asdict, is_dataclass
from urllib.parse import urlparse

from gptkit.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, write_bpe_files

# the modern recipe's model switches with no counterpart in transformers' GPT-2 (an untied head and zero-init map)
UNMAPPED = {"rotary": "rotary position embeddings", "qk_norm": "QK-norm", "relu2": "the ReLU^2 MLP",
            "rmsnorm": "RMSNorm", "softcap": "logit soft-capping"}

# Conv1D layers in OpenAI's checkpoints: their weights are the transpose of nn.Linear's
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def check_gpt2_directory(path):
    """A directory given as a model must hold a transformers GPT-2 (from save_pretrained or export_hf)."""
    if not os.path.isdir(path):
        return
    config_path = os.path.join(path, "config.json")
    model_type = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            model_type = json.load(f).get("model_type")
    if model_type != "gpt2":
        raise ValueError(f'{path} is not a GPT-2 checkpoint directory: expected a config.json with "model_type": '
                         '"gpt2" (write one with save_pretrained or export_hf)')


def from_pretrained(name_or_dir, auto=False):
    """transformers' from_pretrained (GPT2LMHeadModel, or AutoModelForCausalLM with auto) for a hub name or a
    local directory, with one clear error instead of the hub's retries and traceback when it cannot be reached."""
    import transformers

    check_gpt2_directory(name_or_dir)
    # no network: the local cache only, instead of a minute of retries
    local_only = not os.path.isdir(name_or_dir) and not os.environ.get("HF_HUB_OFFLINE") and not hub_resolves()
    cls = transformers.AutoModelForCausalLM if auto else transformers.GPT2LMHeadModel
    try:
        return cls.from_pretrained(name_or_dir, local_files_only=local_only)
    except OSError as e:
        reason = str(e).strip().splitlines()[0]
        raise FileNotFoundError(f"could not load '{name_or_dir}' from the Hugging Face Hub ({reason}); offline, "
                                "pass one of our run directories or checkpoints, or a local model directory") from None


def hub_resolves():
    """Whether the Hugging Face Hub's host name resolves: a quick look before transformers' slow retries."""
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
        return True
    except OSError:
        return False


def to_hf_model(state_dict, config):
    """A transformers GPT2LMHeadModel holding our weights: state_dict of our GPT, config its GPTConfig (or the
    dict a checkpoint stores). The rows of the padded vocabulary (50257 -> 50304) are dropped."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = asdict(config) if is_dataclass(config) else config
    unmapped = [part for name, part in UNMAPPED.items() if c.get(name)]
    if unmapped:
        raise ValueError(f"this model uses {', '.join(unmapped)}, which Hugging Face GPT-2 does not have: it cannot be "
                         "exported as GPT-2; evaluate it with train_gpt2.py --init-from RUN --eval-only")
    vocab = min(c["vocab_size"], GPT2_VOCAB_SIZE)
    hc = GPT2Config(vocab_size=vocab, n_positions=c["block_size"], n_embd=c["n_embd"], n_layer=c["n_layer"],
                    n_head=c["n_head"], activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=EOT_TOKEN, eos_token_id=EOT_TOKEN,
                    tie_word_embeddings=not c.get("untied_head", False))
    sd = {}
    for k, v in state_dict.items():
        v = v.detach().float().cpu()
        if k.endswith(CONV1D_WEIGHTS):
            v = v.t()
        if k in ("transformer.wte.weight", "lm_head.weight"):
            v = v[:vocab]
        sd[k] = v.contiguous()
    hf = GPT2LMHeadModel(hc)
    hf.load_state_dict(sd, strict=False)  # strict=False: some transformers versions keep attn.bias buffers
    return hf.eval()


def export_hf(model, out_dir):
    """Write a Hugging Face GPT-2 directory that AutoModelForCausalLM and AutoTokenizer load, offline too:
    config.json, model.safetensors, generation_config.json and the GPT-2 tokenizer (vocab.json, merges.txt and
    transformers' own tokenizer files), which gives tiktoken's ids."""
    save_hf(to_hf_model(model.state_dict(), model.config), out_dir)


def export_checkpoint(path, out_dir):
    """export_hf for one of our checkpoint files or run directories (the newest checkpoint), without the trainer."""
    from gptkit import checkpoint, rundir

    ckpt = checkpoint.load_checkpoint(rundir.newest_in_run(path))
    save_hf(to_hf_model(ckpt["model"], ckpt["config"]), out_dir)


def save_hf(hf_model, out_dir):
    from transformers import GPT2TokenizerFast

    os.makedirs(out_dir, exist_ok=True)
    hf_model.generation_config.pad_token_id = EOT_TOKEN  # GPT-2 has no padding token: batched generation pads with EOT
    hf_model.save_pretrained(out_dir)
    write_bpe_files(out_dir)
    # read back from the two files (the way every transformers version can), then saved in transformers' own form
    tokenizer = GPT2TokenizerFast.from_pretrained(out_dir, model_max_length=hf_model.config.n_positions)
    tokenizer.save_pretrained(out_dir)


def main(argv=None):
    from gptkit.cli import convert_command

    def export(source, target):
        export_checkpoint(source, target)
        return f"wrote {target}: load it with transformers.AutoModelForCausalLM / AutoTokenizer.from_pretrained"

    return convert_command(__doc__, "one of our checkpoints, or a run directory (its newest checkpoint)",
                           "the Hugging Face directory to write", export, argv)


if __name__ == "__main__":
    raise SystemExit(main())
