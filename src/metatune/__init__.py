"""metatune: meta-tuning of LoRA hyperparameters across many datasets.

The package is the library behind the Snakemake workflow: every rule script is a thin adapter over one of its
modules. Heavy libraries (torch, transformers, peft, trl) are imported only inside the trainers that need them.
"""

__version__ = "0.1.0"
