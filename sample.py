"""
Sample from a model, streaming the tokens to the terminal as they come.

    python sample.py -m gpt2 --prompt "Hello, I'm a language model,"        # OpenAI's GPT-2 124M
    python sample.py -m log/ --num-samples 3 --max-new-tokens 100 --top-p 0.9  # our newest checkpoint
"""

import argparse
import codecs
import sys

import torch

import train_gpt2 as tg
from gptkit.cli import HelpFormatter
from gptkit.hardware import autodetect_device, compute_dtype
from gptkit.tokenizer import EOT_TOKEN, gpt2_tokenizer


def stream_to(out):
    """An on_token callback for a single-row generate(): writes each token's text as soon as its UTF-8 bytes
    form whole characters (a token can end in the middle of one)."""
    enc = gpt2_tokenizer()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def on_token(tokens):
        if tokens[0] is not None:
            out.write(decoder.decode(enc.decode_single_token_bytes(tokens[0])))
            out.flush()
    return on_token


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("-m", "--model", default="gpt2",
                        help="OpenAI model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face GPT-2 "
                             "directory, one of our checkpoints or a run directory (its newest checkpoint)")
    parser.add_argument("--prompt", default="Hello, I'm a language model,", help="text to continue")
    parser.add_argument("--num-samples", type=int, default=4, help="how many continuations")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per continuation at most")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy; higher is more random")
    parser.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: the smallest set of tokens "
                                                                 "holding this much probability (1.0: all)")
    parser.add_argument("--stop-at-eot", action=argparse.BooleanOptionalAction, default=True,
                        help="end a sample at <|endoftext|>")
    parser.add_argument("--seed", type=int, default=42, help="the same seed gives the same samples")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="the weights' dtype while sampling (auto: as the trainer's --dtype, gptkit/hardware.py; every token reads all the weights, so half the bytes "
                             "is about twice the speed; float32 gives the trainer's exact numbers)")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.max_new_tokens < 1:
        parser.error("--num-samples and --max-new-tokens must be positive")

    device = args.device or autodetect_device()
    try:
        enc = gpt2_tokenizer()
        model = tg.load_model(args.model).to(device, compute_dtype(device, args.dtype)).eval()
        prompt = enc.encode(args.prompt)
        if len(prompt) > model.config.block_size:
            raise ValueError(f"the prompt is {len(prompt)} tokens, longer than the model's block_size "
                             f"{model.config.block_size}")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    generator = torch.Generator(device).manual_seed(args.seed)
    for i in range(args.num_samples):
        print(f"--- sample {i + 1}/{args.num_samples}")
        sys.stdout.write(args.prompt)
        model.generate([prompt], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                       top_p=args.top_p if args.top_p < 1.0 else None,
                       stop_token=EOT_TOKEN if args.stop_at_eot else None,
                       generator=generator, on_token=stream_to(sys.stdout))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
