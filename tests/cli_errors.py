"""Test helper: the contract every user mistake at the CLI must keep, checked the same way everywhere:
exit code 2, a message naming the culprit, one short paragraph, never a traceback."""

from __future__ import annotations

from othinklab.cli import main


def assert_exits_2_naming(name: str, args: list[str], needle: str, capsys) -> str:
    """Run `main(args)` and check the contract; returns stderr for any further checks."""
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit code {code}; stderr: {err[-1500:]}"
    assert needle in err, f"{name}: {needle!r} not in {err[-1500:]!r}"
    assert "Traceback" not in err, f"{name}: a traceback: {err[-1500:]}"
    assert len(err.strip().splitlines()) <= 3, f"{name}: the message should be one paragraph: {err[-1500:]!r}"
    assert len(err) < 2000, f"{name}: {len(err)} characters of error"
    return err
