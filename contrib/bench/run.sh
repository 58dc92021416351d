#!/usr/bin/env bash
# sftpipe benchmark: sftpipe and its peers side by side, in one run, against a throwaway sshd.
#
# Usage: contrib/bench/run.sh [--quick] [--only COND,...] [--cases CASE,...] [--repeat N]
#                             [--out FILE] [--timeout SECS] [--max-time SECS] [--keep] [--disk]
#
#   --quick          smoke run: 128 MiB big file, no 5,000-file trees, no 2 GiB / 10,000-file memory
#                    runs (memory is then measured on the 128 MiB file and the 500-file tree, and
#                    "one changed file" uses the 500-file tree); takes a few minutes
#   --only CONDS     run only these network conditions (comma-separated): loopback, rtt20, rtt100
#   --cases CASES    run only these workloads (comma-separated):
#                      classic  workloads 1-3 below (by default at loopback and rtt20 only)
#                      memory   workload 4 (loopback)
#                      big      several channels (#15): 512 MiB put/get (every condition)
#                      tree     several channels (#15): 500 files put -r / mirror (by default at
#                               rtt100 only)
#                      scp      the scp fallback (#18): an sshd without SFTP, beside scp -O (rtt20)
#                      many     large trees (#17): 50,000 and 1,000,000 files (loopback and
#                               rtt20; rtt100 only when --only names it). Only when named:
#                               the million-file rows take tens of minutes (give --max-time)
#                    a case named here runs in every selected condition; without --cases the
#                    first five run with the defaults above. E.g. --only rtt100 --cases big runs
#                    the #15 rows at 100 ms alone (a few minutes per repetition)
#   --repeat N       time every command N times (peers interleaved) and report the median (default 1)
#   --out FILE       also write the Markdown report to FILE (it always goes to stdout)
#   --timeout SECS   per-command limit (default 300); a command that hits it is reported FAILED
#   --max-time SECS  overall budget (default 2400); cases not started by then are reported SKIPPED
#   --keep           keep the work directory (/tmp/sftpipe-bench.*) for inspection
#   --disk           keep the data on /tmp's file system instead of a tmpfs (see below)
#
# Environment: SFTPIPE=/path/to/sftpipe skips the cargo build; CARGO_TARGET_DIR is honoured;
# BENCH_BIG_MIB=N sets the size of the big file (default 512, 128 with --quick; e.g. 32 to check
# that the script works end to end in little time). For --cases many: BENCH_MANY_DIV=N divides
# the files per directory of the large trees (e.g. 100: 500 and 10,000 files, to check the script
# end to end); BENCH_CACHE=DIR keeps the million-file tree (default /var/tmp/sftpipe-bench-cache,
# generated once per size: about 4 GiB of disk blocks for 1,000,000 files).
#
# Needs root (it starts its own sshd and may apt-get install openssh-server, openssh-sftp-server,
# rsync, lftp, time, python3 when missing) and a Debian-like system. It builds sftpipe in release
# mode, starts sshd on 127.0.0.1 on a free port with fresh host/user keys, and runs every workload
# under three network conditions, each a full round:
#   loopback  direct TCP to 127.0.0.1
#   rtt20     ssh ProxyCommand contrib/bench/delay-relay.py holding each direction 10 ms (RTT 20 ms)
#   rtt100    the same, 50 ms each way (RTT 100 ms)
# Every tool gets the same ssh options (incl. the ProxyCommand): ssh/scp/sftp -o, rsync -e "ssh ...",
# lftp sftp:connect-program "ssh -a -x ...", sftpipe -o. All data lives in one mktemp -d under /tmp
# ("remote" paths are on the same machine); sshd and the work directory are removed on exit.
# That directory is a tmpfs (when there is RAM for it; --disk to opt out): the tools are measured,
# not the file system. Every timed run removes and recreates thousands of files, and on a disk
# file system the cost of that depends on what was deleted seconds before (ext4 without a
# journal scans past recently deleted inodes when it allocates one), so the same command varied
# by 30% depending on run order, and later runs were slower than earlier ones for every tool.
#
# Workloads (wall time of one command, destination removed before each timed run, untimed):
#   1. one 512 MiB random file, up and down: ssh 'cat', sftp -b put/get, scp, rsync -a, sftpipe
#      put/get; ratio vs sftp. Two more rows compare the tools on equal ciphers: sftpipe
#      prefers AES-GCM on a CPU with AES instructions when nothing configured ciphers (as
#      here), OpenSSH ChaCha20-Poly1305, so "sftp -c aes128-gcm" and "sftpipe ..., chacha20"
#      (-o Ciphers=chacha20-poly1305@openssh.com) run each with the other's cipher
#   2. 500 files of 4 KiB in 10 dirs, up and down: sftp -b put -r/get -r, scp -r, rsync -a,
#      lftp mirror [-R] --parallel=8, sftpipe put -r/get -r, sftpipe mirror; ratio vs rsync -a
#   3. mirror (upload; rsync -a vs lftp mirror -R --parallel=8 vs sftpipe mirror; ratio vs rsync):
#      (a) fresh 500-file tree, (b) no-op re-mirror onto each tool's own copy, (c) one changed file
#      (grown by one byte) in a 5,000-file tree (50 dirs) each tool mirrored before (untimed),
#      (d) loopback only: fresh 5,000-file tree
#   4. memory (sftpipe only, loopback): peak RSS (/usr/bin/time %M: the largest of sftpipe and
#      its ssh child) of put/get of a 2 GiB file (/dev/zero data) and put -r/get -r of 10,000
#      files of 1 KiB in 100 dirs
#   5. several channels (#15), "big" at every condition: the 512 MiB file up and down with
#      ssh 'cat' (one channel: the ceiling), sftp, lftp pget -n 8 (download), rclone (upload;
#      download with --multi-thread-streams 8), sftpipe --connections 1 and sftpipe with its
#      default (8 connections); sftpipe's peak RSS is recorded for both (as in 4: the largest
#      single process, sftpipe or one of its ssh children, not their sum). "tree" (rtt100): 500
#      files of 4 KiB, put -r (rsync -a, lftp mirror -R --parallel=8, rclone copy
#      --transfers 8, sftpipe put -r at 1 and default connections) and a fresh mirror (rsync -a,
#      lftp, sftpipe mirror at 1 and default connections; no sftp put -r: one file at a time,
#      it needs minutes at 100 ms). A sftpipe without --connections (see
#      its --help) has these sftpipe rows reported SKIPPED.
#      rclone: with --sftp-ssh (rclone >= 1.64) it runs the same ssh command as the others; an
#      older rclone has only its own ssh library, so it gets host, port and key, and at rtt20/
#      rtt100 a "delay-relay.py --listen" TCP listener with the same delay in place of the
#      ProxyCommand (its cipher is then its own: see the header). Its hash check (md5sum over
#      ssh after each file) is off and its shell type given, so it runs no commands the others
#      do not.
#   6. large trees (#17, --cases many): 50,000 files of 4 KiB in 50 dirs and 1,000,000 files of
#      100 bytes in 1,000 dirs (kept in BENCH_CACHE): fresh mirror (and put -r of the 50,000),
#      no-op mirror, 1 changed file (grown by a byte) and get -r, rsync -a vs sftpipe; ratio vs
#      rsync. sftpipe's peak RSS (%M) and its client CPU (user + sys of sftpipe and its ssh child,
#      /usr/bin/time) per file get a table of their own. Targets: 50,000 files fresh mirror,
#      put -r, no-op and 1 changed <= 1.0x rsync; client CPU per file of the 50,000-file fresh
#      mirror and put -r <= 22.5 us (half of #17's 45 us); 1,000,000 files no-op <= 1.0x rsync
#      and peak RSS of its fresh and no-op mirror <= 256 MiB; and, with classic at rtt20, get -r
#      of 500 files <= 1.0x rsync.
# Copies are verified (cmp / diff -r) for every peer; a peer that fails or whose copy differs is
# reported as FAILED with the first line of its stderr, and the run goes on.
#
# Output: a Markdown report on stdout: one table per condition (workload | peer | seconds | ratio),
# the memory table and the targets (PASS/FAIL): 512 MiB put/get <= 1.0x sftp (both conditions);
# 500 files put -r at rtt20 <= 1.0x rsync; mirror fresh / no-op / one changed at rtt20 <= 1.0x rsync;
# 5,000 files fresh mirror on loopback <= 1.0x rsync; peak RSS < 64 MiB; and for #15: 512 MiB
# put/get at rtt100 <= 0.2x sftp and get <= 0.5x lftp pget -n 8, at rtt20 <= 0.5x sftp, on
# loopback <= 1.0x sftpipe --connections 1; 500 files put -r and mirror at rtt100 <= 0.9x rsync;
# sftpipe's peak RSS of the big-file rows < 64 MiB. Progress goes to stderr.
# A full run takes roughly 20 minutes on a quiet 2-core machine (the #15 rows at rtt100 alone
# about 8, with --only rtt100 --cases big,tree); absolute numbers on a busy
# machine are noisy, use --repeat 3 on a quiet one for numbers worth quoting.
#
# Peer quirks worth knowing: lftp needs "open -u root, sftp://..." (empty password) or it tries to
# ask for a password without a terminal; its sftp:connect-program is split by lftp honouring quotes,
# so the ProxyCommand is single-quoted inside it. scp (OpenSSH >= 9.0) speaks SFTP by default.
# ProxyCommand values are %-expanded by ssh, so no '%' may appear in them (none does here).

{ # the whole script is one compound command: bash parses it all before running, so editing this
  # file during a run cannot derail the run
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
T_START=${EPOCHREALTIME:?bash 5 or newer is needed (EPOCHREALTIME)}

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }

QUICK=0 ONLY="" CASES="" REPEAT=1 OUT="" CMD_TIMEOUT=300 MAX_TIME=2400 KEEP=0 DISK=0
while (($#)); do
    case $1 in
        --only | --cases | --repeat | --out | --timeout | --max-time)
            (($# >= 2)) || { echo "run.sh: $1 needs a value (see --help)" >&2; exit 2; } ;;
    esac
    case $1 in
        --quick) QUICK=1 ;;
        --only) ONLY=${2:-}; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --cases) CASES=${2:-}; shift ;;
        --cases=*) CASES=${1#*=} ;;
        --repeat) REPEAT=${2:-}; shift ;;
        --repeat=*) REPEAT=${1#*=} ;;
        --out) OUT=${2:-}; shift ;;
        --out=*) OUT=${1#*=} ;;
        --timeout) CMD_TIMEOUT=${2:-}; shift ;;
        --timeout=*) CMD_TIMEOUT=${1#*=} ;;
        --max-time) MAX_TIME=${2:-}; shift ;;
        --max-time=*) MAX_TIME=${1#*=} ;;
        --keep) KEEP=1 ;;
        --disk) DISK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for c in ${ONLY//,/ }; do
    case $c in loopback | rtt20 | rtt100) ;; *) echo "run.sh: --only takes loopback, rtt20, rtt100 (comma-separated), not '$c'" >&2; exit 2 ;; esac
done
for c in ${CASES//,/ }; do
    case $c in classic | memory | big | tree | scp | many) ;; *) echo "run.sh: --cases takes classic, memory, big, tree, scp, many (comma-separated), not '$c'" >&2; exit 2 ;; esac
done
[ -z "${BENCH_BIG_MIB:-}" ] || [[ $BENCH_BIG_MIB =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: BENCH_BIG_MIB must be a positive integer" >&2; exit 2; }
for v in REPEAT CMD_TIMEOUT MAX_TIME; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: ${v,,} must be a positive integer" >&2; exit 2; }
done
if [ -n "$OUT" ]; then
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
    : >"$OUT" || { echo "run.sh: cannot write $OUT" >&2; exit 2; }
fi

elapsed() { local e=$(( ${EPOCHREALTIME/./} - ${T_START/./} )); echo $((e / 1000000)); }
log() { printf '[%s +%ss] %s\n' "$(date +%H:%M:%S)" "$(elapsed)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

[ "$(id -u)" = 0 ] || die "run as root (starts its own sshd, may apt-get install peers)"
pkgs=()
[ -x /usr/sbin/sshd ] || pkgs+=(openssh-server)
[ -x /usr/lib/openssh/sftp-server ] || pkgs+=(openssh-sftp-server)
for c in ssh scp sftp ssh-keygen; do command -v $c >/dev/null || { pkgs+=(openssh-client); break; }; done
command -v rsync >/dev/null || pkgs+=(rsync)
command -v lftp >/dev/null || pkgs+=(lftp)
[ -x /usr/bin/time ] || pkgs+=(time)
command -v rclone >/dev/null || pkgs+=(rclone)
[ -x /usr/bin/python3 ] || command -v python3 >/dev/null || pkgs+=(python3)
if ((${#pkgs[@]})); then
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update >&2 || die "apt-get update failed"
    timeout 900 apt-get install -y "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed"
fi
PY=/usr/bin/python3
[ -x $PY ] || PY=$(python3 -c 'import sys; print(sys.executable)') # not a pyenv shim: no startup tax

if [ -n "${SFTPIPE:-}" ]; then
    BIN=$SFTPIPE
else
    command -v cargo >/dev/null || die "cargo not found (or set SFTPIPE=/path/to/sftpipe)"
    log "building sftpipe (cargo build --release)"
    (cd "$REPO" && timeout 1800 cargo build --release >&2) || die "cargo build --release failed"
    TARGET_DIR=${CARGO_TARGET_DIR:-target}
    case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
    BIN=$TARGET_DIR/release/sftpipe
fi
[ -x "$BIN" ] || die "no sftpipe binary at $BIN"

# ---------------------------------------------------------------------------------------------
# Work directory, sshd, cleanup

WORK=$(mktemp -d /tmp/sftpipe-bench.XXXXXX)
SSHD_PID="" CHILD="" TMPFS=0 BG_PIDS=()
# tmpfs: the data peaks near 5 GiB (a 2 GiB file and its copy, the 512 MiB file, the trees).
if ((!DISK)); then
    avail_gib=$(awk '/MemAvailable/ { printf "%d", $2 / 1048576 }' /proc/meminfo)
    if ((avail_gib >= 10)) && mount -t tmpfs -o "size=$((avail_gib - 4))g,mode=700" tmpfs "$WORK" 2>/dev/null; then
        TMPFS=1
    else
        log "no tmpfs (${avail_gib} GiB available, or mount refused): data stays on $(df -T /tmp | awk 'NR == 2 { print $2 }')"
    fi
fi
DATA_ON=$( ((TMPFS)) && echo "tmpfs (RAM)" || echo "$(df -T /tmp | awk 'NR == 2 { print $2 }') under /tmp")
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD" ]; then kill -TERM -- "-$CHILD" 2>/dev/null || true; fi
    for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    if [ -n "${SCP_SSHD_PID:-}" ]; then kill "$SCP_SSHD_PID" 2>/dev/null || true; fi
    if [ -n "$SSHD_PID" ]; then
        kill "$SSHD_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$SSHD_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if ((KEEP)); then
        log "work directory kept: $WORK$( ((TMPFS)) && echo ' (a tmpfs: umount it when done)')"
    else
        if ((TMPFS)); then umount "$WORK" && rmdir "$WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK"/{ssh,src,remote,local,log}
KEY=$WORK/ssh/id_ed25519
RELAY=$WORK/ssh/delay-relay.py # a copy: its path is then free of spaces, quotes and '%'
cp "$BENCH_DIR/delay-relay.py" "$RELAY"
ssh-keygen -q -t ed25519 -N '' -C sftpipe-bench-host -f "$WORK/ssh/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C sftpipe-bench-user -f "$KEY"
cp "$KEY.pub" "$WORK/ssh/authorized_keys"
mkdir -p /run/sshd && chmod 0755 /run/sshd

# The sshds run with an empty home for root (a private mount namespace, as root, when unshare
# is there). Every session the server starts runs the login shell, and bash started by sshd
# reads ~/.bashrc: on the machines this was written on, root's runs `pyenv init`, 110 ms of
# CPU per session, and seven at once take 0.8 s. Every peer paid it once per ssh connection,
# and sftpipe's extra channels (one session each) opened one per 100 ms. A server account normally
# starts its shell in a few milliseconds; SFTPIPE_BENCH_HOME=keep keeps the real home.
EMPTY_HOME=$WORK/ssh/home
ROOT_HOME=$(getent passwd root | cut -d: -f6)
mkdir -p "$EMPTY_HOME"
run_sshd() { # run_sshd ARGS...: /usr/sbin/sshd ARGS, with an empty home for root if possible
    if [ "${SFTPIPE_BENCH_HOME:-}" != keep ] && [ -d "$ROOT_HOME" ] && [ -x /usr/bin/unshare ] &&
        unshare -m --propagation private true 2>/dev/null; then
        unshare -m --propagation private sh -c \
            'mount --bind "$1" "$2" && shift 2 && exec /usr/sbin/sshd "$@"' sh "$EMPTY_HOME" "$ROOT_HOME" "$@"
    else
        /usr/sbin/sshd "$@"
    fi
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
H=root@127.0.0.1
BASE_OPTS=(-F /dev/null -i "$KEY" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=30)

start_sshd() {
    local attempt cfg=$WORK/ssh/sshd_config pidfile=$WORK/ssh/sshd.pid
    for attempt in 1 2 3 4 5; do
        PORT=$(free_port)
        cat >"$cfg" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $WORK/ssh/host_ed25519
AuthorizedKeysFile $WORK/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
PidFile $pidfile
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
MaxStartups 100
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
        rm -f "$pidfile"
        run_sshd -f "$cfg" -E "$WORK/ssh/sshd.log" || continue
        for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
        [ -s "$pidfile" ] || continue
        SSHD_PID=$(cat "$pidfile")
        for _ in $(seq 50); do
            if timeout 10 ssh -p "$PORT" "${BASE_OPTS[@]}" "$H" true </dev/null 2>/dev/null; then
                return 0
            fi
            sleep 0.1
        done
        kill "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=""
    done
    tail -5 "$WORK/ssh/sshd.log" >&2 || true
    die "could not start sshd"
}
log "starting sshd"
start_sshd
log "sshd pid $SSHD_PID on 127.0.0.1:$PORT, work dir $WORK"

# ---------------------------------------------------------------------------------------------
# Test data

if ((QUICK)); then BIG_MIB=128; else BIG_MIB=512; fi
BIG_MIB=${BENCH_BIG_MIB:-$BIG_MIB}
BIG=$WORK/src/big T500=$WORK/src/t500 T5K=$WORK/src/t5k T10K=$WORK/src/t10k HUGE=$WORK/src/huge

gen_tree() { # DIR NDIRS FILES_PER_DIR FILE_SIZE: random files DIR/dNN/fNNNN
    local dir=$1 ndirs=$2 n=$3 size=$4 d sub
    mkdir -p "$dir"
    for ((d = 0; d < ndirs; d++)); do
        printf -v sub '%s/d%02d' "$dir" "$d"
        mkdir -p "$sub"
        head -c $((n * size)) /dev/urandom | split -b "$size" -d -a 4 - "$sub/f"
    done
}
# Which workloads run where (see --only and --cases)
want_cond() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
named_case() { [[ ",$CASES," == *",$1,"* ]]; }
want() { # CASE COND: true when CASE runs in condition COND
    want_cond "$2" || return 1
    if [ -n "$CASES" ]; then
        named_case "$1" || return 1
        # the large trees at 100 ms only when asked for by name
        [ "$1" != many ] || [ "$2" != rtt100 ] || [[ ",$ONLY," == *,rtt100,* ]]
        return
    fi
    case $1 in
        many) false ;;
        classic) [ "$2" != rtt100 ] ;;
        memory) [ "$2" = loopback ] ;;
        big) true ;;
        tree) [ "$2" = rtt100 ] ;;
        scp) [ "$2" = rtt20 ] ;;
    esac
}
CLASSIC_ANY=0
for c in loopback rtt20 rtt100; do if want classic $c; then CLASSIC_ANY=1; fi; done

log "creating test data (${BIG_MIB} MiB file, 500-file tree$( ((QUICK || !CLASSIC_ANY)) || echo ', 5,000-file tree'))"
head -c "${BIG_MIB}M" /dev/urandom >"$BIG"
gen_tree "$T500" 10 50 4096
((QUICK || !CLASSIC_ANY)) || gen_tree "$T5K" 50 100 4096
sync -f "$WORK" # no writeback of fresh test data during the first timed runs

# ---------------------------------------------------------------------------------------------
# Peers. Each takes SOURCE DEST (remote paths are plain paths on the same machine).

TO() { timeout --foreground -k 5 "$CMD_TIMEOUT" "$@"; }

declare -A ONE_WAY=([rtt20]=0.010 [rtt100]=0.050) # seconds each way

setup_round() { # loopback | rtt20 | rtt100: per-tool command prefixes with identical ssh options
    ROUND=$1
    local opts=("${BASE_OPTS[@]}") str="${BASE_OPTS[*]}"
    if [ "$ROUND" != loopback ]; then
        local pc="ProxyCommand=$PY $RELAY 127.0.0.1 $PORT ${ONE_WAY[$ROUND]}"
        opts+=(-o "$pc")
        str+=" -o '$pc'"
    fi
    SSH=(ssh -p "$PORT" "${opts[@]}")
    SCP=(scp -q -P "$PORT" "${opts[@]}")
    SFTP=(sftp -q -P "$PORT" "${opts[@]}")
    RSYNC=(rsync -a -e "ssh -p $PORT $str")
    LFTP_OPEN="set cmd:fail-exit yes; set cmd:interactive no; set net:max-retries 2;"
    LFTP_OPEN+=" set net:reconnect-interval-base 1; set net:timeout 60; set sftp:auto-confirm yes;"
    LFTP_OPEN+=" set sftp:connect-program \"ssh -a -x $str\"; open -u root, sftp://127.0.0.1:$PORT"
    SP=("$BIN" -P "$PORT" "${opts[@]}")
    R=$WORK/remote/$ROUND L=$WORK/local/$ROUND
    mkdir -p "$R" "$L"
}

ssh_up() { TO "${SSH[@]}" "$H" "cat > $2" <"$1"; }
ssh_down() { TO "${SSH[@]}" "$H" "cat $1" >"$2"; }
sftp_batch() { printf '%s\n' "$@" >"$WORK/log/batch"; TO "${SFTP[@]}" -b "$WORK/log/batch" "$H"; }
sftp_up() { sftp_batch "put $1 $2"; }
sftp_down() { sftp_batch "get $1 $2"; }
# The cipher sftpipe picks on an AES-capable CPU when nothing configured ciphers (OpenSSH
# prefers ChaCha20-Poly1305): sftp with it, and sftpipe with OpenSSH's choice, compare the
# tools on equal channels.
GCM=aes128-gcm@openssh.com CHACHA=chacha20-poly1305@openssh.com
sftp_gcm_batch() { printf '%s\n' "$@" >"$WORK/log/batch"; TO "${SFTP[@]}" -c "$GCM" -b "$WORK/log/batch" "$H"; }
sftp_gcm_up() { sftp_gcm_batch "put $1 $2"; }
sftp_gcm_down() { sftp_gcm_batch "get $1 $2"; }
sftp_up_r() { sftp_batch "-mkdir ${2%/*}" "put -r $1 $2"; }
sftp_down_r() { sftp_batch "get -r $1 $2"; }
scp_up() { TO "${SCP[@]}" "$1" "$H:$2"; }
scp_down() { TO "${SCP[@]}" "$H:$1" "$2"; }
scp_up_r() { TO "${SCP[@]}" -r "$1" "$H:$2"; }
scp_down_r() { TO "${SCP[@]}" -r "$H:$1" "$2"; }
rsync_up() { TO "${RSYNC[@]}" "$1" "$H:$2"; }         # trees: pass SRC/ DEST/
rsync_down() { TO "${RSYNC[@]}" "$H:$1" "$2"; }
lftp_up() { TO lftp --norc -c "$LFTP_OPEN; mirror -R --parallel=8 $1 $2"; }
lftp_down() { TO lftp --norc -c "$LFTP_OPEN; mirror --parallel=8 $1 $2"; }
sp_put() { TO "${SP[@]}" put --progress=none "$1" "$H:$2"; }
sp_get() { TO "${SP[@]}" get --progress=none "$H:$1" "$2"; }
sp_chacha_put() { TO "${SP[@]}" -o "Ciphers=$CHACHA" put --progress=none "$1" "$H:$2"; }
sp_chacha_get() { TO "${SP[@]}" -o "Ciphers=$CHACHA" get --progress=none "$H:$1" "$2"; }
sp_put_r() { TO "${SP[@]}" put -r --progress=none "$1" "$H:$2"; }
sp_get_r() { TO "${SP[@]}" get -r --progress=none "$H:$1" "$2"; }
sp_mirror_up() { TO "${SP[@]}" mirror --progress=none "$1" "$H:$2"; }
sp_mirror_down() { TO "${SP[@]}" mirror --progress=none "$H:$1" "$2"; }
# memory: peak RSS in KiB goes to $WORK/log/rss
rss() { TO /usr/bin/time -o "$WORK/log/rss" -f %M "$@"; }
mem_put() { rss "${SP[@]}" put --progress=none "$1" "$H:$2"; }
mem_get() { rss "${SP[@]}" get --progress=none "$H:$1" "$2"; }
mem_put_r() { rss "${SP[@]}" put -r --progress=none "$1" "$H:$2"; }
mem_get_r() { rss "${SP[@]}" get -r --progress=none "$H:$1" "$2"; }

# preparation / verification helpers (untimed)
rmrf() { rm -rf -- "$@"; }
same_file() { cmp -s -- "$1" "$2" || { echo "copy differs from the source ($(stat -c %s -- "$2" 2>&1))"; return 1; }; }
same_file_rm() { same_file "$1" "$2"; rm -f -- "$2"; }
same_tree() {
    local d
    d=$(diff -rq -- "$1" "$2" 2>&1) && return 0
    echo "tree differs: $(head -1 <<<"$d") ($(wc -l <<<"$d") differences)"
    return 1
}
grow_one() { printf 'x' >>"$1/d$(printf %02d $(($2 % 10)))/f0007"; } # TREE REP: one file, new size+mtime
prep_ok() { [ -z "${INIT_FAIL[$*]:-}" ] || { echo "initial mirror failed: ${INIT_FAIL[$*]}"; return 1; }; }
mkhuge() { [ -s "$HUGE" ] || { head -c 2G /dev/zero >"$HUGE" && sync -f "$HUGE"; }; rm -rf -- "$@"; }

# ---------------------------------------------------------------------------------------------
# Runner

declare -A RES=() REF=() RSS=() INIT_FAIL=()
ORDER=() MEMORDER=()

first_line() { # FILE: first non-blank line, at most 140 characters
    local l
    l=$(grep -m1 -v '^[[:space:]]*$' "$1" 2>/dev/null || true)
    printf '%s' "${l:0:140}"
}

# try OUT ERR WORDS...: run WORDS (split on blanks) with set -e in a subshell of its own process
# group; stdout/stderr to OUT/ERR. Sets TRY_RC, TRY_SECS (wall time of the command alone).
try() {
    local out=$1 err=$2 t0 t1
    local -a w
    read -r -a w <<<"$3"
    set +e
    t0=$EPOCHREALTIME
    set -m
    (set -e; "${w[@]}") </dev/null >"$out" 2>"$err" &
    CHILD=$!
    set +m
    wait "$CHILD"
    TRY_RC=$?
    t1=$EPOCHREALTIME
    kill -TERM -- "-$CHILD" 2>/dev/null # stragglers (e.g. a relay after a timeout)
    CHILD=""
    set -e
    TRY_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# Waits (at most 5 s) until the test sshd has no session left. A client may exit before its
# connections end: lftp leaves its ssh children behind, and with --parallel=8 their sshd
# sessions linger ~1.7 s after it and then all close at once, in the next peer's timed run.
settle_server() {
    local _
    [ -n "$SSHD_PID" ] || return 0
    for _ in $(seq 100); do
        pgrep -P "$SSHD_PID" >/dev/null || return 0
        sleep 0.05
    done
    log "warning: sshd sessions still open before a timed run: $(pgrep -P "$SSHD_PID" | wc -l)"
}

# run_case PREP CMD CHECK: sets RUN_SECS (success) or RUN_ERR
run_case() {
    RUN_SECS="" RUN_ERR=""
    rm -f "$WORK/log/rss"
    local lo=$WORK/log/out le=$WORK/log/err
    if [ "$1" != - ]; then
        try "$lo" "$le" "$1"
        if ((TRY_RC)); then RUN_ERR="prep: $(first_line "$lo") $(first_line "$le")"; return; fi
    fi
    # Settle first: the untimed preparation (often an rm -rf of the last copy) must not be
    # written back during the timed command, and the last command's connections must be
    # gone. Fair to every peer.
    settle_server
    sync
    try "$lo" "$le" "$2"
    if ((TRY_RC)); then
        local msg
        msg=$(first_line "$le")
        [ -n "$msg" ] || msg=$(first_line "$lo")
        if ((TRY_RC == 124 || TRY_RC == 137)); then RUN_ERR="timed out after ${CMD_TIMEOUT}s"
        else RUN_ERR="exit $TRY_RC${msg:+: $msg}"; fi
        return
    fi
    local secs=$TRY_SECS
    if [ "$3" != - ]; then
        try "$lo" "$le" "$3"
        if ((TRY_RC)); then RUN_ERR="verify: $(first_line "$lo")$(first_line "$le")"; return; fi
    fi
    RUN_SECS=$secs
}

over_budget() { (($(elapsed) >= MAX_TIME)); }

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); printf "%.3f", (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'; }

# bench WORKLOAD REFPEER REPPREP SPEC...; SPEC is "peer|prep|command|check" ('-' = none);
# REPPREP runs once before each repetition (all peers), untimed.
bench() {
    local workload=$1 ref=$2 repprep=$3
    shift 3
    local -a label=() prep=() cmd=() check=() times=() fail=()
    local s i rep
    local -a f
    for s in "$@"; do
        IFS='|' read -r -a f <<<"$s"
        label+=("${f[0]}") prep+=("${f[1]}") cmd+=("${f[2]}") check+=("${f[3]}") times+=("") fail+=("")
    done
    REF[$ROUND|$workload]=$ref
    for ((rep = 1; rep <= REPEAT; rep++)); do
        if [ "$repprep" != - ]; then
            try "$WORK/log/out" "$WORK/log/err" "$repprep $rep"
            ((TRY_RC == 0)) || log "warning: '$repprep' failed: $(first_line "$WORK/log/err")"
        fi
        for i in "${!label[@]}"; do
            [ -z "${fail[i]}" ] || continue
            if over_budget; then fail[i]="SKIPPED (over --max-time)"; continue; fi
            run_case "${prep[i]}" "${cmd[i]}" "${check[i]}"
            if [ -n "$RUN_ERR" ]; then
                fail[i]="FAILED ($RUN_ERR)"
                log "$ROUND | $workload | ${label[i]} | ${fail[i]}"
            else
                times[i]+=" $RUN_SECS"
                local note=""
                ((REPEAT == 1)) || note=" (run $rep/$REPEAT)"
                if [ -s "$WORK/log/rss" ]; then
                    RSS[$ROUND|$workload|${label[i]}]=$(tail -1 "$WORK/log/rss")
                    note+=", peak RSS $(tail -1 "$WORK/log/rss") KiB"
                fi
                log "$ROUND | $workload | ${label[i]} | ${RUN_SECS} s$note"
            fi
        done
    done
    for i in "${!label[@]}"; do
        local key="$ROUND|$workload|${label[i]}"
        ORDER+=("$key")
        if [ -n "${fail[i]}" ]; then RES[$key]=${fail[i]}; else RES[$key]=$(median <<<"${times[i]}"); fi
    done
}

# initial (untimed) mirror per tool; a failure makes that peer FAILED in the next bench
init_mirror() { # LABEL CMD
    try "$WORK/log/out" "$WORK/log/err" "$2"
    if ((TRY_RC)); then INIT_FAIL[$1]="exit $TRY_RC: $(first_line "$WORK/log/err")"; else unset "INIT_FAIL[$1]"; fi
    log "$ROUND | initial mirror | $1 | ${TRY_SECS} s (untimed, exit $TRY_RC)"
}

# ---------------------------------------------------------------------------------------------
# Rounds

BIGW="${BIG_MIB} MiB file"
run_round() {
    setup_round "$1"
    log "=== round $ROUND ==="
    if ! TO "${SSH[@]}" "$H" true </dev/null 2>"$WORK/log/err"; then # warm-up / connectivity
        log "warning: ssh to the test sshd fails in round $ROUND: $(first_line "$WORK/log/err")"
    fi

    bench "$BIGW, upload" sftp - \
        "ssh cat|rmrf $R/big.ssh|ssh_up $BIG $R/big.ssh|same_file_rm $BIG $R/big.ssh" \
        "sftp|rmrf $R/big.sftp|sftp_up $BIG $R/big.sftp|same_file_rm $BIG $R/big.sftp" \
        "scp|rmrf $R/big.scp|scp_up $BIG $R/big.scp|same_file_rm $BIG $R/big.scp" \
        "rsync -a|rmrf $R/big.rsync|rsync_up $BIG $R/big.rsync|same_file_rm $BIG $R/big.rsync" \
        "sftpipe put|rmrf $R/big.sp|sp_put $BIG $R/big.sp|same_file_rm $BIG $R/big.sp" \
        "sftp -c aes128-gcm|rmrf $R/big.sftpg|sftp_gcm_up $BIG $R/big.sftpg|same_file_rm $BIG $R/big.sftpg" \
        "sftpipe put, chacha20|rmrf $R/big.spc|sp_chacha_put $BIG $R/big.spc|same_file_rm $BIG $R/big.spc"
    bench "$BIGW, download" sftp - \
        "ssh cat|rmrf $L/big.ssh|ssh_down $BIG $L/big.ssh|same_file_rm $BIG $L/big.ssh" \
        "sftp|rmrf $L/big.sftp|sftp_down $BIG $L/big.sftp|same_file_rm $BIG $L/big.sftp" \
        "scp|rmrf $L/big.scp|scp_down $BIG $L/big.scp|same_file_rm $BIG $L/big.scp" \
        "rsync -a|rmrf $L/big.rsync|rsync_down $BIG $L/big.rsync|same_file_rm $BIG $L/big.rsync" \
        "sftpipe get|rmrf $L/big.sp|sp_get $BIG $L/big.sp|same_file_rm $BIG $L/big.sp" \
        "sftp -c aes128-gcm|rmrf $L/big.sftpg|sftp_gcm_down $BIG $L/big.sftpg|same_file_rm $BIG $L/big.sftpg" \
        "sftpipe get, chacha20|rmrf $L/big.spc|sp_chacha_get $BIG $L/big.spc|same_file_rm $BIG $L/big.spc"

    bench "500 files, upload" "rsync -a" - \
        "sftp put -r|rmrf $R/t500.sftp|sftp_up_r $T500 $R/t500.sftp|same_tree $T500 $R/t500.sftp" \
        "scp -r|rmrf $R/t500.scp|scp_up_r $T500 $R/t500.scp|same_tree $T500 $R/t500.scp" \
        "rsync -a|rmrf $R/t500.rsync|rsync_up $T500/ $R/t500.rsync/|same_tree $T500 $R/t500.rsync" \
        "lftp mirror -R|rmrf $R/t500.lftp|lftp_up $T500 $R/t500.lftp|same_tree $T500 $R/t500.lftp" \
        "sftpipe put -r|rmrf $R/t500.sp|sp_put_r $T500 $R/t500.sp|same_tree $T500 $R/t500.sp" \
        "sftpipe mirror|rmrf $R/t500.spm|sp_mirror_up $T500 $R/t500.spm|same_tree $T500 $R/t500.spm"
    bench "500 files, download" "rsync -a" - \
        "sftp get -r|rmrf $L/t500.sftp|sftp_down_r $T500 $L/t500.sftp|same_tree $T500 $L/t500.sftp" \
        "scp -r|rmrf $L/t500.scp|scp_down_r $T500 $L/t500.scp|same_tree $T500 $L/t500.scp" \
        "rsync -a|rmrf $L/t500.rsync|rsync_down $T500/ $L/t500.rsync/|same_tree $T500 $L/t500.rsync" \
        "lftp mirror|rmrf $L/t500.lftp|lftp_down $T500 $L/t500.lftp|same_tree $T500 $L/t500.lftp" \
        "sftpipe get -r|rmrf $L/t500.sp|sp_get_r $T500 $L/t500.sp|same_tree $T500 $L/t500.sp" \
        "sftpipe mirror|rmrf $L/t500.spm|sp_mirror_down $T500 $L/t500.spm|same_tree $T500 $L/t500.spm"
    rm -rf "$R"/t500.* "$L"/t500.*

    # mirror (a) fresh and (b) no-op, 500 files, each tool onto its own destination
    bench "mirror: fresh, 500 files" "rsync -a" - \
        "rsync -a|rmrf $R/m500.rsync|rsync_up $T500/ $R/m500.rsync/|same_tree $T500 $R/m500.rsync" \
        "lftp mirror -R|rmrf $R/m500.lftp|lftp_up $T500 $R/m500.lftp|same_tree $T500 $R/m500.lftp" \
        "sftpipe mirror|rmrf $R/m500.sp|sp_mirror_up $T500 $R/m500.sp|same_tree $T500 $R/m500.sp"
    bench "mirror: no-op, 500 files" "rsync -a" - \
        "rsync -a|-|rsync_up $T500/ $R/m500.rsync/|same_tree $T500 $R/m500.rsync" \
        "lftp mirror -R|-|lftp_up $T500 $R/m500.lftp|same_tree $T500 $R/m500.lftp" \
        "sftpipe mirror|-|sp_mirror_up $T500 $R/m500.sp|same_tree $T500 $R/m500.sp"

    # (d) fresh 5,000 files (loopback only), then (c) one changed file in that tree
    local ct=$T500 cn=500 cd=m500
    if ((!QUICK)); then
        ct=$T5K cn=5,000 cd=m5k
        if [ "$ROUND" = loopback ]; then
            bench "mirror: fresh, 5,000 files" "rsync -a" - \
                "rsync -a|rmrf $R/m5k.rsync|rsync_up $T5K/ $R/m5k.rsync/|same_tree $T5K $R/m5k.rsync" \
                "lftp mirror -R|rmrf $R/m5k.lftp|lftp_up $T5K $R/m5k.lftp|same_tree $T5K $R/m5k.lftp" \
                "sftpipe mirror|rmrf $R/m5k.sp|sp_mirror_up $T5K $R/m5k.sp|same_tree $T5K $R/m5k.sp"
        fi
        # each tool mirrors the tree once, untimed: a no-op sync onto the fresh copies of (d) on
        # loopback, a full mirror at rtt20 (rounds have their own destinations; lftp needs ~40 s)
        init_mirror "rsync -a" "rsync_up $T5K/ $R/m5k.rsync/"
        init_mirror "lftp mirror -R" "lftp_up $T5K $R/m5k.lftp"
        init_mirror "sftpipe mirror" "sp_mirror_up $T5K $R/m5k.sp"
    else
        INIT_FAIL=()
    fi
    bench "mirror: 1 changed of $cn files" "rsync -a" "grow_one $ct" \
        "rsync -a|prep_ok rsync -a|rsync_up $ct/ $R/$cd.rsync/|same_tree $ct $R/$cd.rsync" \
        "lftp mirror -R|prep_ok lftp mirror -R|lftp_up $ct $R/$cd.lftp|same_tree $ct $R/$cd.lftp" \
        "sftpipe mirror|prep_ok sftpipe mirror|sp_mirror_up $ct $R/$cd.sp|same_tree $ct $R/$cd.sp"
    rm -rf "$R"/m500.*
}

run_memory() {
    setup_round loopback
    ROUND=memory
    log "=== memory (sftpipe, loopback) ==="
    if ((QUICK)); then
        bench "put $BIGW" - - "sftpipe put|rmrf $R/mem.big|mem_put $BIG $R/mem.big|same_file_rm $BIG $R/mem.big"
        bench "get $BIGW" - - "sftpipe get|rmrf $L/mem.big|mem_get $BIG $L/mem.big|same_file_rm $BIG $L/mem.big"
        bench "put -r 500 files" - - "sftpipe put -r|rmrf $R/mem.t|mem_put_r $T500 $R/mem.t|same_tree $T500 $R/mem.t"
        bench "get -r 500 files" - - "sftpipe get -r|rmrf $L/mem.t|mem_get_r $T500 $L/mem.t|same_tree $T500 $L/mem.t"
    else
        log "creating a 2 GiB file and 10,000 files of 1 KiB"
        bench "put 2 GiB file" - - "sftpipe put|mkhuge $R/mem.huge|mem_put $HUGE $R/mem.huge|same_file_rm $HUGE $R/mem.huge"
        bench "get 2 GiB file" - - "sftpipe get|mkhuge $L/mem.huge|mem_get $HUGE $L/mem.huge|same_file_rm $HUGE $L/mem.huge"
        rm -f "$HUGE" "$R/mem.huge" "$L/mem.huge"
        gen_tree "$T10K" 100 100 1024
        sync -f "$WORK"
        bench "put -r 10,000 files" - - "sftpipe put -r|rmrf $R/mem.t|mem_put_r $T10K $R/mem.t|same_tree $T10K $R/mem.t"
        bench "get -r 10,000 files" - - "sftpipe get -r|rmrf $L/mem.t|mem_get_r $T10K $L/mem.t|same_tree $T10K $L/mem.t"
        rm -rf "$T10K"
    fi
    rm -rf "$R/mem.t" "$L/mem.t"
}

# ---------------------------------------------------------------------------------------------
# Several channels per session (#15): sftpipe --connections 1 and its default against ssh 'cat'
# (one channel: the ceiling), sftp, and peers that open several connections of their own

# Where the built sftpipe takes --connections: "global" (before the subcommand), "sub" (after
# it), or "" when it has none yet: its rows are then SKIPPED.
SP_CONN_AT=""
if "$BIN" --help 2>&1 | grep -q -- '--connections'; then SP_CONN_AT=global
elif "$BIN" put --help 2>&1 | grep -q -- '--connections'; then SP_CONN_AT=sub; fi
SP1="sftpipe --connections 1" SPD="sftpipe (default, 8 connections)"
CW_BIG_UP="channels: $BIGW, upload" CW_BIG_DOWN="channels: $BIGW, download"
CW_TREE_UP="channels: 500 files, put -r" CW_TREE_MIRROR="channels: mirror fresh, 500 files"

sp_conn_argv() { # N|default SUBCOMMAND: SPC_ARGV = sftpipe ... SUBCOMMAND with --connections N
    local -a c=()
    [ "$1" = default ] || c=(--connections "$1")
    if [ "$SP_CONN_AT" = global ]; then SPC_ARGV=("${SP[@]}" "${c[@]}" "$2"); else SPC_ARGV=("${SP[@]}" "$2" "${c[@]}"); fi
    SPC_ARGV+=(--progress=none)
}
# big files run under rss: sftpipe's peak RSS (KiB) goes to $WORK/log/rss
spc_put() { sp_conn_argv "$1" put; rss "${SPC_ARGV[@]}" "$2" "$H:$3"; }
spc_get() { sp_conn_argv "$1" get; rss "${SPC_ARGV[@]}" "$H:$2" "$3"; }
spc_put_r() { sp_conn_argv "$1" put; TO "${SPC_ARGV[@]}" -r "$2" "$H:$3"; }
spc_mirror_up() { sp_conn_argv "$1" mirror; TO "${SPC_ARGV[@]}" "$2" "$H:$3"; }
lftp_pget() { TO lftp --norc -c "$LFTP_OPEN; pget -n 8 $1 -o $2"; }

# rclone >= 1.64 runs an external ssh (--sftp-ssh); older ones only their own ssh library.
RCLONE_SSH=0
if rclone help flags 2>/dev/null | grep -q -- '--sftp-ssh '; then RCLONE_SSH=1; fi
RELAY_LISTEN_PID=""
: >"$WORK/ssh/rclone.conf"
setup_rclone() { # after setup_round: RCLONE=(rclone ...) reaching the test sshd like the others
    local -a r=(rclone --config "$WORK/ssh/rclone.conf" -q --retries 1 --low-level-retries 1
        --sftp-user root --sftp-disable-hashcheck --sftp-shell-type unix)
    if [ -n "$RELAY_LISTEN_PID" ]; then kill "$RELAY_LISTEN_PID" 2>/dev/null || true; RELAY_LISTEN_PID=""; fi
    if ((RCLONE_SSH)); then
        # one string split on blanks; rclone keeps a double-quoted word together
        local cmd="ssh -p $PORT ${BASE_OPTS[*]}"
        [ "$ROUND" = loopback ] || cmd+=" -o \"ProxyCommand=$PY $RELAY 127.0.0.1 $PORT ${ONE_WAY[$ROUND]}\""
        r+=(--sftp-ssh "$cmd $H")
    else
        local port=$PORT _
        if [ "$ROUND" != loopback ]; then # the same relay, as a TCP listener
            port=$(free_port)
            "$PY" "$RELAY" --listen "$port" 127.0.0.1 "$PORT" "${ONE_WAY[$ROUND]}" \
                </dev/null >/dev/null 2>>"$WORK/log/relay-listen.err" &
            RELAY_LISTEN_PID=$!
            BG_PIDS+=("$RELAY_LISTEN_PID")
            for _ in $(seq 50); do
                "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()' \
                    "$port" 2>/dev/null && break
                sleep 0.1
            done
        fi
        r+=(--sftp-host 127.0.0.1 --sftp-port "$port" --sftp-key-file "$KEY")
    fi
    RCLONE=("${r[@]}")
}
rclone_up() { TO "${RCLONE[@]}" copyto "$1" ":sftp:$2"; }
rclone_down() { TO "${RCLONE[@]}" copyto --multi-thread-streams 8 --multi-thread-cutoff 1M ":sftp:$1" "$2"; }
rclone_up_r() { TO "${RCLONE[@]}" copy --transfers 8 --checkers 8 "$1" ":sftp:$2"; }

# sp_rows ARRAY PREP_CMD_CHECK...: appends the two sftpipe rows (SP1, SPD) when it can run them;
# each argument is "prep|cmd|check" with N standing for the number of connections
sp_rows() {
    local -n rows=$1
    [ -n "$SP_CONN_AT" ] || return 0
    local t=$2 t1 td
    t1=${t//@N@/1} td=${t//@N@/default}
    rows+=("$SP1|$t1" "$SPD|$td")
}
skip_sp_rows() { # WORKLOAD: the sftpipe rows as SKIPPED when it has no --connections
    [ -z "$SP_CONN_AT" ] || return 0
    local l
    for l in "$SP1" "$SPD"; do
        ORDER+=("$ROUND|$1|$l")
        RES[$ROUND|$1|$l]="SKIPPED (this sftpipe has no --connections)"
    done
}

channels_big() {
    local -a up=() down=()
    up=("ssh cat|rmrf $R/cb.ssh|ssh_up $BIG $R/cb.ssh|same_file_rm $BIG $R/cb.ssh"
        "sftp|rmrf $R/cb.sftp|sftp_up $BIG $R/cb.sftp|same_file_rm $BIG $R/cb.sftp"
        "rclone|rmrf $R/cb.rc|rclone_up $BIG $R/cb.rc|same_file_rm $BIG $R/cb.rc")
    sp_rows up "rmrf $R/cb.sp@N@|spc_put @N@ $BIG $R/cb.sp@N@|same_file_rm $BIG $R/cb.sp@N@"
    bench "$CW_BIG_UP" sftp - "${up[@]}"
    skip_sp_rows "$CW_BIG_UP"
    down=("ssh cat|rmrf $L/cb.ssh|ssh_down $BIG $L/cb.ssh|same_file_rm $BIG $L/cb.ssh"
        "sftp|rmrf $L/cb.sftp|sftp_down $BIG $L/cb.sftp|same_file_rm $BIG $L/cb.sftp"
        "lftp pget -n 8|rmrf $L/cb.lftp|lftp_pget $BIG $L/cb.lftp|same_file_rm $BIG $L/cb.lftp"
        "rclone, 8 streams|rmrf $L/cb.rc|rclone_down $BIG $L/cb.rc|same_file_rm $BIG $L/cb.rc")
    sp_rows down "rmrf $L/cb.sp@N@|spc_get @N@ $BIG $L/cb.sp@N@|same_file_rm $BIG $L/cb.sp@N@"
    bench "$CW_BIG_DOWN" sftp - "${down[@]}"
    skip_sp_rows "$CW_BIG_DOWN"
}

channels_tree() {
    local -a up=() mir=()
    up=("rsync -a|rmrf $R/ct.rsync|rsync_up $T500/ $R/ct.rsync/|same_tree $T500 $R/ct.rsync"
        "lftp mirror -R|rmrf $R/ct.lftp|lftp_up $T500 $R/ct.lftp|same_tree $T500 $R/ct.lftp"
        "rclone copy --transfers 8|rmrf $R/ct.rc|rclone_up_r $T500 $R/ct.rc|same_tree $T500 $R/ct.rc")
    sp_rows up "rmrf $R/ct.sp@N@|spc_put_r @N@ $T500 $R/ct.sp@N@|same_tree $T500 $R/ct.sp@N@"
    bench "$CW_TREE_UP" "rsync -a" - "${up[@]}"
    skip_sp_rows "$CW_TREE_UP"
    mir=("rsync -a|rmrf $R/ct.rsync|rsync_up $T500/ $R/ct.rsync/|same_tree $T500 $R/ct.rsync"
        "lftp mirror -R|rmrf $R/ct.lftp|lftp_up $T500 $R/ct.lftp|same_tree $T500 $R/ct.lftp")
    sp_rows mir "rmrf $R/ct.spm@N@|spc_mirror_up @N@ $T500 $R/ct.spm@N@|same_tree $T500 $R/ct.spm@N@"
    bench "$CW_TREE_MIRROR" "rsync -a" - "${mir[@]}"
    skip_sp_rows "$CW_TREE_MIRROR"
    rm -rf "$R"/ct.*
}

run_channels() { # COND: the #15 rows selected for this condition
    local big=0 tree=0
    if want big "$1"; then big=1; fi
    if want tree "$1"; then tree=1; fi
    ((big || tree)) || return 0
    setup_round "$1"
    setup_rclone
    log "=== several channels (#15), round $ROUND$([ -n "$SP_CONN_AT" ] || echo ': sftpipe has no --connections, its rows are SKIPPED') ==="
    if ! TO "${SSH[@]}" "$H" true </dev/null 2>"$WORK/log/err"; then
        log "warning: ssh to the test sshd fails in round $ROUND: $(first_line "$WORK/log/err")"
    fi
    if ((big)); then channels_big; fi
    if ((tree)); then channels_tree; fi
}

target_channels() { # the #15 targets for the conditions that ran
    local c dir
    if want big rtt100; then
        target "$BIGW put ≤ 0.2× sftp (rtt100)" "rtt100|$CW_BIG_UP|$SPD" "rtt100|$CW_BIG_UP|sftp" 0.2
        target "$BIGW get ≤ 0.2× sftp (rtt100)" "rtt100|$CW_BIG_DOWN|$SPD" "rtt100|$CW_BIG_DOWN|sftp" 0.2
        target "$BIGW get ≤ 0.5× lftp pget -n 8 (rtt100)" "rtt100|$CW_BIG_DOWN|$SPD" "rtt100|$CW_BIG_DOWN|lftp pget -n 8" 0.5
    fi
    if want big rtt20; then
        target "$BIGW put ≤ 0.5× sftp (rtt20)" "rtt20|$CW_BIG_UP|$SPD" "rtt20|$CW_BIG_UP|sftp" 0.5
        target "$BIGW get ≤ 0.5× sftp (rtt20)" "rtt20|$CW_BIG_DOWN|$SPD" "rtt20|$CW_BIG_DOWN|sftp" 0.5
    fi
    if want big loopback; then
        target "$BIGW put ≤ 1.0× --connections 1 (loopback)" "loopback|$CW_BIG_UP|$SPD" "loopback|$CW_BIG_UP|$SP1"
        target "$BIGW get ≤ 1.0× --connections 1 (loopback)" "loopback|$CW_BIG_DOWN|$SPD" "loopback|$CW_BIG_DOWN|$SP1"
    fi
    if want tree rtt100; then
        target "500 files put -r ≤ 0.9× rsync (rtt100)" "rtt100|$CW_TREE_UP|$SPD" "rtt100|$CW_TREE_UP|rsync -a" 0.9
        target "mirror fresh 500 files ≤ 0.9× rsync (rtt100)" "rtt100|$CW_TREE_MIRROR|$SPD" "rtt100|$CW_TREE_MIRROR|rsync -a" 0.9
    fi
    for c in loopback rtt20 rtt100; do
        want big "$c" || continue
        for dir in "$CW_BIG_UP" "$CW_BIG_DOWN"; do
            local kb=${RSS[$c|$dir|$SPD]:-} name="peak RSS, $SPD, ${dir#channels: } ($c) < 64 MiB"
            if [[ ${RES[$c|$dir|$SPD]:-} == SKIPPED* ]]; then TARGETS+=("| $name | – | SKIPPED |")
            elif isnum "$kb"; then
                local res=FAIL
                ((kb < 65536)) && res=PASS
                TARGETS+=("| $name | $(awk -v k="$kb" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $res |")
            else TARGETS+=("| $name | ${RES[$c|$dir|$SPD]:-not run} | FAIL |"); fi
        done
    done
}

# scp fallback rows (issue 18): sftpipe against a second sshd WITHOUT the SFTP subsystem, so it
# falls back to the legacy scp protocol by itself (the failed SFTP attempt is in the time), beside
# OpenSSH's scp -O (legacy protocol) against the same server; rtt20 only. Targets: the 500-file
# tree upload <= 0.5x scp -O -r, the 512 MiB file <= 1.0x scp -O. The big file also runs with
# --scp (no SFTP attempt first): the difference is what finding out costs (one ssh connection).

SCP_SSHD_PID=""
start_scp_sshd() { # a copy of the main sshd's config without its Subsystem line
    local cfg=$WORK/ssh/sshd_config.noscp pidfile=$WORK/ssh/sshd.noscp.pid attempt
    for attempt in 1 2 3 4 5; do
        SCP_PORT=$(free_port)
        grep -v -e '^Subsystem' -e '^Port' -e '^PidFile' "$WORK/ssh/sshd_config" >"$cfg"
        printf 'Port %s\nPidFile %s\n' "$SCP_PORT" "$pidfile" >>"$cfg"
        rm -f "$pidfile"
        run_sshd -f "$cfg" -E "$WORK/ssh/sshd.noscp.log" || continue
        for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
        [ -s "$pidfile" ] || continue
        SCP_SSHD_PID=$(cat "$pidfile")
        for _ in $(seq 50); do
            timeout 10 ssh -p "$SCP_PORT" "${BASE_OPTS[@]}" "$H" true </dev/null 2>/dev/null && return 0
            sleep 0.1
        done
        kill "$SCP_SSHD_PID" 2>/dev/null || true
        SCP_SSHD_PID=""
    done
    die "could not start the sshd without SFTP"
}
scpo_up() { TO "${SCPO[@]}" "$1" "$H:$2"; }
scpo_down() { TO "${SCPO[@]}" "$H:$1" "$2"; }
scpo_up_r() { TO "${SCPO[@]}" -r "$1" "$H:$2"; }
scpo_down_r() { TO "${SCPO[@]}" -r "$H:$1" "$2"; }
spf_put() { TO "${SPF[@]}" put --progress=none "$1" "$H:$2"; }
spf_get() { TO "${SPF[@]}" get --progress=none "$H:$1" "$2"; }
spf_put_r() { TO "${SPF[@]}" put -r --progress=none "$1" "$H:$2"; }
spf_get_r() { TO "${SPF[@]}" get -r --progress=none "$H:$1" "$2"; }
spx_put() { TO "${SPF[@]}" --scp put --progress=none "$1" "$H:$2"; } # --scp: no SFTP attempt first
spx_get() { TO "${SPF[@]}" --scp get --progress=none "$H:$1" "$2"; }

run_scp_fallback() {
    start_scp_sshd
    setup_round rtt20
    ROUND=scp-rtt20
    local pc="ProxyCommand=$PY $RELAY 127.0.0.1 $SCP_PORT 0.010"
    SCPO=(scp -O -q -P "$SCP_PORT" "${BASE_OPTS[@]}" -o "$pc")
    SPF=("$BIN" -q -P "$SCP_PORT" "${BASE_OPTS[@]}" -o "$pc")
    log "=== scp fallback (sshd without SFTP on port $SCP_PORT, rtt20) ==="
    bench "500 files, upload" "scp -O -r" - \
        "scp -O -r|rmrf $R/f500.scp|scpo_up_r $T500 $R/f500.scp|same_tree $T500 $R/f500.scp" \
        "sftpipe put -r (scp)|rmrf $R/f500.sp|spf_put_r $T500 $R/f500.sp|same_tree $T500 $R/f500.sp"
    bench "500 files, download" "scp -O -r" - \
        "scp -O -r|rmrf $L/f500.scp|scpo_down_r $T500 $L/f500.scp|same_tree $T500 $L/f500.scp" \
        "sftpipe get -r (scp)|rmrf $L/f500.sp|spf_get_r $T500 $L/f500.sp|same_tree $T500 $L/f500.sp"
    bench "$BIGW, upload" "scp -O" - \
        "scp -O|rmrf $R/fbig.scp|scpo_up $BIG $R/fbig.scp|same_file_rm $BIG $R/fbig.scp" \
        "sftpipe put (scp)|rmrf $R/fbig.sp|spf_put $BIG $R/fbig.sp|same_file_rm $BIG $R/fbig.sp" \
        "sftpipe --scp put|rmrf $R/fbig.spx|spx_put $BIG $R/fbig.spx|same_file_rm $BIG $R/fbig.spx"
    bench "$BIGW, download" "scp -O" - \
        "scp -O|rmrf $L/fbig.scp|scpo_down $BIG $L/fbig.scp|same_file_rm $BIG $L/fbig.scp" \
        "sftpipe get (scp)|rmrf $L/fbig.sp|spf_get $BIG $L/fbig.sp|same_file_rm $BIG $L/fbig.sp" \
        "sftpipe --scp get|rmrf $L/fbig.spx|spx_get $BIG $L/fbig.spx|same_file_rm $BIG $L/fbig.spx"
    rm -rf "$R"/f500.* "$L"/f500.*
    kill "$SCP_SSHD_PID" 2>/dev/null || true
    SCP_SSHD_PID=""
}

scp_fallback_targets() { # target() with a factor: NAME KEY REFKEY FACTOR
    local v=${RES[$2]:-} r=${RES[$3]:-} q res
    if ! isnum "$v" || ! isnum "$r"; then
        [ -z "$v$r" ] || TARGETS+=("| $1 | ${v%% (*} vs ${r%% (*} | FAIL |")
        return
    fi
    q=$(ratio "$v" "$r")
    if awk -v a="$v" -v b="$r" -v f="$4" 'BEGIN { exit !(a <= b * f) }'; then res=PASS; else res=FAIL; fi
    TARGETS+=("| $1 | $(printf '%.2f' "$v") s vs $(printf '%.2f' "$r") s = ${q}× | $res |")
}
# ---------------------------------------------------------------------------------------------
# Large trees (#17), only with --cases many: a 50,000-file tree (4 KiB files, 50 dirs, made
# each run) and a 1,000,000-file tree (100 bytes, 1,000 dirs, made once and kept in
# $BENCH_CACHE), each as fresh mirror, no-op mirror, 1 changed file and get -r, next to rsync -a.
# sftpipe runs under /usr/bin/time: its peak RSS (%M) and client CPU (user + sys of sftpipe and
# its ssh child) per file are reported.

MANY_DIV=${BENCH_MANY_DIV:-1}
MANY_CACHE=${BENCH_CACHE:-/var/tmp/sftpipe-bench-cache}
MANY_CPU_TARGET_US=22.5 # half of the 45 µs per file #17 measured

commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
many_n() { # FILES_PER_DIR: scaled down by BENCH_MANY_DIV, at least 8 (grow_one changes f0007)
    local n=$(($1 / MANY_DIV))
    echo $((n < 8 ? 8 : n))
}
many_trees() { # sets T50K_DIR M50K T1M_DIR M1M (trees and their file counts, as labels)
    local n50 n1m d1m
    n50=$(many_n 1000) n1m=1000 d1m=$((1000 / MANY_DIV))
    ((d1m >= 10)) || d1m=10
    T50K_DIR=$WORK/src/t50k M50K=$(commas $((50 * n50)))
    if [ ! -d "$T50K_DIR" ]; then
        log "creating $M50K files of 4 KiB in 50 dirs"
        gen_tree "$T50K_DIR" 50 "$n50" 4096
    fi
    T1M_DIR=$MANY_CACHE/t1m-${d1m}x${n1m}x100 M1M=$(commas $((d1m * n1m)))
    if [ ! -e "$T1M_DIR/.complete" ]; then
        log "creating $M1M files of 100 bytes in $d1m dirs, once, in $T1M_DIR (kept for later runs)"
        rm -rf "$T1M_DIR"
        gen_tree "$T1M_DIR/tree" "$d1m" "$n1m" 100
        touch "$T1M_DIR/.complete"
    fi
    T1M_DIR=$T1M_DIR/tree
    sync -f "$WORK"
}

# many_sp KEY SFTPIPE-ARGS...: sftpipe under /usr/bin/time; the peak RSS goes where bench()
# reads it, and "ROUND|KEY user sys" is appended to cpu.all
many_sp() {
    local key=$1 rc=0
    shift
    TO /usr/bin/time -o "$WORK/log/time" -f '%U %S %M' "${SP[@]}" "$@" --progress=none || rc=$?
    if [ -s "$WORK/log/time" ]; then
        awk '{ print $3 }' "$WORK/log/time" >"$WORK/log/rss"
        echo "$ROUND|$key $(awk '{ print $1, $2 }' "$WORK/log/time")" >>"$WORK/log/cpu.all"
    fi
    return "$rc"
}
many_mirror() { many_sp "$1" mirror "$2" "$H:$3"; }
many_put_r() { many_sp "$1" put -r "$2" "$H:$3"; }
many_get_r() { many_sp "$1" get -r "$H:$2" "$3"; }

many_rows() { # TAG TREE FILES: the four workloads on one tree
    local tag=$1 t=$2 n=$3
    bench "mirror: fresh, $n files" "rsync -a" - \
        "rsync -a|rmrf $R/$tag.rsync|rsync_up $t/ $R/$tag.rsync/|same_tree $t $R/$tag.rsync" \
        "sftpipe mirror|rmrf $R/$tag.sp|many_mirror $tag-fresh $t $R/$tag.sp|same_tree $t $R/$tag.sp"
    if [ "$tag" = m50k ]; then
        bench "put -r, $n files" "rsync -a" - \
            "rsync -a|rmrf $R/$tag.rsync|rsync_up $t/ $R/$tag.rsync/|same_tree $t $R/$tag.rsync" \
            "sftpipe put -r|rmrf $R/$tag.spp|many_put_r $tag-put $t $R/$tag.spp|same_tree $t $R/$tag.spp"
        rm -rf "$R/$tag.spp"
    fi
    bench "mirror: no-op, $n files" "rsync -a" - \
        "rsync -a|-|rsync_up $t/ $R/$tag.rsync/|same_tree $t $R/$tag.rsync" \
        "sftpipe mirror|-|many_mirror $tag-noop $t $R/$tag.sp|same_tree $t $R/$tag.sp"
    INIT_FAIL=()
    bench "mirror: 1 changed of $n files" "rsync -a" "grow_one $t" \
        "rsync -a|-|rsync_up $t/ $R/$tag.rsync/|same_tree $t $R/$tag.rsync" \
        "sftpipe mirror|-|many_mirror $tag-changed $t $R/$tag.sp|same_tree $t $R/$tag.sp"
    rm -rf "$R/$tag".*
    bench "get -r, $n files" "rsync -a" - \
        "rsync -a|rmrf $L/$tag.rsync|rsync_down $t/ $L/$tag.rsync/|same_tree $t $L/$tag.rsync" \
        "sftpipe get -r|rmrf $L/$tag.sp|many_get_r $tag-get $t $L/$tag.sp|same_tree $t $L/$tag.sp"
    rm -rf "$L/$tag".*
}

run_many() { # COND
    want many "$1" || return 0
    [ -n "${T50K_DIR:-}" ] || many_trees
    setup_round "$1"
    ROUND="many-$1"
    log "=== large trees (#17), $1 ==="
    many_rows m50k "$T50K_DIR" "$M50K"
    many_rows m1m "$T1M_DIR" "$M1M"
}

many_cpu() { # ROUND KEY: median user+sys seconds of sftpipe's runs, or nothing
    local v
    v=$(grep -F "$1|$2 " "$WORK/log/cpu.all" 2>/dev/null | awk '{ print $2 + $3 }' || true)
    [ -z "$v" ] || median <<<"$v"
}

target_many() {
    local c r
    if want classic rtt20; then
        target "get -r 500 files ≤ 1.0× rsync (rtt20)" "rtt20|500 files, download|sftpipe get -r" "rtt20|500 files, download|rsync -a"
    fi
    for c in loopback rtt20 rtt100; do
        want many "$c" || continue
        r=many-$c
        target "mirror fresh $M50K files ≤ 1.0× rsync ($c)" "$r|mirror: fresh, $M50K files|sftpipe mirror" "$r|mirror: fresh, $M50K files|rsync -a"
        target "put -r $M50K files ≤ 1.0× rsync ($c)" "$r|put -r, $M50K files|sftpipe put -r" "$r|put -r, $M50K files|rsync -a"
        target "mirror no-op $M50K files ≤ 1.0× rsync ($c)" "$r|mirror: no-op, $M50K files|sftpipe mirror" "$r|mirror: no-op, $M50K files|rsync -a"
        target "mirror 1 changed of $M50K files ≤ 1.0× rsync ($c)" "$r|mirror: 1 changed of $M50K files|sftpipe mirror" "$r|mirror: 1 changed of $M50K files|rsync -a"
        target "mirror no-op $M1M files ≤ 1.0× rsync ($c)" "$r|mirror: no-op, $M1M files|sftpipe mirror" "$r|mirror: no-op, $M1M files|rsync -a"
        many_target_cpu "$c" m50k-fresh "mirror fresh" "$M50K"
        many_target_cpu "$c" m50k-put "put -r" "$M50K"
        many_target_rss "$c" "mirror: fresh, $M1M files"
        many_target_rss "$c" "mirror: no-op, $M1M files"
    done
}
many_target_cpu() { # COND KEY WHAT FILES: client CPU per file ≤ MANY_CPU_TARGET_US
    local name="client CPU per file, $3 $4 files ($1) ≤ $MANY_CPU_TARGET_US µs" s us
    s=$(many_cpu "many-$1" "$2")
    if ! isnum "$s"; then TARGETS+=("| $name | not measured | FAIL |"); return; fi
    us=$(awk -v s="$s" -v n="${4//,/}" 'BEGIN { printf "%.1f", s / n * 1e6 }')
    if awk -v u="$us" -v t="$MANY_CPU_TARGET_US" 'BEGIN { exit !(u <= t) }'; then r=PASS; else r=FAIL; fi
    TARGETS+=("| $name | $us µs ($s s user + sys) | $r |")
}
many_target_rss() { # COND WORKLOAD: sftpipe's peak RSS ≤ 256 MiB
    local key="many-$1|$2|sftpipe mirror" name="peak RSS, $2 ($1) ≤ 256 MiB" kb=${RSS[many-$1|$2|sftpipe mirror]:-} r=FAIL
    if isnum "${RES[$key]:-}" && isnum "$kb"; then
        ((kb <= 262144)) && r=PASS
        TARGETS+=("| $name | $(awk -v k="$kb" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $r |")
    else
        TARGETS+=("| $name | ${RES[$key]:-not run} | FAIL |")
    fi
}
many_report() { # sftpipe's peak RSS and CPU per file on the large trees
    grep -q . "$WORK/log/cpu.all" 2>/dev/null || return 0
    local key round workload peer kb tag s n
    echo
    echo "## large trees (#17): sftpipe's peak RSS and client CPU"
    echo
    echo "| round | workload | peak RSS | client CPU (user + sys, incl. ssh) | per file |"
    echo "|---|---|---:|---:|---:|"
    for key in "${ORDER[@]}"; do
        IFS='|' read -r round workload peer <<<"$key"
        [[ $round == many-* && $peer == sftpipe* ]] || continue
        kb=${RSS[$key]:-}
        n=$(sed -n 's/.* \([0-9,]*\) files$/\1/p' <<<"$workload")
        case $workload in
            "mirror: fresh, $M50K"*) tag=m50k-fresh ;; "put -r, $M50K"*) tag=m50k-put ;;
            "mirror: no-op, $M50K"*) tag=m50k-noop ;; *"changed of $M50K"*) tag=m50k-changed ;;
            "get -r, $M50K"*) tag=m50k-get ;; "mirror: fresh, $M1M"*) tag=m1m-fresh ;;
            "mirror: no-op, $M1M"*) tag=m1m-noop ;; *"changed of $M1M"*) tag=m1m-changed ;;
            "get -r, $M1M"*) tag=m1m-get ;; *) tag=none ;;
        esac
        s=$(many_cpu "$round" "$tag")
        echo "| ${round#many-} | $workload | $(isnum "$kb" && awk -v k="$kb" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo –) | $(isnum "$s" && echo "$s s" || echo –) | $(isnum "$s" && awk -v s="$s" -v n="${n//,/}" 'BEGIN { if (n > 0) printf "%.1f µs", s / n * 1e6 }' || echo –) |"
    done
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for c in loopback rtt20 rtt100; do if want classic $c; then run_round $c; fi; done
if want memory loopback; then run_memory; fi
for c in loopback rtt20 rtt100; do run_channels $c; done
if want scp rtt20; then run_scp_fallback; fi
for c in loopback rtt20 rtt100; do run_many $c; done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
TOTAL=$(elapsed)

# ---------------------------------------------------------------------------------------------
# Report

isnum() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

declare -a TARGETS=()
target() { # NAME KEY REFKEY [FACTOR]: PASS when KEY's seconds <= FACTOR (default 1) x REFKEY's
    local name=$1 v=${RES[$2]:-} r=${RES[$3]:-} f=${4:-1} q result value
    if [ -z "$v" ] || [ -z "$r" ]; then
        TARGETS+=("| $name | – | SKIPPED (not run) |")
        return
    fi
    if [[ $v == SKIPPED* ]]; then TARGETS+=("| $name | ${v//|/\\|} | SKIPPED |"); return; fi
    if ! isnum "$v"; then TARGETS+=("| $name | sftpipe: ${v%% (*} | FAIL |"); return; fi
    if ! isnum "$r"; then TARGETS+=("| $name | reference: ${r%% (*} | n/a |"); return; fi
    q=$(ratio "$v" "$r")
    value="$(printf '%.2f' "$v") s vs $(printf '%.2f' "$r") s = ${q}×"
    if awk -v a="$v" -v b="$r" -v f="$f" 'BEGIN { exit !(a <= b * f) }'; then result=PASS; else result=FAIL; fi
    TARGETS+=("| $name | $value | $result |")
}

report() {
    local round key workload peer v ref rv cur=""
    echo "# sftpipe benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "- load average at start: $LOAD_START; at end: $LOAD_END (other load makes numbers noisy)"
    echo "- sftpipe: $("$BIN" --version 2>&1 | head -1) ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ', modified tree')); $(ssh -V 2>&1); $(rsync --version | head -1 | sed 's/  */ /g'); lftp $(lftp --version | head -1 | sed -n 's/.*Version \([^ ]*\).*/\1/p')"
    echo "- ssh cipher: $(ssh -v -p "$PORT" "${BASE_OPTS[@]}" "$H" true </dev/null 2>&1 | sed -n 's/.*kex: client->server cipher: \([^ ]*\).*/\1/p' | head -1)"
    echo "- data on: $DATA_ON"
    echo "- options: repeat=$REPEAT (median)$( ((QUICK)) && echo ', --quick')${ONLY:+, --only $ONLY}${CASES:+, --cases $CASES}; big file ${BIG_MIB} MiB; total run time ${TOTAL} s"
    echo "- rtt20 / rtt100 = ssh ProxyCommand delay-relay.py, 10 / 50 ms each way; ratio = seconds / seconds of the reference peer (1.00 = as fast; lower is better)"
    echo "- rclone: $(rclone version 2>/dev/null | head -1); $( ((RCLONE_SSH)) && echo 'with --sftp-ssh (the same ssh command)' || echo 'its own ssh library (no --sftp-ssh in this version), delays by delay-relay.py --listen')"
    echo "- sftpipe --connections: $(case $SP_CONN_AT in global) echo 'global option' ;; sub) echo 'subcommand option' ;; *) echo 'not supported by this build: its #15 rows are SKIPPED' ;; esac)"
    for key in "${ORDER[@]}"; do
        IFS='|' read -r round workload peer <<<"$key"
        [ "$round" != memory ] || continue
        if [ "$round" != "$cur" ]; then
            cur=$round
            echo
            case $round in
                loopback) echo "## loopback (direct)" ;;
                rtt20) echo "## rtt20 (20 ms RTT)" ;;
                scp-rtt20) echo "## scp fallback: sshd without SFTP (20 ms RTT)" ;;
                many-*) echo "## large trees (#17), ${round#many-}" ;;
                *) echo "## $round (${round#rtt} ms RTT)" ;;
            esac
            echo
            echo "| workload | peer | seconds | ratio |"
            echo "|---|---|---:|---:|"
        fi
        v=${RES[$key]}
        ref=${REF[$round|$workload]}
        rv=${RES[$round|$workload|$ref]:-}
        if isnum "$v"; then
            if isnum "$rv"; then
                echo "| $workload | $peer | $(printf '%.2f' "$v") | $(ratio "$v" "$rv")× vs $ref |"
            else
                echo "| $workload | $peer | $(printf '%.2f' "$v") | n/a |"
            fi
        else
            echo "| $workload | $peer | ${v//|/\\|} | – |"
        fi
    done
    echo
    echo "## memory (sftpipe, loopback)"
    echo
    if ! printf '%s\n' "${ORDER[@]}" | grep -q '^memory|'; then
        echo "not run"
    else
        echo "| workload | peak RSS | seconds | < 64 MiB |"
        echo "|---|---:|---:|---|"
        for key in "${ORDER[@]}"; do
            IFS='|' read -r round workload peer <<<"$key"
            [ "$round" = memory ] || continue
            v=${RES[$key]}
            local kb=${RSS[$key]:-}
            if isnum "$v" && isnum "$kb"; then
                local res=FAIL
                ((kb < 65536)) && res=PASS
                echo "| $workload | $(awk -v k="$kb" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $(printf '%.2f' "$v") | $res |"
                TARGETS+=("| peak RSS, $workload < 64 MiB | $(awk -v k="$kb" 'BEGIN { printf "%.1f MiB", k / 1024 }') | $res |")
            else
                echo "| $workload | – | ${v//|/\\|} | FAIL |"
                TARGETS+=("| peak RSS, $workload < 64 MiB | ${v%% (*} | FAIL |")
            fi
        done
    fi
    many_report
    echo
    echo "## targets"
    echo
    echo "| target | measured | result |"
    echo "|---|---|---|"
    printf '%s\n' "${TARGETS[@]}"
    local pass fail skip
    pass=$(printf '%s\n' "${TARGETS[@]}" | grep -c '| PASS |$' || true)
    fail=$(printf '%s\n' "${TARGETS[@]}" | grep -c '| FAIL |$' || true)
    skip=$((${#TARGETS[@]} - pass - fail))
    echo
    echo "$pass passed, $fail failed, $skip not evaluated"
    local nfail=0
    for key in "${ORDER[@]}"; do [[ ${RES[$key]} != FAILED* ]] || nfail=$((nfail + 1)); done
    ((nfail == 0)) || echo "$nfail measurement(s) FAILED (see the tables)"
}

for c in loopback rtt20; do
    want classic $c || continue
    target "$BIGW put ≤ 1.0× sftp ($c)" "$c|$BIGW, upload|sftpipe put" "$c|$BIGW, upload|sftp"
    target "$BIGW get ≤ 1.0× sftp ($c)" "$c|$BIGW, download|sftpipe get" "$c|$BIGW, download|sftp"
done
if want classic rtt20; then
    target "500 files put -r ≤ 1.0× rsync (rtt20)" "rtt20|500 files, upload|sftpipe put -r" "rtt20|500 files, upload|rsync -a"
    target "mirror fresh 500 files ≤ 1.0× rsync (rtt20)" "rtt20|mirror: fresh, 500 files|sftpipe mirror" "rtt20|mirror: fresh, 500 files|rsync -a"
    target "mirror no-op 500 files ≤ 1.0× rsync (rtt20)" "rtt20|mirror: no-op, 500 files|sftpipe mirror" "rtt20|mirror: no-op, 500 files|rsync -a"
    if ((QUICK)); then cw="mirror: 1 changed of 500 files"; else cw="mirror: 1 changed of 5,000 files"; fi
    target "$cw ≤ 1.0× rsync (rtt20)" "rtt20|$cw|sftpipe mirror" "rtt20|$cw|rsync -a"
fi
if want classic loopback && ((!QUICK)); then
    target "mirror fresh 5,000 files ≤ 1.0× rsync (loopback)" "loopback|mirror: fresh, 5,000 files|sftpipe mirror" "loopback|mirror: fresh, 5,000 files|rsync -a"
fi
target_channels
target_many

scp_fallback_targets "scp fallback: 500 files put -r ≤ 0.5× scp -O -r (rtt20)" "scp-rtt20|500 files, upload|sftpipe put -r (scp)" "scp-rtt20|500 files, upload|scp -O -r" 0.5
scp_fallback_targets "scp fallback: $BIGW put ≤ 1.0× scp -O (rtt20)" "scp-rtt20|$BIGW, upload|sftpipe put (scp)" "scp-rtt20|$BIGW, upload|scp -O" 1.0

report >"$WORK/report.md"
cat "$WORK/report.md"
if [ -n "$OUT" ]; then cp "$WORK/report.md" "$OUT"; fi
log "done in ${TOTAL} s"
exit
}
