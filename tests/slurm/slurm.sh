#!/usr/bin/env bash
# A single-node SLURM on localhost, for tests/slurm/test_slurm.py (see
# /work/shared/notes/slurm-localhost.md): Debian's slurm-wlm and munge, no accounting database,
# daemons started by hand (no systemd).
#
#   tests/slurm/slurm.sh start   install (apt, as root) if needed, configure, start, wait for the node
#   tests/slurm/slurm.sh stop    stop the daemons this script started (by their pid files)
#
# Exit status of start: 0 ready; 3 SLURM cannot be set up here (not root, no apt, a slurm.conf
# that is not ours): the test skips, printing the reason; anything else is a failure.
set -uo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# isonet single-node test cluster"
STARTED=/run/isonet-slurm-test.started   # pid files of the daemons this script started

say() { echo "slurm.sh: $*" >&2; }
cannot() { say "cannot set up SLURM: $*"; exit 3; }

node_state() { sinfo -h -n localhost -o %t 2>/dev/null | head -1; }

install() {
    if command -v slurmctld >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || cannot "slurm-wlm/munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and there is no apt-get"
    say "installing slurm-wlm, slurm-client and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || cannot "apt-get update failed"
    apt-get install -y -qq slurm-wlm slurm-client munge >/dev/null || cannot "apt-get install failed"
}

configure() {
    if [ -f "$CONF" ] && ! grep -q "^$MARK" "$CONF"; then
        cannot "$CONF exists and was not written by this script; not touching a real cluster's configuration"
    fi
    [ -w /etc/slurm ] || [ "$(id -u)" = 0 ] || cannot "cannot write $CONF (not root)"
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARK (tests/slurm/slurm.sh); safe to delete.
ClusterName=test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install
    configure
    touch "$STARTED"
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        su -s /bin/sh munge -c /usr/sbin/munged || cannot "munged did not start"
        echo /run/munge/munged.pid >>"$STARTED"
    fi
    mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    if ! pgrep -x slurmctld >/dev/null; then
        /usr/sbin/slurmctld || { say "slurmctld did not start"; tail -5 /var/log/slurm/slurmctld.log >&2; exit 1; }
        echo /run/slurmctld.pid >>"$STARTED"
    fi
    if ! pgrep -x slurmd >/dev/null; then
        /usr/sbin/slurmd -N localhost || { say "slurmd did not start"; tail -5 /var/log/slurm/slurmd.log >&2; exit 1; }
        echo /run/slurmd.pid >>"$STARTED"
    fi
    local state=""
    for _ in $(seq 60); do
        state=$(node_state)
        case "$state" in
            idle|mix|alloc) say "node localhost is $state"; sinfo >&2; return 0 ;;
            down*|drain*) scontrol update nodename=localhost state=resume 2>/dev/null ;;
        esac
        sleep 1
    done
    say "node localhost not idle after 60 s (state '$state')"
    tail -5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
    exit 1
}

stop() {
    [ -f "$STARTED" ] || { say "nothing started by this script"; return 0; }
    # slurmd first, then slurmctld, munged last
    for pidfile in $(tac "$STARTED"); do
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null && say "stopped $(basename "$pidfile" .pid) ($pid)"
        fi
    done
    rm -f "$STARTED"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
