"""Retention: restic's forget --keep-* rules over restore points (tag, time), pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from backup.retention import Policy, decide, policy_for

ZONE = datetime.now().astimezone().tzinfo


def at(day: int, hour: int, month: int = 5) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=ZONE)


# restic's forum example: a1 May 1 8h, a2 May 2 8h, a3 May 2 11h, a4 May 4 9h, a5 May 5 10h.
POINTS = [("a1", at(1, 8)), ("a2", at(2, 8)), ("a3", at(2, 11)), ("a4", at(4, 9)), ("a5", at(5, 10))]
NOW = at(5, 12)


def kept(policy: Policy, points=POINTS) -> list[str]:
    return sorted(decide(points, policy, NOW))


def test_no_policy_keeps_everything():
    assert Policy.of(None).empty() and Policy.of({}).empty()
    assert decide(POINTS, Policy(), NOW) == {tag: ["no policy"] for tag, _ in POINTS}


def test_keep_last_keeps_the_newest_n():
    assert kept(Policy(keep_last=2)) == ["a4", "a5"]
    assert decide(POINTS, Policy(keep_last=2), NOW)["a5"] == ["last 2"]
    assert kept(Policy(keep_last=10)) == ["a1", "a2", "a3", "a4", "a5"]


def test_keep_daily_keeps_the_newest_of_each_day_with_a_backup_and_days_without_do_not_count():
    # May 3 has no backup: the four days are May 5, 4, 2, 1; May 2's newest is a3.
    assert kept(Policy(keep_daily=4)) == ["a1", "a3", "a4", "a5"]
    assert kept(Policy(keep_daily=2)) == ["a4", "a5"]


def test_a_count_left_over_keeps_the_oldest_point_too():
    # Ten days asked, four have a backup: the oldest point is kept besides one per day (restic:
    # "the oldest snapshot in the group is kept additionally"); here it is also its day's newest.
    assert kept(Policy(keep_daily=10)) == ["a1", "a3", "a4", "a5"]
    same_day = [("b1", at(5, 1)), ("b2", at(5, 2)), ("b3", at(5, 3))]
    assert kept(Policy(keep_daily=2), same_day) == ["b1", "b3"]
    assert kept(Policy(keep_daily=1), same_day) == ["b3"]


def test_keep_within_days_is_relative_to_the_newest_point_not_now():
    assert kept(Policy(keep_within_days=3)) == ["a3", "a4", "a5"]  # after May 2, 10h
    later = datetime(2027, 1, 1, tzinfo=ZONE)
    assert sorted(decide(POINTS, Policy(keep_within_days=3), later)) == ["a3", "a4", "a5"]
    assert decide(POINTS, Policy(keep_within_days=3), NOW)["a4"] == ["within 3 days"]


def test_a_point_in_the_future_does_not_move_the_span():
    future = [*POINTS, ("z", NOW + timedelta(days=30))]
    assert kept(Policy(keep_within_days=1), future) == ["a5", "z"]


def test_weekly_and_monthly_use_iso_weeks_and_calendar_months():
    points = [("w1", at(25, 9, 4)), ("w2", at(30, 9, 4)), ("w3", at(3, 9)), ("w4", at(4, 9))]
    # ISO weeks: Apr 25 (week 17), Apr 30 and May 3 (week 18), May 4 (week 19).
    assert kept(Policy(keep_weekly=3), points) == ["w1", "w3", "w4"]
    assert kept(Policy(keep_monthly=1), points) == ["w4"]
    assert kept(Policy(keep_monthly=2), points) == ["w2", "w4"]
    assert kept(Policy(keep_yearly=1), points) == ["w4"]


def test_rules_are_or_ed_and_every_reason_is_named():
    decided = decide(POINTS, Policy(keep_last=1, keep_daily=2, keep_monthly=1), NOW)
    assert sorted(decided) == ["a4", "a5"]
    assert decided["a5"] == ["last 1", "daily", "monthly"]
    assert decided["a4"] == ["daily"]


def test_a_destination_policy_replaces_the_global_one_whole():
    backups = {"retention": {"keep_last": 5, "keep_daily": 7}, "destinations": {"smb": {}, "box": {"retention": {}},
               "secured": {"retention": {"keep_last": 2}}}}  # fmt: skip
    assert policy_for(backups, "smb") == Policy(keep_last=5, keep_daily=7)
    assert policy_for(backups, "box").empty()  # an empty mapping: this destination keeps everything
    assert policy_for(backups, "secured") == Policy(keep_last=2)
    assert Policy(keep_last=3, keep_within_days=7).describe() == "keep the last 3, all within 7 days of the newest"
    assert Policy(keep_daily=7, keep_monthly=12).describe() == "keep 7 daily, 12 monthly"


# --- prune's pure planning: which runs stay, which versions folders the kept ones need -------------


def run(tag: str, day: int, **datasets: str):
    """A catalog run whose datasets are ok (with a manifest) or failed."""
    from backup.catalog import CatalogRun
    from backup.records import TransferRecord

    transfers = [TransferRecord(tag, "manual", "smb", name, status=status, manifest=f"{name}-x.json.gz")
                 for name, status in datasets.items()]  # fmt: skip
    return CatalogRun(tag, tag, "manual", "smb", finished=at(day, 12).isoformat(), transfers=transfers)


def test_a_run_where_a_dataset_failed_cannot_push_out_its_last_good_state():
    from backup.prune import kept_runs

    runs = [run("20260501-120000-0001", 1, CSVs="ok", Results="ok"),
            run("20260502-120000-0001", 2, CSVs="ok", Results="failed")]  # fmt: skip
    assert kept_runs(runs, Policy(keep_last=1), NOW) == {"20260502-120000-0001": ["last 1"],
                                                         "20260501-120000-0001": ["last 1"]}  # fmt: skip


def test_a_run_with_no_restore_point_stays_only_while_it_is_the_newest():
    from backup.prune import kept_runs

    runs = [run("20260501-120000-0001", 1, CSVs="failed"), run("20260502-120000-0001", 2, CSVs="ok"),
            run("20260503-120000-0001", 3, CSVs="failed")]  # fmt: skip
    assert sorted(kept_runs(runs, Policy(keep_last=1), NOW)) == ["20260502-120000-0001", "20260503-120000-0001"]


def test_a_kept_run_needs_the_first_versions_folder_after_it_that_holds_each_file():
    from backup.prune import needed_versions, version_folders
    from backup.records import Tag

    t1, t2, t3 = "20260501-120000-0001", "20260502-120000-0001-pre", "20260502-120000-0001-post"
    listing = {f"{t2}/a.csv": 1, f"{t3}/a.csv": 2, f"{t2}-retry1/b.csv": 3, f"{t3}/b.csv": 4, f"{t3}/c.csv": 5,
               "notes/a.csv": 6, "20260502-120000-0001-retry01/a.csv": 7, f"{t1}/z.csv": 8}  # fmt: skip
    held, sizes = version_folders(listing)
    # Folders not named exactly as a tag ("notes", "...-retry01") are never ours.
    assert sizes == {
        Tag.parse(t1): (1, 8),
        Tag.parse(t2): (1, 1),
        Tag.parse(t3): (3, 11),
        Tag.parse(t2 + "-retry1"): (1, 3),
    }
    # Run 1 had a and b: a comes from t2 (pre before post); b from t3 (restore skips the retry folder,
    # which is kept all the same). c was not in run 1: t3's copy of it is nobody's.
    needed = needed_versions([(Tag.parse(t1), ["a.csv", "b.csv"])], held)
    assert needed == {Tag.parse(t2), Tag.parse(t2 + "-retry1"), Tag.parse(t3)}
    own = needed_versions([(Tag.parse(t3), ["a.csv", "b.csv", "c.csv"])], held)
    assert own == set()  # a run's own versions folder holds the states before it


def test_a_file_renamed_only_by_case_keeps_the_copy_a_kept_run_needs():
    """On a share, Plot.csv renamed plot.csv at the source was moved aside as plot.csv: run 1's
    Plot.csv is that copy, so its versions folder stays."""
    from backup.prune import needed_versions, version_folders
    from backup.records import Tag

    t1, t2 = "20260501-120000-0001", "20260502-120000-0002"
    held, _ = version_folders({f"{t2}/plot.csv": 5})
    assert needed_versions([(Tag.parse(t1), ["Plot.csv"])], held) == {Tag.parse(t2)}
