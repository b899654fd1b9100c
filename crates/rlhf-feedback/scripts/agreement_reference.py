#!/usr/bin/env python3
"""Dev-only: writes tests/fixtures/agreement_reference.json, the oracle values that
src/label/agreement.rs checks its Krippendorff's alpha against.

The reference is the PyPI package `krippendorff` (independent implementation); it is not
needed to build or test the crate, only to regenerate the fixture:

    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install krippendorff numpy
    /tmp/kvenv/bin/python crates/rlhf-feedback/scripts/agreement_reference.py
"""
import importlib.metadata
import json
import math
import pathlib
import random

import krippendorff
import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "agreement_reference.json"
METRICS = ("nominal", "ordinal", "interval")


def alphas(units):
    """units[u][rater] -> {metric: alpha}; the package wants raters x units with NaN for missing."""
    data = np.array([[math.nan if v is None else v for v in row] for row in units], dtype=float).T
    return {m: float(krippendorff.alpha(reliability_data=data, level_of_measurement=m)) for m in METRICS}


def random_case(rng, n_units, n_raters, values, p_missing, p_noise):
    """Each unit has a true value; a rater reports it, or with p_noise a random value, or nothing."""
    units = []
    for _ in range(n_units):
        truth = rng.choice(values)
        units.append([None if rng.random() < p_missing else (rng.choice(values) if rng.random() < p_noise else truth)
                      for _ in range(n_raters)])
    return units


def main():
    rng = random.Random(20240611)
    cases = []
    # Krippendorff's worked example (4 observers x 12 units), at full precision.
    obs = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    cases.append(("krippendorff_worked_example", [list(u) for u in zip(*obs)]))
    # Shapes: units, raters, value set, P(missing), P(noise); noise 1.0 is pure chance (alpha ~ 0).
    shapes = [(8, 3, [1, 2, 3], 0.2, 0.3), (15, 4, [1, 2, 3, 4, 5], 0.35, 0.4), (30, 5, [0, 1], 0.3, 1.0),
              (20, 2, [1, 2, 3, 4], 0.1, 0.2), (40, 6, [-2, 0, 1, 3, 7, 10], 0.5, 0.5),
              (12, 3, [1.5, 2.0, 4.25], 0.25, 0.6)]
    for i, (n_units, n_raters, values, p, noise) in enumerate(shapes):
        cases.append((f"random_{i}_{n_units}x{n_raters}", random_case(rng, n_units, n_raters, values, p, noise)))
    out = []
    for name, units in cases:
        a = alphas(units)
        assert all(math.isfinite(x) for x in a.values()), (name, a)
        out.append({"name": name, "units": units, **a})
    version = importlib.metadata.version("krippendorff")
    lines = ",\n".join("  " + json.dumps(c) for c in out)
    OUT.write_text(f'{{"generator": "scripts/agreement_reference.py, PyPI krippendorff {version}",\n'
                   f' "cases": [\n{lines}\n]}}\n')
    for c in out:
        print(c["name"], {m: c[m] for m in METRICS})


if __name__ == "__main__":
    main()
