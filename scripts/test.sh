#!/usr/bin/env bash
# Runs every portshift test: formatting, lints, unit, property, integration and interop tests
# against the third-party peers (libiscsi, open-isns, tgt, qemu-img), and a short run of each
# fuzz target. Installs whatever it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
PEERS=(libiscsi-bin open-isns-utils open-isns-server tgt qemu-utils)
TOOLS=(iscsi-test-cu iscsi-perf iscsi-ls iscsi-inq iscsi-readcapacity16 isnsadm isnsd tgtd tgtadm qemu-img)

missing=0
for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$t" >/dev/null 2>&1 || missing=1; done
if [ "$missing" = 1 ]; then
    echo "== installing third-party peers: ${PEERS[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PEERS[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# qemu-img must have its iscsi:// driver (built in, or Debian's qemu-block-extra module).
qemu_formats="$(qemu-img --help 2>/dev/null || true)"
if ! grep -qw iscsi <<<"$qemu_formats"; then
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    echo "== qemu-img has no iscsi driver: installing qemu-block-extra with its matching qemu-utils"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --allow-downgrades \
        "qemu-utils/$codename" "qemu-block-extra/$codename" >/dev/null
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== fuzz targets (${FUZZ_SECONDS}s each)"
# cargo-fuzz needs nightly flags; use the nightly toolchain when there is one, else let the stable
# compiler accept them.
FUZZ=(cargo fuzz)
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then FUZZ=(cargo +nightly fuzz); else export RUSTC_BOOTSTRAP=1; fi
for target in $(cd fuzz && "${FUZZ[@]}" list); do
    (cd fuzz && "${FUZZ[@]}" run "$target" -- -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 2>&1 | tail -n 3)
done
unset RUSTC_BOOTSTRAP

echo "== cargo test"
cargo build --release -p portshift
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --release --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's own last line is a crate's doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
