#!/usr/bin/env bash
# Unpacks a .deb built by `cargo deb` into a temporary root and checks that
# it holds what a user needs: both binaries (and that they run), the systemd
# user unit exactly as in systemd/, the shell completions of both binaries,
# and gzipped man pages. Ends with "deb: N passed, N failed"; exits non-zero on
# any failure.
# Usage: packaging/check-deb.sh path/to/prism-sync_VERSION_ARCH.deb
set -uo pipefail
deb=${1:?usage: $0 DEB}
cd "$(dirname "$0")/.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root" || { echo "dpkg-deb -x $deb failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        passed=$((passed + 1))
        echo "ok: $what"
    else
        failed=$((failed + 1))
        echo "FAILED: $what"
    fi
}

check "the package is named prism-sync" [ "$(dpkg-deb -f "$deb" Package)" = prism-sync ]
for binary in prism-syncd prism-syncctl; do
    check "usr/bin/$binary is executable" test -x "$root/usr/bin/$binary"
    check "usr/bin/$binary --version runs" "$root/usr/bin/$binary" --version
done
check "the user unit is the one in systemd/" \
    cmp "$root/usr/lib/systemd/user/prism-syncd.service" systemd/prism-syncd.service
for binary in prism-syncd prism-syncctl; do
    check "bash completion for $binary" \
        grep -q "complete .*$binary" "$root/usr/share/bash-completion/completions/$binary"
    check "zsh completion for $binary" \
        grep -q "#compdef $binary" "$root/usr/share/zsh/vendor-completions/_$binary"
    check "fish completion for $binary" \
        grep -q "complete -c $binary" "$root/usr/share/fish/vendor_completions.d/$binary.fish"
    check "man page $binary.1.gz" \
        sh -c "zcat '$root/usr/share/man/man1/$binary.1.gz' | grep -q '^.TH $binary 1'"
done
check "man page for service install" \
    sh -c "zcat '$root/usr/share/man/man1/prism-syncctl-service-install.1.gz' | grep -q 'dry.*run'"
check "no uncompressed man page" \
    sh -c "! ls '$root'/usr/share/man/man1/*.1 2>/dev/null"

echo "deb: $passed passed, $failed failed"
[ "$failed" = 0 ]
