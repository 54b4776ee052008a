"""Property: whatever the history and the policy, prune keeps every kept restore point whole.

A random history of 3 or 4 backups (files changed, rewritten with identical bytes, deleted at
the source, brought back with old content) with real rsync and the real command line, then a
random retention policy and `prune`. Afterwards every run that `list` still offers restores
byte for byte as the source was then (independent SHA-256), every other run is gone from
`list`, the newest run and the last keep_last runs are among the kept, no current copy
changed, and `--verify` finds every file the kept points need.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from conftest import Lab, hash_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FILES = ["a.csv", "b.csv", "c.csv"]
CONTENT = st.sampled_from([b"one\n", b"two\n", b"three\n", b""])
# Per file, per run after the first: what happens to it at the source.
ACTION = st.one_of(
    st.just(("keep",)), st.just(("delete",)), st.just(("rewrite",)), st.tuples(st.just("write"), CONTENT)
)
STEP = st.fixed_dictionaries({name: ACTION for name in FILES})
POLICY = st.fixed_dictionaries(
    {"keep_last": st.integers(0, 3), "keep_daily": st.integers(0, 2), "keep_within_days": st.sampled_from([0, 2e-5])}
)


def listed(lab: Lab) -> set[str]:
    result = lab.cli("list", "--from", "secured")
    assert result.returncode == 0, result.stdout + result.stderr
    return {line.split()[1] for line in result.stdout.splitlines()[2:] if line.startswith("secured ")}


def apply(root: Path, step: dict, stamp: float) -> None:
    for name, action in step.items():
        path = root / name
        if action[0] == "delete":
            path.unlink(missing_ok=True)
            continue
        if action[0] == "rewrite" and path.exists():
            path.write_bytes(path.read_bytes())  # the same bytes, a new time
        elif action[0] == "write":
            path.write_bytes(action[1])
        else:
            continue
        os.utime(path, (stamp, stamp))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.lists(CONTENT, min_size=3, max_size=3), steps=st.lists(STEP, min_size=2, max_size=3), policy=POLICY)
def test_prune_keeps_every_kept_point_whole(first, steps, policy):
    root = Path(tempfile.mkdtemp(prefix="prune-prop-"))
    try:
        lab = Lab(root)
        source = root / "data" / "flat"
        source.mkdir(parents=True)
        lab.config["backups"]["sources"] = {"CSVs": {"root": str(source), "include": ["*.csv"]}}
        for dest in ("smb", "box"):
            lab.config["backups"]["destinations"][dest]["enabled"] = False
        lab.save()
        now = time.time()
        for name, data in zip(FILES, first, strict=True):
            (source / name).write_bytes(data)
            os.utime(source / name, (now - 100, now - 100))
        states = []
        for number, step in enumerate([{}, *steps]):
            apply(source, step, now + 10 * number)
            if not any(source.iterdir()):
                (source / "a.csv").write_bytes(b"never empty\n")  # a run with no files is no restore point
                os.utime(source / "a.csv", (now + 10 * number, now + 10 * number))
            result = lab.cli()
            assert result.returncode in (0, 3), result.stdout + result.stderr
            states.append((result.stdout.split()[1].rstrip(":"), hash_tree(source)))
        lab.config["backups"]["retention"] = policy
        lab.save()
        current = hash_tree(lab.secured / "CSVs")

        result = lab.cli("prune")
        assert result.returncode == 0, result.stdout + result.stderr
        kept = listed(lab)
        ids = [run for run, _ in states]
        assert kept <= set(ids) and ids[-1] in kept
        assert set(ids[len(ids) - policy["keep_last"] :]) <= kept if policy["keep_last"] else True
        for number, (run, held) in enumerate(states):
            if run in kept:
                out = root / f"restored-{number}"
                got = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(out), "--run", run)
                assert got.returncode == 0, got.stdout + got.stderr
                assert hash_tree(out) == held, f"run {number + 1} of {len(states)}, policy {policy}"
            else:
                gone = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(root / "x"), "--run",
                               run)  # fmt: skip
                assert gone.returncode == 2, gone.stdout + gone.stderr
        assert hash_tree(lab.secured / "CSVs") == current
        verify = lab.cli("--verify")
        assert verify.returncode == 0, verify.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
