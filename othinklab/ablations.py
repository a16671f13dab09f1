"""`othinklab ablate`: run the ablation presets on the grid, then the KL mechanism view of their runs.

Why: one command for the whole study, each preset's claims table in one `ablations.md`. The presets are
in `othinklab.ablation_presets`, the mechanism in `othinklab.mechanism` (both re-exported here for the
notebooks).
"""

from __future__ import annotations

from pathlib import Path

from othinklab.ablation_presets import ABLATIONS, COUNTING_D, FULL, ablation_seconds  # noqa: F401 (re-exported)
from othinklab.mechanism import kl_correlation, kl_to_base, measure_runs, mechanism_frame, unique_runs  # noqa: F401


def run_ablation(name: str, output_dir: str | Path = "grid_runs", progress: bool = False) -> dict[str, Path]:
    """`othinklab grid --preset <name>` (train, evaluate, paired claims), then the mechanism view:
    `mechanism.csv` (KL to the base vs same-task gain and cross-task change per run) and `mechanism.png`."""
    import matplotlib.pyplot as plt

    from othinklab.errors import UserError
    from othinklab.grid import run_grid
    from othinklab.grid_report import load_cells, results_table
    from othinklab.plots import kl_vs_transfer
    from othinklab.runs import atomic_write

    if name not in ABLATIONS:
        raise UserError(f"ablation preset {name!r} is unknown; choose one of {', '.join(ABLATIONS)}")
    command = f"othinklab ablate --preset {name} --output-dir {output_dir}"
    paths = run_grid(name, output_dir, progress=progress, command=command, preset=ABLATIONS[name])
    out = Path(output_dir) / name
    results = results_table(load_cells(out)[0])
    mech = mechanism_frame(results, measure_runs(out, results))
    paths["mechanism"] = atomic_write(out / "mechanism.csv", mech.to_csv(index=False))
    fig = kl_vs_transfer(mech)
    paths["mechanism_figure"] = atomic_write(out / "mechanism.png", lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return paths


def run_ablations(names: tuple[str, ...] = FULL, output_dir: str | Path = "grid_runs", progress: bool = False) -> Path:
    """Every preset in `names` (the whole study by default), then one `ablations.md` beside them with
    each preset's claims table: what `othinklab ablate` runs."""
    from othinklab.runs import atomic_write

    parts = []
    for name in names:
        paths = run_ablation(name, output_dir, progress)
        parts.append(f"## {name}\n\n{ABLATIONS[name].description}\n\n{paths['claims_md'].read_text()}")
    return atomic_write(Path(output_dir) / "ablations.md", "# Ablations\n\n" + "\n\n".join(parts))
