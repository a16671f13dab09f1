"""`othinklab.errors`: the exception classes the CLI turns into exit code 2."""

from __future__ import annotations

from othinklab.errors import TrainingError, UserError


def test_training_error_is_a_user_error():
    assert issubclass(TrainingError, UserError)
