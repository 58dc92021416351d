#!/usr/bin/env bash
# The shared handle's pipelining, measured: examples/threads.rs (8 threads x 1,000 stats on
# one sftpipe::Client against the same 8,000 stats one after another) against a throwaway
# sshd, over loopback and through delay-relay.py.
#
# Usage: contrib/bench/shared-handle.sh [DELAY_SECONDS_EACH_WAY (default 0.001)]
# Needs root (starts its own sshd on 127.0.0.1) and OpenSSH. Takes under a minute with the
# default delay: the serial run costs 8,000 round trips.
set -euo pipefail
DELAY=${1:-0.001}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/sftpipe-shared.XXXXXX)
SSHD_PID=""
cleanup() { [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

(cd "$REPO" && cargo build --release --example threads >&2)
EX=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/threads

ssh-keygen -q -t ed25519 -N '' -f "$WORK/host"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
cp "$WORK/key.pub" "$WORK/authorized_keys"
cp "$REPO/contrib/bench/delay-relay.py" "$WORK/relay.py"
mkdir -p /run/sshd && chmod 0755 /run/sshd
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $WORK/host
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
PidFile $WORK/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
/usr/sbin/sshd -f "$WORK/sshd_config" -E "$WORK/sshd.log"
for _ in $(seq 50); do [ -s "$WORK/sshd.pid" ] && break; sleep 0.1; done
SSHD_PID=$(cat "$WORK/sshd.pid")

OPTS=(-p "$PORT" -i "$WORK/key" -F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes)
echo "## loopback (ssh to 127.0.0.1)"
"$EX" "${OPTS[@]}" root@127.0.0.1 /etc/hostname
echo "## delay-relay.py, $DELAY s each way"
"$EX" "${OPTS[@]}" -o "ProxyCommand=$PY $WORK/relay.py 127.0.0.1 $PORT $DELAY" root@127.0.0.1 /etc/hostname
