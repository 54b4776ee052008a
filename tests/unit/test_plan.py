"""Planning: the seed's layout, enabled destinations, compression overrides."""

from __future__ import annotations

from backup import plan
from backup.config import load_config, validate
from conftest import PROJECT


def lab_plan(**kw):
    return {
        (t.destination, t.dataset): t for t in plan.plan(load_config([PROJECT / "config/config.yaml"]), "/proj", **kw)
    }


def test_seed_layout_direct():
    t = lab_plan()
    assert set(t) == {("smb", "CSVs"), ("smb", "Results"), ("box", "CSVs"), ("box", "Results"), ("secured", "CSVs")}
    assert t["smb", "CSVs"].target == "smb://ramanfile.local/ramanfiles/cole/flyTrackingData"
    assert t["smb", "Results"].target == "smb://ramanfile.local/ramanfiles/cole/Figures"
    assert t["box", "CSVs"].target == "Box-Folder:Ramanlab-Backups/CSVs"
    assert t["box", "Results"].target == "Box-Folder:Ramanlab-Backups/Results"
    assert t["secured", "CSVs"].target == "/securedstorage/DATAsec/cole/Data-secured/CSVs"
    assert {x.tool for x in t.values()} == {"rsync", "rclone"} and t["box", "CSVs"].tool == "rclone"
    assert all(x.mode == "direct" for x in t.values())
    assert t["smb", "CSVs"].require_mount is True


def test_compression_global_and_per_destination_override():
    cfg = load_config([PROJECT / "config/config.yaml"])
    for dest in cfg["backups"]["destinations"].values():
        dest["use_compression"] = None
    cfg["backups"]["compression"]["enabled"] = True
    cfg["backups"]["destinations"]["box"]["use_compression"] = False
    t = {(x.destination, x.dataset): x for x in plan.plan(cfg, "/proj")}
    assert t["smb", "CSVs"].mode == "archive" and t["box", "CSVs"].mode == "direct"
    assert t["secured", "CSVs"].target == "/securedstorage/DATAsec/cole/Data-secured/backups"
    cfg["backups"]["compression"]["enabled"] = False
    cfg["backups"]["destinations"]["secured"]["use_compression"] = True
    t = {(x.destination, x.dataset): x for x in plan.plan(cfg, "/proj")}
    assert t["secured", "CSVs"].mode == "archive" and t["smb", "CSVs"].mode == "direct"


def test_only_and_disabled():
    assert {d for d, _ in lab_plan(only=["box"])} == {"box"}
    cfg = load_config([PROJECT / "config/config.yaml"])
    cfg["backups"]["destinations"]["smb"]["enabled"] = False
    assert "smb" not in {t.destination for t in plan.plan(cfg, "/p")}
    cfg["backups"]["enabled"] = False
    assert plan.plan(cfg, "/p") == []


def test_relative_paths_resolve_against_project_dir_and_defaults_for_smb_paths():
    cfg = validate(
        {
            "backups": {
                "sources": {
                    "CSVs": {"root": "ws/csv", "include": ["a.csv"]},
                    "Other": {"root": "ws", "include": ["x/"]},
                },
                "destinations": {"smb": {"base_path": "nas", "datasets": ["CSVs", "Other"], "require_mount": False}},
            }
        }
    )
    t = {(x.destination, x.dataset): x for x in plan.plan(cfg, "/proj")}
    assert t["smb", "CSVs"].source.root == "/proj/ws/csv"
    assert t["smb", "CSVs"].target == "/proj/nas/CSVs"
    assert t["smb", "Other"].target == "/proj/nas/Other"
