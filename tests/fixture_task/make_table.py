"""How tests/fixture_task/table.csv was made (run once; the file is shipped and its sha256 pinned in prepare.py).

A heart-shaped binary table, small enough that the fixture baseline scores in about a second: 200 rows, eight
clinical-looking columns (`ca` with a few missing values) and a target that depends strongly on some of them,
so that "all features" beats "one weak feature" on every fold while `chol` and `fbs` are noise.

    python tests/fixture_task/make_table.py      # rewrites table.csv; re-pin DATA_SHA256 if its bytes change
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

ROWS = 200
SEED = 12  # the standard library's generator: the same bytes on every platform and numpy version
COLUMNS = ["age", "sex", "cp", "chol", "fbs", "thalach", "oldpeak", "ca", "target"]


def rows(n: int = ROWS, seed: int = SEED) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        age, sex, cp = rng.randint(29, 77), rng.randint(0, 1), rng.randint(1, 4)
        chol, fbs = rng.randint(126, 400), int(rng.random() < 0.15)
        thalach, oldpeak = rng.randint(90, 200), round(rng.expovariate(1.0), 1)
        ca = rng.randint(0, 3)
        risk = 0.03 * (age - 55) + 1.2 * sex + 1.0 * (cp == 4) - 0.04 * (thalach - 150) + 0.9 * oldpeak + 0.6 * ca
        target = int(rng.random() < 1 / (1 + math.exp(-(risk - 2.8))))
        ca_text = "" if rng.random() < 0.03 else str(ca)
        out.append([str(age), str(sex), str(cp), str(chol), str(fbs), str(thalach), str(oldpeak), ca_text, str(target)])
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("table.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows())
    print(f"wrote {path}")
