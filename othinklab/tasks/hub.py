"""Hugging Face Hub dataset ids as data paths: `owner/name`, optional `:config`, optional `@split`.

Why: every peer (TRL, EasyR1, R1-V) takes `leonardPKU/clevr_cogen_a_train` where we took a local path.
`datasets.load_dataset` reads the id, so the HF cache (`HF_HOME`, `HF_DATASETS_CACHE`) and offline mode
(`HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`) behave as users expect: offline, an uncached dataset is a
`DataError` naming the id and the cache directory. The R1-V loader turns the rows into `Sample`s like a
local file's. A path that exists on disk always wins over an id of the same spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from othinklab.errors import DataError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<config>[\w.-]+))?(?:@(?P<split>\S+))?$")
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")


@dataclass(frozen=True)
class HubId:
    """A parsed hub dataset spec; `config`/`split` are None when not given."""

    repo: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return self.repo + (f":{self.config}" if self.config else "") + (f"@{self.split}" if self.split else "")


def parse_hub_id(text: str) -> HubId | None:
    """The hub spec in `text`, or None when it reads as a local path (no such id syntax, or a file suffix).

    >>> parse_hub_id("leonardPKU/clevr_cogen_a_train@train")
    HubId(repo='leonardPKU/clevr_cogen_a_train', config=None, split='train')
    >>> parse_hub_id("owner/name:cfg@test[:50]")
    HubId(repo='owner/name', config='cfg', split='test[:50]')
    >>> parse_hub_id("data/train.jsonl") is None, parse_hub_id("./a/b") is None, parse_hub_id("a/b/c") is None
    (True, True, True)
    """
    m = _HUB_ID.match(text.strip())
    if not m or m["repo"].lower().endswith(_LOCAL_SUFFIXES):
        return None
    return HubId(m["repo"], m["config"], m["split"])


def is_hub_id(text: str) -> bool:
    """True when `text` is not an existing local path and reads as a hub dataset id."""
    return not Path(text).expanduser().exists() and parse_hub_id(text) is not None


def load_hub_dataset(spec: HubId) -> Any:
    """The rows of `spec` as a `datasets.Dataset` (the given split; else `train`, or the only split)."""
    import datasets

    try:
        loaded = datasets.load_dataset(spec.repo, name=spec.config, split=spec.split)
    except ValueError as exc:  # unknown split or config: the message lists the valid ones
        raise DataError(f"hub dataset {str(spec)!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - unreachable hub, unknown repo, no cache: all the user's to fix
        where = str(datasets.config.HF_DATASETS_CACHE)  # `HF_DATASETS_CACHE`, default `$HF_HOME/datasets`
        if datasets.config.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE or HF_DATASETS_OFFLINE, read at import
            raise DataError(
                f"hub dataset {str(spec)!r} is not in the Hugging Face datasets cache ({where}) and offline mode is "
                "on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). Load it once with network access to cache it, point "
                "HF_HOME / HF_DATASETS_CACHE at a cache that holds it, or give a local path "
                "(save_to_disk directory, .parquet or .jsonl)."
            ) from None
        raise DataError(
            f"hub dataset {str(spec)!r} could not be loaded ({type(exc).__name__}: {exc}); cache directory: {where}. "
            "Check the id and network access (without network, HF_HUB_OFFLINE=1 reads the cache only and fails at once "
            "instead of retrying), or give a local path (save_to_disk directory, .parquet or .jsonl)."
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if not loaded:
            raise DataError(f"hub dataset {str(spec)!r} has no splits")
        if "train" not in loaded and len(loaded) > 1:
            raise DataError(f"hub dataset {str(spec)!r} has no `train` split; name one of {list(loaded)} with @split")
        loaded = loaded["train"] if "train" in loaded else loaded[next(iter(loaded))]
    return loaded
