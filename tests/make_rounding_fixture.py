"""Write tests/data/rounding.sqlite: kernels whose mean, median and stddev sit on rounding edges.

Used to pin down how `nsys stats` rounds to 0.1 ns (exact binary ties such as x.25 and decimal
near-ties such as 5052.95, which is 5052.9499... in binary). The oracle CSVs of both nsys
versions on this file are committed beside it (see tests/data/README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import Synth  # noqa: E402

CASES = {
    "tie_quarter": [10, 10, 10, 11],          # mean 10.25
    "tie_three_quarters": [10, 11, 11, 11],   # mean 10.75
    "tie_eighth": [1, 1, 1, 1, 1, 1, 1, 2],   # mean 1.125
    "near_tie_5052_95": [5052] * 2 + [5053] * 38,  # 202118 / 40 = 5052.95 (5052.9499... in binary)
    "near_tie_2_45": [2] * 11 + [3] * 9,      # 49 / 20 = 2.45 (2.4500...02 in binary)
    "near_tie_0_05": [0] * 19 + [1],          # 1 / 20 = 0.05 (0.0500...03 in binary)
    "near_tie_1_15": [1] * 17 + [2] * 3,      # 23 / 20 = 1.15 (1.1499...9 in binary)
    "median_even": [3, 4],                    # median 3.5
    "single": [7],                            # stddev of one value
    "big": [10**9, 10**9 + 3],                # large durations
}

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "data" / "rounding.sqlite"
    out.unlink(missing_ok=True)
    s = Synth(out)
    t = 0
    for name, durations in CASES.items():
        for d in durations:
            s.kernel(t, t + d, name)
            t += 10**10
    s.close()
    print(out)
