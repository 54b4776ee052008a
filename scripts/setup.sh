#!/usr/bin/env bash
# Install what the backup system needs outside Python: rsync (and, with --test,
# what the test suite's real servers and its browser test need). Installs with apt-get when run as root,
# otherwise says exactly what to install. Python packages come from requirements.txt.
set -euo pipefail

packages=()
command -v rsync >/dev/null 2>&1 || packages+=(rsync)
if [ "${1:-}" = "--test" ]; then
  # The test suite's real servers: Samba, OpenSSH, FUSE, SLURM; and Info-ZIP to check archives.
  command -v zip >/dev/null 2>&1 || packages+=(zip)
  command -v unzip >/dev/null 2>&1 || packages+=(unzip)
  [ -x /usr/sbin/smbd ] || packages+=(samba)
  command -v fusermount3 >/dev/null 2>&1 || packages+=(fuse3)
  [ -x /usr/sbin/sshd ] || packages+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || packages+=(openssh-client)
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)  # renders `make report` in a test
  command -v tmux >/dev/null 2>&1 || packages+=(tmux)  # a real terminal for the progress test
  # A single-node SLURM for the cluster tests (started and stopped by the tests themselves).
  [ -x /usr/sbin/slurmctld ] || packages+=(slurmctld)
  [ -x /usr/sbin/slurmd ] || packages+=(slurmd)
  command -v sinfo >/dev/null 2>&1 || packages+=(slurm-client)
  [ -x /usr/sbin/munged ] || packages+=(munge)
  # Its accounting (the plugin's default `sacct` status path): slurmdbd on a MariaDB of the test's own.
  [ -x /usr/sbin/slurmdbd ] || packages+=(slurmdbd)
  command -v mariadb-install-db >/dev/null 2>&1 || packages+=(mariadb-server)
fi

[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${packages[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
else
  echo "setup: missing system packages: ${packages[*]}" >&2
  echo "setup: install them, for example: sudo apt-get install ${packages[*]}" >&2
  exit 1
fi
