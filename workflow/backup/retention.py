"""Which restore points a retention policy keeps, and why: restic's ``forget --keep-*`` rules, pure.

A policy is a set of counts and a span (``backups.retention``, or a destination's own
``retention``, which replaces the global one whole). The points are walked newest first, as
restic does (internal/restic/snapshot_policy.go):

- ``keep_last: N``: the newest N points;
- ``keep_within_days: D``: every point less than D days older than the newest point (the
  newest one not in the future: a clock that ran ahead on one machine cannot empty a policy);
- ``keep_daily``, ``keep_weekly`` (ISO weeks), ``keep_monthly``, ``keep_yearly: N``: the
  newest point of each of the last N days (weeks, ...) that have one, in this machine's time
  zone. Days without a backup do not count, so ``keep_daily: 7`` keeps seven points even
  when they span a month.
- When a count is not used up by the end (fewer days with a backup than asked for), the
  oldest point is kept too: the longest history the counts allow.

A point is kept when any rule keeps it (the rules are or-ed), and the reasons say which. An
empty policy keeps everything: nothing is ever removed without one. Why restic's rules and
not new ones: the lab can read restic's documentation for them, and their corner cases
(days without backups, the oldest point) are settled there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta

# (config key, reason, the bucket a time falls in): keep_last's bucket is the point itself.
BUCKETS = (
    ("keep_last", "last", None),
    ("keep_daily", "daily", lambda t: (t.year, t.month, t.day)),
    ("keep_weekly", "weekly", lambda t: tuple(t.isocalendar())[:2]),
    ("keep_monthly", "monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", "yearly", lambda t: t.year),
)


@dataclass(frozen=True)
class Policy:
    """How many restore points to keep (0: that rule keeps none)."""

    keep_last: int = 0
    keep_within_days: float = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    @classmethod
    def of(cls, settings: dict | None) -> Policy:
        """From a config's ``retention`` mapping (None: no policy)."""
        return cls(**{f.name: (settings or {}).get(f.name) or 0 for f in fields(cls)})

    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        parts = [f"the last {self.keep_last}"] if self.keep_last else []
        parts += [f"{getattr(self, key)} {reason}" for key, reason, _ in BUCKETS[1:] if getattr(self, key)]
        if self.keep_within_days:
            parts.append(f"all within {self.keep_within_days:g} days of the newest")
        return "keep " + ", ".join(parts) if parts else "no policy: keep everything"


def policy_for(backups: dict, destination: str) -> Policy:
    """A destination's policy: its own ``retention`` if it has one (even an empty one), else the global one."""
    own = backups["destinations"][destination].get("retention")
    return Policy.of(own if own is not None else backups.get("retention"))


def decide(points: list[tuple[str, datetime]], policy: Policy, now: datetime | None = None) -> dict[str, list[str]]:
    """The points (tag, time) the policy keeps: tag -> the reasons. The others go."""
    if policy.empty():
        return {tag: ["no policy"] for tag, _ in points}
    ordered = sorted(points, key=lambda p: (p[1], p[0]), reverse=True)  # newest first
    now = now or datetime.now().astimezone()
    past = [t for _, t in ordered if t <= now]
    cutoff = max(past) - timedelta(days=policy.keep_within_days) if past and policy.keep_within_days else None
    counts = {key: getattr(policy, key) for key, _, _ in BUCKETS}
    last_bucket: dict[str, object] = {}
    kept: dict[str, list[str]] = {}
    for nr, (tag, when) in enumerate(ordered):
        reasons = []
        if policy.keep_within_days and (cutoff is None or when > cutoff):
            reasons.append(f"within {policy.keep_within_days:g} days")
        local = when.astimezone()
        for key, reason, bucket_of in BUCKETS:
            if counts[key] <= 0:
                continue
            bucket = nr if bucket_of is None else bucket_of(local)
            # A new bucket, or the oldest point while the count is not used up (restic's rule).
            if bucket != last_bucket.get(key, object()) or nr == len(ordered) - 1:
                last_bucket[key] = bucket
                counts[key] -= 1
                reasons.append(f"last {getattr(policy, key)}" if key == "keep_last" else reason)
        if reasons:
            kept[tag] = reasons
    return kept
