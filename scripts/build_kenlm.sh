#!/usr/bin/env bash
# Builds KenLM's lmplz and build_binary from the kenlm 0.3.0 sdist on PyPI (no other
# download): `scripts/build_kenlm.sh DEST_DIR PYTHON`. Needs cmake, a C++ compiler and
# Debian's boost, zlib, bz2, lzma and eigen dev packages; installs them with apt-get when
# run as root and they are missing.
set -euo pipefail
dest=${1:-.cache/kenlm}
python=${2:-python3}
if [ -x "$dest/bin/lmplz" ] && [ -x "$dest/bin/build_binary" ]; then exit 0; fi

pkgs="cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev libeigen3-dev"
missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing build packages: $missing"
    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
  else
    echo "error: KenLM needs these packages: $missing (sudo apt-get install them)" >&2; exit 2
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# only kenlm itself as source: its build requirements (cmake...) come as wheels
"$python" -m pip download --quiet --no-deps --no-binary kenlm kenlm==0.3.0 -d "$work"
tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -1)
log="$work/build.log"
if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=7 \
       && cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)"; } >"$log" 2>&1; then
  tail -30 "$log" >&2; echo "error: building KenLM failed" >&2; exit 1
fi
mkdir -p "$dest/bin"
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$dest/bin/"
echo "built $dest/bin/lmplz and $dest/bin/build_binary"
