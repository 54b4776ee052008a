from backup import summary
from backup.records import TransferRecord


def rec(dest, status, **kw):
    return TransferRecord("20261130-120000-0001", "manual", dest, "CSVs", status=status, **kw)


def test_exit_status():
    assert summary.exit_status([rec("smb", "ok"), rec("box", "ok")]) == 0
    assert summary.exit_status([rec("smb", "ok"), rec("box", "warning")]) == 3
    assert summary.exit_status([rec("smb", "failed"), rec("box", "warning")]) == 1


def test_table_names_failures():
    text = summary.table(
        [rec("box", "failed", error="remote unreachable"), rec("smb", "ok", files_sent=2, files_total=3)]
    )
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["destination", "dataset", "mode"]
    assert lines[2].startswith("smb") and lines[3].startswith("box")
    assert "FAILED" in lines[3] and "remote unreachable" in lines[3] and "2/3" in lines[2]
    assert summary.human_bytes(1_500_000) == "1.5 MB"
