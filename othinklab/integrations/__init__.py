"""Bridges to other trainers. Each module imports its trainer lazily: none of them is a core dependency.

- `othinklab.integrations.trl`: `KLScheduleCallback`, GRPO-D (or any othinklab KL schedule) for TRL's
  `GRPOTrainer` as one callback (`pip install othinklab[bench]` installs a TRL it is tested with).
"""
