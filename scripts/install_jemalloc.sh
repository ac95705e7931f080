#!/usr/bin/env bash
# jemalloc for the local runner's worker processes (pipelines/common.py: worker_allocator):
# Debian's libjemalloc2, installed with apt-get when run as root and missing. Best effort:
# without it the workers use glibc's malloc, and this says so in one line.
set -uo pipefail
have() { ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so\.2'; }
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq libjemalloc2 >/dev/null 2>&1; }
  install || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 && install; }
fi
have || echo "note: libjemalloc2 is not installed (apt-get install libjemalloc2); local worker processes use glibc's malloc"
exit 0
