#!/usr/bin/env bash
# Runs every portshift test: formatting, lints, unit, property, integration and interop tests
# against the third-party peers (libiscsi, open-isns, tgt, qemu-img, prometheus and promtool,
# etcd), and a short run of each fuzz target. Installs whatever it needs on a fresh Debian
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
PEERS=(libiscsi-bin libiscsi-dev gcc open-isns-utils open-isns-server tgt qemu-utils prometheus)

# phase NAME: a heading with the seconds spent so far, so a slow run shows which phase grew.
phase() { echo "== $* (at ${SECONDS}s)"; }

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export PATH="$PATH:/usr/sbin:/sbin"
apt_updated=0
apt_install() {
    [ "$apt_updated" = 1 ] || { $SUDO apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Each peer is checked by running it, never by looking for a word in its help: a tool that is
# present but cannot do the job (a missing module, a broken library) counts as missing.
# runs CMD ARGS...: the command starts and exits (any status but "not found"/"cannot execute").
runs() { local rc=0; timeout 20 "$@" >/dev/null 2>&1 || rc=$?; [ "$rc" != 126 ] && [ "$rc" != 127 ]; }
# qemu_iscsi: qemu-img can open an iscsi:// URL. Nothing listens on port 1, so the open must fail
# with a connection error, not with "Unable to load module iscsi" / "Unknown protocol".
qemu_iscsi() {
    local out
    out="$(timeout 20 qemu-img info iscsi://127.0.0.1:1/iqn.2026-11.org.example:probe/0 2>&1)" && return 0
    runs qemu-img --version && ! grep -qiE 'load module|unknown protocol|unknown driver' <<<"$out"
}
# libiscsi_dev: a C program using libiscsi compiles and links (tests/c/pr_hold.c needs it).
libiscsi_dev() {
    local d rc=0
    d="$(mktemp -d)"
    printf '#include <iscsi/iscsi.h>\nint main(void) { return iscsi_create_context("iqn.probe") == 0; }\n' >"$d/p.c"
    cc -o "$d/p" "$d/p.c" -liscsi >/dev/null 2>&1 || rc=1
    rm -rf "$d"
    return "$rc"
}
peers_work() {
    libiscsi_dev && runs iscsi-test-cu -l && runs iscsi-perf -t 1 iscsi://127.0.0.1:1/iqn.2026-11.org.example:probe/0 &&
        runs iscsi-ls iscsi://127.0.0.1:1 && runs iscsi-inq iscsi://127.0.0.1:1/iqn.2026-11.org.example:probe/0 &&
        runs iscsi-readcapacity16 iscsi://127.0.0.1:1/iqn.2026-11.org.example:probe/0 &&
        runs isnsadm --help && runs isnsd --help && runs tgtadm --help && runs tgtd --help &&
        runs promtool --version && runs prometheus --version
}
if ! peers_work; then
    echo "== installing third-party peers: ${PEERS[*]}"
    apt_install "${PEERS[@]}"
    peers_work || { echo "third-party peers still do not run after apt-get install" >&2; exit 1; }
fi

# qemu-img must open iscsi:// URLs. Debian 12's backported qemu-utils 10 lists iscsi among its
# formats but ships the driver as a module it does not install; bookworm's qemu-utils 7.2 with
# qemu-block-extra has it.
if ! qemu_iscsi; then
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    echo "== qemu-img cannot open iscsi:// URLs: installing qemu-utils/$codename and qemu-block-extra/$codename"
    apt_install --allow-downgrades "qemu-utils/$codename" "qemu-block-extra/$codename"
    qemu_iscsi || { echo "qemu-img still cannot open iscsi:// URLs" >&2; exit 1; }
fi

# Tools of the packaging and terminal tests: groff renders the man pages, systemd-analyze
# verifies the example units, script(1) runs `portshift io` on a pseudo-terminal.
packaging_tools_work() { runs groff --version && runs systemd-analyze --version && runs script --version; }
if ! packaging_tools_work; then
    echo "== installing groff-base, systemd, bsdutils"
    apt_install groff-base systemd bsdutils
    packaging_tools_work || { echo "groff, systemd-analyze or script still do not run" >&2; exit 1; }
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# Headless Chromium opens the target's dashboard in tests/dashboard.rs (a real browser running
# the page's script); checked by running it.
if ! runs chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank; then
    echo "== installing chromium"
    apt_install chromium
    runs chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank ||
        { echo "chromium still does not run after apt-get install" >&2; exit 1; }
fi

# etcd (etcd-server: etcd 3.4, etcd-client: etcdctl) for tests/isns_etcd.rs, which start a
# three-member cluster on loopback; protoc (protobuf-compiler) builds the etcd-client crate's
# gRPC code. Checked by running each.
etcd_works() { runs etcd --version && runs etcdctl version && runs protoc --version; }
if ! etcd_works; then
    echo "== installing etcd-server, etcd-client, protobuf-compiler"
    apt_install etcd-server etcd-client protobuf-compiler
    etcd_works || { echo "etcd, etcdctl or protoc still do not run after apt-get install" >&2; exit 1; }
fi

phase "cargo fmt --check"
cargo fmt --all -- --check
phase "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
phase "cargo doc (broken and private links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

phase "fuzz targets (${FUZZ_SECONDS}s each)"
# cargo-fuzz needs nightly flags; use the nightly toolchain when there is one, else let the stable
# compiler accept them.
FUZZ=(cargo fuzz)
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then FUZZ=(cargo +nightly fuzz); else export RUSTC_BOOTSTRAP=1; fi
# Each target starts from its committed seeds (fuzz/seeds/TARGET, real protocol exchanges); what
# the run finds goes to the ignored fuzz/corpus/TARGET, so the tree stays clean.
for target in $(cd fuzz && "${FUZZ[@]}" list); do
    [ -d "fuzz/seeds/$target" ] || { echo "fuzz target $target has no seed corpus in fuzz/seeds/$target" >&2; exit 1; }
    mkdir -p "fuzz/corpus/$target"
    out="$(mktemp)"
    if (cd fuzz && "${FUZZ[@]}" run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048) >"$out" 2>&1; then
        echo "$target: $(grep -E '^Done [0-9]+ runs' "$out" | tail -n 1)"
        rm -f "$out"
    else
        # Say what failed and how to replay it: the panic, the input and its base64 form.
        echo "fuzz target $target failed:" >&2
        grep -E -A3 "panicked at|^ERROR|^SUMMARY" "$out" | head -n 20 >&2
        grep -E -A2 "^Base64:|^Failing input:" "$out" >&2
        rm -f "$out"
        exit 1
    fi
done
unset RUSTC_BOOTSTRAP

# The ci profile (Cargo.toml): release optimisation, no LTO; the tests' binaries (`portshift`
# included, through CARGO_BIN_EXE_portshift) are built by this one command.
phase "cargo test --no-run (building the test binaries)"
cargo test --workspace --profile ci --no-run
phase "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --profile ci --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's own last line is a crate's doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
phase "done"
exit "$status"
