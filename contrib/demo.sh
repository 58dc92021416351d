#!/usr/bin/env bash
# The main job on this machine, with no configuration: mirror a sample tree (this
# repository's sources) through the real SFTP protocol, to a local OpenSSH sftp-server
# run with -D instead of ssh; then change a file and mirror again (only it moves).
#
#   contrib/demo.sh [DEST]      # DEST defaults to /tmp/sftpipe-demo
#
# CARGO names the cargo to build with (default: cargo on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-/tmp/sftpipe-demo}
server=/usr/lib/openssh/sftp-server
if [[ ! -x $server ]]; then
    echo "== installing openssh-sftp-server (needs root)" >&2
    ${SUDO:-$( [[ $(id -u) -eq 0 ]] || echo sudo )} apt-get update -qq
    ${SUDO:-$( [[ $(id -u) -eq 0 ]] || echo sudo )} apt-get install -y -qq openssh-sftp-server >/dev/null
fi
# cargo's own progress (Compiling ..., the build bar) goes to stderr: the first release
# build takes a minute or two.
echo "== building sftpipe (cargo build --release; a minute or two the first time)" >&2
"${CARGO:-cargo}" build --release
bin=target/release/sftpipe
sample=$(mktemp -d)
trap 'rm -rf "$sample"' EXIT
cp -r src tests contrib "$sample/"
echo "== sftpipe -D $server mirror $sample :$dest" >&2
"$bin" -D "$server" mirror --delete "$sample" ":$dest"
echo "== again, after changing one file" >&2
echo "// changed $(date)" >> "$sample/src/lib.rs"
"$bin" -D "$server" mirror --delete "$sample" ":$dest"
diff -r "$sample" "$dest" && echo "== $dest is an exact copy" >&2
"$bin" -D "$server" ls -l "$dest"
