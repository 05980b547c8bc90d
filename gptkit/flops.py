"""Throughput accounting: training FLOPs per token and the GPUs' peaks, for the MFU the trainer prints."""

import torch

from gptkit.memory import parameter_count

# Peak dense (no sparsity) bf16 FLOP/s. The first key found in the device name wins: the PCIe H100 runs at
# lower clocks than the SXM one.
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(config, T=None):
    """Training FLOPs per token at sequence length T (default block_size): forward + backward of a dense
    transformer cost about 6 per parameter per token, plus 12 * n_layer * n_embd * T for the attention scores
    (PaLM paper, appendix B). The parameters exclude the lookups, which are no matmul: the position embeddings, and
    with the modern recipe's untied head the token embeddings (tied, that matrix is the head's matmul too)."""
    C, L, T = config.n_embd, config.n_layer, T or config.block_size
    switch = lambda name: getattr(config, name, False)  # noqa: E731  the modern recipe's switches, off for GPTConfig
    lookups = (0 if switch("rotary") else config.block_size * C) + (config.vocab_size * C if switch("untied_head") else 0)
    n = parameter_count(config) - lookups
    return 6 * n + 12 * L * C * T


def peak_flops(device_name):
    """Peak dense bf16 FLOP/s for a GPU name such as 'NVIDIA H100 80GB HBM3', or None if unknown (a CPU)."""
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


def utilization(config, T, tokens_per_sec, device):
    """How hard one device works at tokens_per_sec of its own: {"mfu": fraction of the peak} on a GPU whose peak
    is known, {"tflops": achieved TFLOP/s} otherwise."""
    achieved = flops_per_token(config, T) * tokens_per_sec
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.startswith("cuda") else None
    return {"mfu": achieved / peak} if peak else {"tflops": achieved / 1e12}
