"""Write the sparsity report (Q1-Q3 and contacts) for one or more data sets.

    python examples/sparsity_report.py --data data/cheetah.h5 data/walker.h5 --out report/

Writes ``report.md`` with PNG figures and the summary table as CSV, JSON and Markdown.
"""

from __future__ import annotations

import argparse
import time

from dynamic_sparsity.analysis import analyse_dataset, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="HDF5 data sets")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--threshold", type=float, default=None, help="default: the data set's")
    parser.add_argument("--tsne-samples", type=int, default=2000, help="0 skips the t-SNE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    analyses = []
    for path in args.data:
        start = time.perf_counter()
        analyses.append(analyse_dataset(path, args.threshold, args.tsne_samples, args.seed))
        seconds = time.perf_counter() - start
        print(f"analysed {path}: {analyses[-1].n_samples} samples, {seconds:.1f} s")
    report = write_report(analyses, args.out)
    print((report.parent / "summary.md").read_text())
    print(f"report: {report}")


if __name__ == "__main__":
    main()
