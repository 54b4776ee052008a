"""--dry-run: totals per destination and dataset, and a screenful of names unless --list-files."""

from __future__ import annotations

from conftest import hash_tree


def totals(stdout: str) -> dict[tuple[str, str], list[str]]:
    table = stdout.split("Would send (nothing was written):\n", 1)[1].splitlines()[2:]
    return {(row.split()[0], row.split()[1]): row.split()[2:] for row in table if row.strip()}


def test_dry_run_ends_with_totals_and_lists_a_screenful(lab):
    results = hash_tree(lab.results_root)
    assert len(results) > 20
    result = lab.cli("--dry-run")
    assert result.returncode == 0, result.stdout
    rows = totals(result.stdout)
    assert set(rows) == {("smb", "CSVs"), ("smb", "Results"), ("box", "CSVs"), ("box", "Results"), ("secured", "CSVs")}
    assert rows["smb", "Results"][0] == str(len(results)) and rows["secured", "CSVs"][0] == str(len(lab.csv_hashes()))
    csv_bytes = sum(p.stat().st_size for p in lab.csv_root.iterdir())
    assert " ".join(rows["box", "CSVs"][1:3]) == f"{csv_bytes / 1000:.1f} KB"
    assert f"... and {len(results) - 20} more (--list-files lists every one)" in result.stdout
    listed = lab.cli("--dry-run", "--list-files")
    assert "more (--list-files" not in listed.stdout
    assert all(f"    {name}\n" in listed.stdout for name in results), listed.stdout
    assert not lab.smb.exists() and not lab.secured.exists()


def test_dry_run_names_special_files_as_skipped(lab):
    import os

    os.mkfifo(lab.results_root / "Results/Opto/PER-Envelopes/pipe")
    result = lab.cli("--dry-run")
    assert result.returncode == 3, result.stdout
    warning = "warning: not a file, skipped (FIFO, socket or device): Results/Opto/PER-Envelopes/pipe"
    assert result.stdout.count(warning) == 2
    assert all(row[-1] == "WARNING" for key, row in totals(result.stdout).items() if key[1] == "Results")
