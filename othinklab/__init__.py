"""othinklab: GRPO with dynamic KL (OThink-MR1's GRPO-D) for vision-language models, made to be seen into."""

__version__ = "0.1.0"
