#!/usr/bin/env bash
# Runs sftpipe's whole test suite: installs what the tests need (OpenSSH server and
# sftp-server, run as a throwaway sshd on 127.0.0.1 by the tests themselves; reprepro for
# the publish hook's end-to-end test; the other SFTP servers of the interoperability
# matrix, tests/interop.rs: gesftpserver, ProFTPD with mod_sftp, and paramiko and asyncssh
# in a Python venv under ~/.cache/sftpipe), checks formatting and lints, then runs every
# unit and integration test.
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
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v python3 >/dev/null || need+=(python3)
[[ -x /usr/libexec/gesftpserver ]] || need+=(gesftpserver)
[[ -x /usr/sbin/proftpd ]] || need+=(proftpd-core)
[[ -e /usr/lib/proftpd/mod_sftp.so ]] || need+=(proftpd-mod-crypto)
# tests/scp.rs: a Dropbear server without SFTP (in a private mount namespace: unshare).
[[ -x /usr/sbin/dropbear ]] || need+=(dropbear-bin)
# tests/shell.rs checks the generated completion scripts with each shell, man pages with groff.
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v groff >/dev/null || need+=(groff-base)
command -v tmux >/dev/null || need+=(tmux)
command -v sftp >/dev/null || need+=(openssh-client)
python=/usr/bin/python3
[[ -x $python ]] || python=python3
"$python" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
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

# paramiko and asyncssh, for their servers in tests/interop.rs (which find this Python
# through SFTPIPE_TEST_PYTHON).
venv="${XDG_CACHE_HOME:-$HOME/.cache}/sftpipe/interop-venv"
if ! "$venv/bin/python3" -c 'import paramiko, asyncssh' 2>/dev/null; then
    echo "== creating $venv (paramiko, asyncssh)" >&2
    "$python" -m venv --clear "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'paramiko>=3.2,<6' 'asyncssh>=2.14,<3'
fi
export SFTPIPE_TEST_PYTHON="$venv/bin/python3"

if ((lint)); then
    echo "== cargo fmt --check" >&2
    cargo fmt --all -- --check
    echo "== cargo clippy" >&2
    cargo clippy --all-targets --locked -- -D warnings
fi
# Every platform's dependencies, so `cargo metadata --offline` (tests/shell.rs) finds them.
cargo fetch --locked
echo "== cargo test" >&2
cargo test --locked --all-targets
cargo test --locked --doc
