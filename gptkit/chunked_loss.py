"""Cross-entropy of a language-model head without ever holding all of its logits (GPT.forward with
--loss-chunk-size).

The logits are the largest activation of GPT-2 training: (B*T, 50304), 3.3 GB in fp32 at B=16, T=1024, kept for
the backward pass. Here they are made chunk_size rows at a time and each chunk's gradient is taken at once
(d loss / d logits = (softmax - one_hot(target)) / N) and pushed through the matmuls, so that only the gradients
of the hidden states (N, C) and of the head's weight (V, C) wait for backward. Under autocast the matmuls run in
bf16 as the head's would; the softmax and the weight gradient's running sum are fp32. torch.compile turns each
chunk's softmax, loss and gradient into one kernel between the matmuls; run eagerly, each is a pass over the
chunk, and the saving is only memory.
"""

import math

import torch

from gptkit.cli import non_negative_int


def soft_cap_(logits, cap):
    """cap * tanh(logits / cap), the modern recipe's logit cap, in place on float logits, written through the sigmoid
    (tanh u = 2 sigmoid(2u) - 1): the same function, but torch's fp32 tanh on a CPU ran 9x slower than its sigmoid
    (2,048 x 50,304 logits: 265 against 29 ms on this project's 2-core CI machine)."""
    return logits.mul_(2 / cap).sigmoid_().mul_(2 * cap).sub_(cap)


def chunked_cross_entropy(x, weight, targets, chunk_size, softcap=0.0):
    """Mean cross-entropy of the logits x @ weight.T against targets, chunk_size positions at a time.
    x (B, T, C) hidden states, weight (V, C) the output head, targets (B, T); softcap C > 0: the logits are
    C * tanh(x @ weight.T / C) (the modern recipe). The same value and gradients as F.cross_entropy on the full
    logits."""
    return _ChunkedCrossEntropy.apply(x.flatten(0, 1), weight, targets.flatten(), chunk_size, softcap,
                                      torch.is_grad_enabled())


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size, softcap, with_grad):
        # x (N, C), weight (V, C), targets (N,); with_grad: whether backward will be called (evaluations skip it)
        N = x.size(0)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if with_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if with_grad else None
        for start in range(0, N, chunk_size):
            xs, ts = x[start : start + chunk_size], targets[start : start + chunk_size]
            z = xs @ weight.t()  # (n, V): the only logits in memory, in the matmuls' dtype (bf16 under autocast)
            logits = z.float()
            if softcap:
                logits = soft_cap_(logits, softcap)  # z itself when fp32: it is not needed again
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            loss += (lse - logits.gather(1, ts[:, None]).squeeze(1)).sum()  # -log softmax at the targets
            if with_grad:
                if softcap:  # through the cap: d/dz C*tanh(z/C) = 1 - tanh(z/C)^2
                    cap_grad = 1 - (logits / softcap).square()
                # (softmax - one_hot) / N, in place of the logits: run eagerly, every pass over a chunk counts
                grad = logits.sub_(lse[:, None] + math.log(N)).exp_()
                grad[torch.arange(grad.size(0), device=grad.device), ts] -= 1 / N
                if softcap:
                    grad.mul_(cap_grad)
                grad = grad.to(z.dtype)
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
                             "(less memory, room for a larger -B; faster with --compile, which fuses it, slower "
                             "without); 0: the full logits, as in the lecture")
