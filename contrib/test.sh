#!/usr/bin/env bash
# Runs sftpipe's whole test suite: installs what the tests need (OpenSSH server and
# sftp-server, run as a throwaway sshd on 127.0.0.1 by the tests themselves; reprepro for
# the publish hook's end-to-end test; gesftpserver, a server that takes symlinks' paths in
# the other order), checks
# formatting and lints, then runs every unit and integration test.
#
#   contrib/test.sh            # everything
#   contrib/test.sh --no-lint  # skip fmt and clippy
set -euo pipefail
cd "$(dirname "$0")/.."

lint=1
[[ "${1:-}" == "--no-lint" ]] && lint=0

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
[[ -x /usr/lib/openssh/sftp-server ]] || need+=(openssh-sftp-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v setpriv >/dev/null || need+=(util-linux)
command -v reprepro >/dev/null || need+=(reprepro)
[[ -x /usr/libexec/gesftpserver ]] || need+=(gesftpserver)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "contrib/test.sh: needs ${need[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "== installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd 2>/dev/null || true

if ((lint)); then
    echo "== cargo fmt --check" >&2
    cargo fmt --all -- --check
    echo "== cargo clippy" >&2
    cargo clippy --all-targets --locked -- -D warnings
fi
echo "== cargo test" >&2
cargo test --locked --all-targets
cargo test --locked --doc
