"""SMB URLs, the mount table, and refusing plain folders."""

from __future__ import annotations

import errno
import os
import time

import pytest
from backup import mounts

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:30 / /mnt/ramanfiles rw,relatime shared:5 - cifs //ramanfile.local/ramanfiles rw,vers=3.1.1
31 22 0:31 / /mnt/with\\040space rw,relatime shared:6 - smb3 //nas/Lab\\040Share rw
32 22 0:32 / /media/sshfs rw,relatime shared:7 - fuse.sshfs user@host:/x rw
33 22 0:33 / /tmp rw,relatime shared:8 - tmpfs tmpfs rw
34 22 0:34 / /media/fusesmb rw,relatime shared:9 - fuse.smbnetfs //fileserver/projects rw
"""


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return mounts.read_mounts(str(path))


def test_parse_smb_url():
    url = mounts.parse_smb_url("smb://ramanfile.local/ramanfiles/cole/flyTrackingData")
    assert (url.host, url.share, url.path) == ("ramanfile.local", "ramanfiles", "cole/flyTrackingData")
    assert mounts.parse_smb_url("smb://h/share%20x").share == "share x"
    for bad in ["smb://host", "smb:///share", "smb://h/s/../x"]:
        with pytest.raises(ValueError):
            mounts.parse_smb_url(bad)


def test_read_mounts_unescapes(table):
    assert mounts.Mount("//nas/Lab Share", "/mnt/with space", "smb3") in table


def test_resolves_kernel_cifs_mount(table, tmp_path):
    target = mounts.resolve_smb_target("smb://ramanfile.local/ramanfiles/cole/Figures", None, table)
    assert target == "/mnt/ramanfiles/cole/Figures"
    # The short host name and a different case name the same share.
    assert mounts.resolve_smb_target("smb://RAMANFILE/RamanFiles/x", None, table) == "/mnt/ramanfiles/x"
    assert mounts.resolve_smb_target("smb://nas/Lab%20Share/a", None, table) == "/mnt/with space/a"
    assert mounts.resolve_smb_target("smb://fileserver/projects/x", None, table) == "/media/fusesmb/x"


def test_resolves_gvfs_mount(tmp_path):
    gvfs = tmp_path / "gvfs"
    (gvfs / "smb-share:server=ramanfile.local,share=ramanfiles").mkdir(parents=True)
    url = mounts.parse_smb_url("smb://ramanfile.local/ramanfiles/cole")
    assert mounts.find_share_mount(url, [], gvfs_root=gvfs) == str(
        gvfs / "smb-share:server=ramanfile.local,share=ramanfiles"
    )


def test_unmounted_share_is_refused(table):
    with pytest.raises(mounts.MountError, match="share //other/data is not mounted"):
        mounts.resolve_smb_target("smb://other/data/x", None, table)
    # An explicit mount point is taken as given.
    assert mounts.resolve_smb_target("smb://other/data/x", "/mnt/data", table) == "/mnt/data/x"


def test_network_and_fuse_accepted_local_refused(table):
    assert mounts.check_on_network_fs("/mnt/ramanfiles/cole/new/folder", table).fstype == "cifs"
    assert mounts.check_on_network_fs("/media/sshfs/a", table).fstype == "fuse.sshfs"
    with pytest.raises(mounts.MountError, match="local tmpfs filesystem, not a mounted share"):
        mounts.check_on_network_fs("/tmp/x", table)
    with pytest.raises(mounts.MountError, match="local ext4"):
        mounts.check_on_network_fs("/home/lab", table)


def test_plain_path_passes_through(table):
    assert mounts.resolve_smb_target("/mnt/ramanfiles/cole", None, table) == "/mnt/ramanfiles/cole"


# -- Mounts that cache writes: a fake /proc with the rclone processes a lab machine might run --


def fake_process(proc, pid: int, argv: list[str], env: dict[str, str] | None = None, cwd=None) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    # The kernel's name of the process: the executable's base name, at most 15 characters.
    (folder / "comm").write_bytes(os.path.basename(argv[0]).encode()[:15] + b"\n")
    if env is None:
        (folder / "environ").mkdir()  # unreadable, as another user's process is
    else:
        (folder / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))
    if cwd:
        (folder / "cwd").symlink_to(cwd)


RCLONE = mounts.Mount("nas:share", "/mnt/nas", "fuse.rclone")


@pytest.mark.parametrize(
    "argv, env, mode",
    [
        (["rclone", "mount", "nas:share", "/mnt/nas", "--vfs-cache-mode", "writes"], {}, "writes"),
        (["/usr/bin/rclone", "mount", "--vfs-cache-mode=full", "nas:share", "/mnt/nas/"], {}, "full"),
        (["rclone", "mount", "nas:share", "/mnt/nas"], {"RCLONE_VFS_CACHE_MODE": "writes"}, "writes"),
        (["mount.rclone", "nas:share", "/mnt/nas", "-o", "rw,vfs_cache_mode=minimal"], {}, "minimal"),
        (
            ["rclone", "nfsmount", "nas:share", "/mnt/nas", "--vfs-cache-mode=off", "--vfs-cache-mode", "FULL"],
            {},
            "full",
        ),
    ],
)
def test_rclone_mount_with_a_write_cache_is_refused(tmp_path, argv, env, mode):
    fake_process(tmp_path, 4242, argv, env)
    fake_process(tmp_path, 4243, ["rsync", "-r", "src/", "/mnt/nas"], {})  # names the point, is no rclone
    with pytest.raises(mounts.MountError, match=f"caches writes \\(--vfs-cache-mode {mode}\\).*transport: rclone"):
        mounts.refuse_write_cache(RCLONE, proc=str(tmp_path))


def test_rclone_mount_without_cache_passes(tmp_path):
    fake_process(tmp_path, 10, ["rclone", "mount", "nas:share", "nas", "--vfs-cache-mode", "off"], {}, cwd="/mnt")
    fake_process(tmp_path, 11, ["rclone", "mount", "other:x", "/mnt/other", "--vfs-cache-mode", "full"], {})
    mounts.refuse_write_cache(RCLONE, proc=str(tmp_path))  # relative mount point, from its own folder
    fake_process(tmp_path, 12, ["rclone", "mount", "nas:share", "/mnt/nas"], {"HOME": "/root"})
    mounts.refuse_write_cache(RCLONE, proc=str(tmp_path))  # rclone's default is off


def test_rclone_cache_mode_that_cannot_be_told_is_refused(tmp_path):
    with pytest.raises(mounts.MountError, match="cannot tell whether the rclone mount at /mnt/nas caches writes"):
        mounts.refuse_write_cache(RCLONE, proc=str(tmp_path))  # no process found (rclone rcd, another namespace)
    fake_process(tmp_path, 7, ["rclone", "mount", "nas:share", "/mnt/nas"], env=None)
    with pytest.raises(mounts.MountError, match="cannot read the environment.*--vfs-cache-mode off"):
        mounts.refuse_write_cache(RCLONE, proc=str(tmp_path))


def test_filesystems_that_always_upload_later_are_refused(tmp_path):
    for mount in (mounts.Mount("s3ql://bucket", "/mnt/s3", "fuse.s3ql"),
                  mounts.Mount("https://dav.example.org/lab", "/mnt/dav", "fuse")):  # fmt: skip
        with pytest.raises(mounts.MountError, match="uploads them later.*transport: rclone"):
            mounts.refuse_write_cache(mount, proc=str(tmp_path))
    for mount in (mounts.Mount("//nas/share", "/mnt/nas", "cifs"), mounts.Mount("u@h:/x", "/m", "fuse.sshfs")):
        mounts.refuse_write_cache(mount, proc=str(tmp_path))


# -- Mounts that do not answer -----------------------------------------------------------------


def test_answering_mount_passes_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "_answered", {})
    (tmp_path / "share").mkdir()
    share = mounts.Mount("//nas/share", str(tmp_path / "share"), "cifs")
    assert mounts.check_reachable(str(tmp_path / "share/new/folder"), share) == str(tmp_path / "share/new/folder")
    assert list((tmp_path / "share").iterdir()) == []


def test_mount_that_does_not_answer_is_named_in_time(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "_answered", {})
    monkeypatch.setattr(mounts, "PROBE", "import time; time.sleep(30)")  # a server that never answers
    share = mounts.Mount("//nas/share", str(tmp_path), "cifs")
    t0 = time.monotonic()
    with pytest.raises(mounts.MountError, match=f"share mounted at {tmp_path} is unreachable .no answer within 1 s"):
        mounts.check_reachable(str(tmp_path / "x"), share, seconds=1)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "code, says",
    [(errno.EIO, "unreachable or failing .a test folder could not be made there: Input/output error"),
     (errno.ENOTCONN, "is broken .the program serving it has stopped.: unmount it")],
)  # fmt: skip
def test_mount_that_fails_the_probe_is_named(tmp_path, monkeypatch, code, says):
    monkeypatch.setattr(mounts, "_answered", {})
    monkeypatch.setattr(mounts, "PROBE", f"import sys; print(sys.argv[1]); print({code}, {os.strerror(code)!r})")
    with pytest.raises(mounts.MountError, match=says):
        mounts.check_reachable(str(tmp_path / "x"), mounts.Mount("//nas/share", str(tmp_path), "cifs"))


def test_local_target_is_not_probed(table, monkeypatch):
    monkeypatch.setattr(mounts, "probe", lambda *a: pytest.fail("a local folder was probed"))
    mounts.check_target("/tmp/backup", table)
    assert mounts.resolve_smb_target("/home/lab/x", None, table) == "/home/lab/x"


def test_each_gvfs_share_answers_for_itself():
    """GVFS holds every share under one FUSE mount: a dead share must not stand for a live one."""
    gvfs = mounts.Mount("gvfsd-fuse", "/run/user/1000/gvfs", "fuse.gvfsd-fuse")
    a = "/run/user/1000/gvfs/smb-share:server=nas,share=lab/cole"
    b = "/run/user/1000/gvfs/smb-share:server=vault,share=sec/x"
    assert mounts.share_of(a, gvfs) == "/run/user/1000/gvfs/smb-share:server=nas,share=lab"
    assert mounts.share_of(b, gvfs) != mounts.share_of(a, gvfs)
    cifs = mounts.Mount("//nas/lab", "/mnt/lab", "cifs")
    assert mounts.share_of("/mnt/lab/cole/x", cifs) == "/mnt/lab"


def test_only_rclone_processes_arguments_are_read(tmp_path):
    """Reading a process's arguments can block for good (a process stuck on a dead mount holds its
    memory map): other processes are passed over by their name. Here a FIFO stands for one: opening
    it would block this test."""
    proc = tmp_path / "proc"
    fake_process(proc, 10, ["rclone", "mount", "nas:share", "/mnt/nas", "--vfs-cache-mode", "off"])
    stuck = proc / "11"
    stuck.mkdir()
    (stuck / "comm").write_bytes(b"python3\n")
    os.mkfifo(stuck / "cmdline")
    assert [pid for pid, _ in mounts.rclone_servers("/mnt/nas", str(proc))] == ["10"]
