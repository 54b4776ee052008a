"""SMB URLs, the mount table, and refusing plain folders."""

from __future__ import annotations

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
