"""A smoke run of the load benchmark never overwrites the committed full-run figures."""

from __future__ import annotations

from pathlib import Path

from bench.load import QUICK_RESULTS, RESULTS, parse_args


def test_quick_writes_elsewhere_by_default() -> None:
    assert parse_args(["--quick"]).out == QUICK_RESULTS != RESULTS
    assert not str(QUICK_RESULTS).startswith(str(RESULTS))


def test_a_full_run_writes_the_committed_results_and_out_wins(tmp_path: Path) -> None:
    assert parse_args([]).out == RESULTS
    assert parse_args(["--quick", "--out", str(tmp_path)]).out == tmp_path
