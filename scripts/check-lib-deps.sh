#!/usr/bin/env bash
# The library without its default features must pull none of the CLI's
# crates: a Rust program that depends on posixkit with
# default-features = false gets libc, nix and memmap2 and nothing heavier.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree --locked -e normal --no-default-features --prefix none)
bad=$(printf '%s\n' "$tree" | grep -E '^(clap|clap_mangen|clap_complete|roff|tokio|signal-hook|hmac|sha2|md-5|getrandom) ' || true)
if [ -n "$bad" ]; then
    printf 'check-lib-deps: the library without default features pulls:\n%s\n' "$bad" >&2
    exit 1
fi
echo "check-lib-deps: the library alone pulls $(printf '%s\n' "$tree" | sort -u | grep -vc '^posixkit ') crates: $(printf '%s\n' "$tree" | sort -u | grep -v '^posixkit ' | cut -d' ' -f1 | tr '\n' ' ')"
