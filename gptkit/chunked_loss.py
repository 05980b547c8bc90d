"""Cross-entropy of a language-model head without ever holding all of its logits (GPT.forward with
--loss-chunk-size, and the modern recipe's soft-capped loss).

The logits are the largest activation of GPT-2 training: (B*T, 50304), 3.3 GB in fp32 at B=16, T=1024, kept for
the backward pass. Here they are made chunk_size rows at a time and each chunk's gradient is taken at once
(d loss / d logits = (softmax - one_hot(target)) / N) and pushed through the matmuls, so that only the gradients
of the hidden states (N, C) and of the head's weight (V, C) wait for backward. Under autocast the matmuls run in
bf16 as the head's would; the softmax and the weight gradient's running sum are fp32. torch.compile turns each
chunk's softmax, loss and gradient into one kernel between the matmuls; run eagerly on a CPU, a chunk's passes
(cast, cap, log-softmax, gradient) go ROWS rows at a time, so that each block stays in the CPU's cache through
all of them instead of every pass being a trip to memory.
"""

import torch

from gptkit.cli import non_negative_int

ROWS = 32  # fp32 logits per block on a CPU: 32 x 50,304 x 4 bytes = 6.4 MB, which stays in the cache


def soft_cap_(logits, cap):
    """cap * tanh(logits / cap), the modern recipe's logit cap, in place on float logits, written through the sigmoid
    (tanh u = 2 sigmoid(2u) - 1): the same function, but torch's fp32 tanh on a CPU is several times slower than its
    sigmoid (docs/benchmarks.md)."""
    return logits.mul_(2 / cap).sigmoid_().mul_(2 * cap).sub_(cap)


def chunked_cross_entropy(x, weight, targets, chunk_size, softcap=0.0):
    """Mean cross-entropy of the logits x @ weight.T against targets, chunk_size positions at a time.
    x (B, T, C) hidden states, weight (V, C) the output head, targets (B, T); softcap C > 0: the logits are
    C * tanh(x @ weight.T / C) (the modern recipe). The same value and gradients as F.cross_entropy on the full
    logits."""
    return _ChunkedCrossEntropy.apply(x.flatten(0, 1), weight, targets.flatten(), chunk_size, softcap,
                                      torch.is_grad_enabled())


def cross_entropy_sum(z, targets, softcap=0.0, grad=None, grad_scale=1.0):
    """The sum over rows of -log softmax(logits)[target], the logits z (n, V) (capped when softcap > 0), in fp32;
    with grad (z's shape and dtype), also writes grad_scale * d sum / dz into it. Block by block on a CPU run
    eagerly; on a GPU, or under torch.compile (which fuses the passes itself), in one block."""
    n, V = z.shape
    rows = ROWS if z.device.type == "cpu" and not torch.compiler.is_compiling() else n
    logits = torch.empty(min(rows, n), V, dtype=torch.promote_types(z.dtype, torch.float32), device=z.device)
    logp = torch.empty_like(logits)  # a block's log-softmax, then its gradient
    loss = torch.zeros((), dtype=logits.dtype, device=z.device)
    for a in range(0, n, rows):
        zb, tb = z[a : a + rows], targets[a : a + rows]
        yb, gb = logits[: zb.size(0)].copy_(zb), logp[: zb.size(0)]
        if softcap:
            soft_cap_(yb, softcap)
        torch.log_softmax(yb, dim=1, out=gb)
        loss -= gb.gather(1, tb[:, None]).sum()
        if grad is not None:
            gb.exp_()  # the softmax
            gb[torch.arange(gb.size(0), device=gb.device), tb] -= 1  # ... minus one_hot(target)
            if softcap:  # through the cap: d/dz C*tanh(z/C) = 1 - tanh(z/C)^2 = 1 - (y/C)^2
                gb.mul_(yb.square_().mul_(-grad_scale / softcap**2).add_(grad_scale))
            else:
                gb.mul_(grad_scale)
            grad[a : a + rows] = gb
    return loss


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size, softcap, with_grad):
        # x (N, C), weight (V, C), targets (N,); with_grad: whether backward will be called (evaluations skip it)
        N = x.size(0)
        loss = torch.zeros((), dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        grad_x = torch.empty_like(x) if with_grad else None
        grad_w = torch.zeros_like(weight, dtype=loss.dtype) if with_grad else None
        for start in range(0, N, chunk_size):
            xs, ts = x[start : start + chunk_size], targets[start : start + chunk_size]
            z = xs @ weight.t()  # (n, V): the only logits in memory, in the matmuls' dtype (bf16 under autocast)
            grad = torch.empty_like(z) if with_grad else None  # d loss / d z, (softmax - one_hot) / N
            loss += cross_entropy_sum(z, ts, softcap, grad, 1 / N)
            if with_grad:
                grad_x[start : start + chunk_size] = grad @ weight
                grad_w += grad.t() @ xs
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_x, grad_w)
        return loss / N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, (grad_w * grad_loss).to(ctx.weight_dtype), None, None, None, None


def add_arguments(parser):
    """The trainer's flag for it."""
    parser.add_argument("--loss-chunk-size", type=non_negative_int, default=0,
                        help="compute the loss this many positions at a time, never holding all B*T x 50304 logits "
                             "(less memory, room for a larger -B; on a CPU also faster, its passes going through "
                             "the cache block by block: B*T for the quick start; on a GPU faster with --compile, "
                             "which fuses them); 0: the full logits, as in the lecture")
