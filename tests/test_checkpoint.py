"""`othinklab.checkpoint`: a reader's checkpoint pinned against a writer that saves every step with one kept
(a real concurrent writer, issue 27 class 6); crafted pickles refused without running their code; the
`latest` pointer kept inside the checkpoint directory."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from crafted_pickle import OpensAFile
from safetensors.torch import load_file, save_file

from othinklab import checkpoint as ckpt_io
from othinklab.errors import UserError


# --------------------------------------------------------------------------- class 6: readers during training
class _Stub(torch.nn.Module):
    """The smallest model `save_checkpoint` accepts: one trainable tensor written as safetensors."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({"w": self.w.detach().clone()}, str(Path(folder) / "model.safetensors"))


def _save(root: Path, step: int, model: _Stub, keep: int = 1) -> Path:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ckpt_io.save_checkpoint(root, step, model, opt, sched, {"batch_index": step}, keep=keep)


def test_a_pinned_checkpoint_survives_pruning_and_is_pruned_by_a_later_save(tmp_path):
    model = _Stub()
    _save(tmp_path, 1, model)
    with ckpt_io.pinned_latest(tmp_path) as pinned:
        assert pinned.name == "step-000001"
        _save(tmp_path, 2, model)  # keep=1 would delete step 1, but a reader holds it
        assert (pinned / "state.json").is_file() and (pinned / "model" / "model.safetensors").is_file()
    _save(tmp_path, 3, model)
    assert [p.name for p in ckpt_io.complete_checkpoints(tmp_path)] == ["step-000003"]


def test_a_checkpoint_pruned_before_the_pin_is_skipped_for_the_new_latest(tmp_path, monkeypatch):
    model = _Stub()
    _save(tmp_path, 1, model)
    real = ckpt_io.latest_checkpoint
    calls = []

    def chosen_then_pruned(root):  # the writer saves step 2 and prunes step 1 right after the reader chose it
        found = real(root)
        if not calls:
            _save(tmp_path, 2, model)
        calls.append(found)
        return found

    monkeypatch.setattr(ckpt_io, "latest_checkpoint", chosen_then_pruned)
    with ckpt_io.pinned_latest(tmp_path) as pinned:
        assert pinned.name == "step-000002" and calls[0].name == "step-000001"


def test_readers_always_get_a_whole_checkpoint_from_a_writer_saving_every_step(tmp_path):
    """A real concurrent writer (keep=1, a save every few ms) and a reader that is slow between choosing and
    reading: every read finds all of its checkpoint's files (without the pin some reads found their checkpoint deleted)."""
    model, stop, errors = _Stub(), threading.Event(), []
    _save(tmp_path, 0, model)

    def writer() -> None:
        step = 1
        while not stop.is_set():
            with torch.no_grad():
                model.w.fill_(step)
            _save(tmp_path, step, model)
            step += 1

    thread = threading.Thread(target=writer)
    thread.start()
    reads = []
    try:
        for _ in range(25):
            with ckpt_io.pinned_latest(tmp_path) as ckpt:
                time.sleep(0.02)  # the slow model load
                try:
                    state = json.loads((ckpt / "state.json").read_text())
                    w = load_file(str(ckpt / "model" / "model.safetensors"))["w"]
                    reads.append((state["step"], float(w[0])))
                except OSError as exc:
                    errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert len(reads) == 25 and all(step == w or step == 0 for step, w in reads)
    assert len({step for step, _ in reads}) > 1  # the writer really moved on meanwhile


def _checkpoint_dir(root: Path, step: int, training: dict) -> Path:
    ckpt = root / f"step-{step:06d}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(f'{{"step": {step}}}')
    torch.save(training, ckpt / "training.pt")
    return ckpt


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "ran"
    ckpt = _checkpoint_dir(tmp_path / "c", 2, {"optimizer": OpensAFile(marker), "scheduler": {}, "rng": {}})
    _checkpoint_dir(tmp_path / "c", 1, {"optimizer": {}, "scheduler": {}, "rng": {}})
    with pytest.raises(UserError, match=r"\(io.open\).*refuses.*previous checkpoint .*step-000001"):
        ckpt_io.load_state(ckpt)
    assert not marker.exists()


def test_the_latest_pointer_stays_inside_the_checkpoint_directory(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    good = _checkpoint_dir(root, 1, {})
    outside = _checkpoint_dir(tmp_path / "elsewhere", 7, {})
    for pointer in ("../../elsewhere/step-000007", str(outside), "step-000001/../../../elsewhere/step-000007", ""):
        (root / "latest").write_text(pointer)
        assert ckpt_io.latest_checkpoint(root) == good
    (root / "step-000009").symlink_to(outside, target_is_directory=True)
    (root / "latest").write_text("step-000009")
    assert ckpt_io.latest_checkpoint(root) == good  # a symlinked step is not one of this run's
