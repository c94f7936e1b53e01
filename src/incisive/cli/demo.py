"""``incisive demo-data``: write a synthetic cohort (DICOM + clinical CSV) full of fake PHI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from incisive.cli.options import JsonOpt
from incisive.common.output import console, print_json


def demo_data(
    out: Annotated[Path, typer.Argument(help="Output directory")],
    patients: Annotated[int, typer.Option(min=1, max=100000, help="Number of patients")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same cohort)")] = 7,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Image matrix size (pixels)")] = 64,
    json_out: JsonOpt = False,
) -> None:
    """Generate a synthetic cancer-imaging cohort with realistic PHI and learnable lesions."""
    from incisive.demo.synth import CohortSpec, generate_cohort

    summary = generate_cohort(out, CohortSpec(patients=patients, seed=seed, size=size))
    if json_out:
        print_json(summary)
    else:
        console.print(
            f"wrote {summary['instances']} DICOM instances for {summary['patients']} patients "
            f"and {summary['clinical_csv']} to {out}"
        )
