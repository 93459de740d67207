#!/usr/bin/env bash
# Writes the shell completions and man pages of both binaries next to them,
# where the packaging recipes pick them up:
#   BIN_DIR/assets/completions/{prism-syncctl,prism-syncd}.{bash,fish}, _prism-syncctl, _prism-syncd
#   BIN_DIR/assets/man/*.1.gz
# Usage: packaging/generate-assets.sh BIN_DIR   (e.g. "${CARGO_TARGET_DIR:-target}/release")
# They are generated from the built binary, not committed, so they always
# match the flags that binary accepts.
set -euo pipefail
bin_dir=${1:?usage: $0 BIN_DIR (the folder holding the built prism-syncctl and prism-syncd)}
ctl="$bin_dir/prism-syncctl"
[ -x "$ctl" ] || { echo "$ctl is missing: build first (cargo build --release)" >&2; exit 1; }
out="$bin_dir/assets"
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
for binary in prism-syncctl prism-syncd; do
    "$ctl" completions bash --binary "$binary" >"$out/completions/$binary.bash"
    "$ctl" completions zsh --binary "$binary" >"$out/completions/_$binary"
    "$ctl" completions fish --binary "$binary" >"$out/completions/$binary.fish"
done
"$ctl" man --out-dir "$out/man"
# Debian policy wants man pages gzipped (-n: no name or time stamp, so the
# bytes are reproducible); cargo-deb compresses only assets it did not see
# as build output, and these sit in the target dir.
gzip -9n "$out"/man/*.1
echo "wrote $(find "$out" -type f | wc -l) files to $out"
