"""MBPP evaluation: load problems, build prompts, generate completions, run them in a sandbox, score them.

One module per concern:
    data      problems from the hub or a local file, and the task-id splits
    prompts   the 3-shot, chat and SFT prompt formats, stop sequences and code extraction
    generate  completions from a causal LM (+ optional LoRA adapter) into a resumable JSONL file
    checks    each MBPP assert split into cuts run in the sandbox and a trusted check (expected values stay here)
    wire      the tagged-JSON values between sandbox and judge, decoded strictly and within bounds
    sandbox   bubblewrap'ed workers whose template (zygote.py) forks each task into fresh namespaces
    execute   one completion against its problem's tests: the verdict (passed/failed/timeout/...)
    score     pass@k, syntax rate, results JSON, paired comparison of two results
    cli       `metatune mbpp-score`

Only `generate` imports torch/transformers.
"""
