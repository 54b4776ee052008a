"""`--profile DIR` hands a Snakemake profile to the run (a cluster's, for the pipeline's jobs)."""

from __future__ import annotations

from conftest import hash_tree


def test_a_profile_reaches_snakemake_and_the_backup_still_lands(lab, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("printshellcmds: true\n")  # visible in Snakemake's own log
    result = lab.cli("--profile", str(profile))
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert "-m backup sync" in (run / "snakemake.log").read_text()
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()
    # Without it, Snakemake does not print the jobs' commands: the profile made the difference.
    again = lab.cli()
    assert again.returncode == 0
    latest = max((lab.workdir / ".backup/runs").iterdir())
    assert "-m backup sync" not in (latest / "snakemake.log").read_text()


def test_a_folder_without_a_profile_is_a_usage_error(lab, tmp_path):
    result = lab.cli("--profile", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --profile ")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (lab.workdir / ".backup/runs").exists() or not any((lab.workdir / ".backup/runs").iterdir())
