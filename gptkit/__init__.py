"""gptkit: what goes beyond the lecture, one focused module each, every one reached from train_gpt2.py by one call.

    cli           --help that shows every default, which flags the user actually typed, number checks
    settings      the run's settings in layers: --quickstart / --finetune, --recipe modern, --resume, the flags
    tokenizer     tiktoken's GPT-2 BPE, with a one-line error when its files are missing offline
    download      fetching a file from the internet, with a one-line error when offline
    shards        the token shard files fineweb.py writes and the trainer reads: names, finding, checking
    sampling      KV cache, top-k / top-p sampling and batched generation
    chunked_loss  cross-entropy without ever holding all the logits
    checkpoint    checkpoint files: writing them atomically, finding and loading them, resume state
    distributed   devices, torchrun, DDP / FSDP2, autocast and the collectives the loop needs
    hf            our GPT <-> Hugging Face transformers GPT-2 (export_hf)
    flops         FLOPs per token and MFU
    signals       SIGTERM / Ctrl-C as a request to stop after the current step
    memory        the memory plan per GPU (--plan), and what the trainer says about memory as it starts
    tracking      log.txt, run.json and the optional wandb / TensorBoard dashboards
    modern        the modern recipe (--recipe modern): rotary, QK-norm, ReLU^2, RMSNorm, Muon, WSD, ...

None of them imports train_gpt2, hellaswag or fineweb: the import graph has no cycle.
"""
