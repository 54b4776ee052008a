"""`--profile DIR` hands a Snakemake profile to the run (a cluster's, for the pipeline's jobs)."""

from __future__ import annotations

from conftest import hash_tree


def test_a_profile_reaches_snakemake_and_the_backup_still_lands(lab, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    # Visible in Snakemake's own log, in each job's resources.
    (profile / "config.yaml").write_text("default-resources:\n  mem_mb: 1234\n")
    result = lab.cli("--profile", str(profile))
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert "mem_mb=1234" in (run / "snakemake.log").read_text()
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()
    # Without it, the jobs have Snakemake's own default: the profile made the difference.
    again = lab.cli()
    assert again.returncode == 0
    latest = max((lab.workdir / ".backup/runs").iterdir())
    assert "mem_mb=1234" not in (latest / "snakemake.log").read_text()


def test_a_folder_without_a_profile_is_a_usage_error(lab, tmp_path):
    result = lab.cli("--profile", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --profile ")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (lab.workdir / ".backup/runs").exists() or not any((lab.workdir / ".backup/runs").iterdir())
