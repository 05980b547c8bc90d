"""Our GPT as a Hugging Face transformers GPT-2: for export_hf, and for tools that take a transformers model."""

import json
import os
from dataclasses import asdict, is_dataclass

from gptkit.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE

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


def to_hf_model(state_dict, config):
    """A transformers GPT2LMHeadModel holding our weights: state_dict of our GPT, config its GPTConfig (or the
    dict a checkpoint stores). The rows of the padded vocabulary (50257 -> 50304) are dropped."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = asdict(config) if is_dataclass(config) else config
    vocab = min(c["vocab_size"], GPT2_VOCAB_SIZE)
    hc = GPT2Config(vocab_size=vocab, n_positions=c["block_size"], n_embd=c["n_embd"], n_layer=c["n_layer"],
                    n_head=c["n_head"], activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=EOT_TOKEN, eos_token_id=EOT_TOKEN,
                    tie_word_embeddings=True)
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
    """Write a Hugging Face GPT-2 directory (config.json + model.safetensors) that
    transformers.AutoModelForCausalLM.from_pretrained(out_dir) loads."""
    to_hf_model(model.state_dict(), model.config).save_pretrained(out_dir)
