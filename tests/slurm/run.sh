#!/usr/bin/env bash
# A real one-node Slurm on this machine: installs Debian's slurm-wlm and munge, starts munged,
# slurmctld and slurmd with a minimal slurm.conf, submits a 2 x 1 grid with 2 repeats as a
# 4-task job array plus a merge job (`deopt sweep --slurm --submit`), waits for them, and checks
# that the merged summary.csv equals the same sweep run here unsharded. With --with-kill it then
# cancels one task of a second submission mid-run, checks that the merge refuses the
# incomplete shards, resubmits that index, merges, and checks again (CI leaves this out for
# time; the README and the closing notes give its output). It stops the daemons it started.
# Needs root (as CI is). Usage: tests/slurm/run.sh [DEOPT_BINARY] [--with-kill]
set -euo pipefail
cd "$(dirname "$0")/../.."
DEOPT=$(realpath "${1:-target/release/deopt}")
WITH_KILL=${2:-}
WORK=$(mktemp -d /tmp/deopt-slurm-XXXXXX)
LIMIT_S=${DEOPT_SLURM_WAIT_S:-900}
log() { echo "slurm test: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST=$(hostname)
CPUS=$(nproc)
CONF_DIR=$WORK/etc
mkdir -p "$CONF_DIR" "$WORK/spool/ctld" "$WORK/spool/d" "$WORK/run"
export SLURM_CONF=$CONF_DIR/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=deopt-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/spool/ctld
SlurmdSpoolDir=$WORK/spool/d
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerParameters=kill_invalid_depend
MpiDefault=none
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# munge: a random key readable by the munge user only, the daemon as that user.
STARTED=()
cleanup() {
    for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    pkill -f "slurmd -D -f $SLURM_CONF" 2>/dev/null || true
    pkill -f "slurmctld -D -f $SLURM_CONF" 2>/dev/null || true
    if [ -n "${MUNGE_PID:-}" ]; then kill "$MUNGE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
if ! pgrep -x munged >/dev/null; then
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
    MUNGE_PID=$(pgrep -x munged | head -1)
fi

slurmctld -D -f "$SLURM_CONF" >"$WORK/slurmctld.out" 2>&1 &
STARTED+=($!)
slurmd -D -f "$SLURM_CONF" >"$WORK/slurmd.out" 2>&1 &
STARTED+=($!)
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then break; fi
    sleep 1
done
sinfo -h -o '%P %D %T %c' | sed 's/^/slurm test: sinfo: /' >&2
sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)' || { log "the node did not come up"; tail -5 "$WORK"/slurm*.log >&2; exit 1; }

GRID=(sweep --country SAU --mutation 0.5,0.8 --recombination 0.9 --repeats 2 --tokens 2 --pop 6 --gens 2 --seed 3)

# wait_jobs ID...: until none of them is in the queue (bounded).
wait_jobs() {
    local t0=$SECONDS
    while squeue -h -j "$(IFS=,; echo "$*")" 2>/dev/null | grep -q .; do
        if (( SECONDS - t0 > LIMIT_S )); then log "jobs $* still queued after ${LIMIT_S} s"; squeue >&2; exit 1; fi
        sleep 2
    done
}

# 1. The reference: the same sweep, unsharded, here.
"$DEOPT" "${GRID[@]}" --out "$WORK/reference" >/dev/null 2>"$WORK/reference.err"

# 2. On Slurm: 4 array tasks + merge.
"$DEOPT" "${GRID[@]}" --out "$WORK/cluster" --slurm --submit --slurm-cpus 1 >"$WORK/submit.out"
cat "$WORK/submit.out" | sed 's/^/slurm test: /' >&2
read -r ARRAY MERGE < <(sed -n 's/^submitted array job \([0-9]*\) .* merge job \([0-9]*\) .*/\1 \2/p' "$WORK/submit.out")
[ -n "$ARRAY" ] && [ -n "$MERGE" ] || { log "no job ids in the submit output"; exit 1; }
squeue -h -o '%i %j %T' | sed 's/^/slurm test: squeue: /' >&2 || true
wait_jobs "$ARRAY" "$MERGE"
scontrol show job "$MERGE" 2>/dev/null | grep -o 'JobState=[A-Z]*' | sed 's/^/slurm test: merge /' >&2 || true
cmp "$WORK/reference/summary.csv" "$WORK/cluster/summary.csv" || {
    log "merged summary.csv differs from the unsharded one"; tail -n 20 "$WORK"/cluster/slurm/logs/*.log >&2; exit 1; }
log "merged summary.csv equals the unsharded sweep's:"
sed 's/^/slurm test:   /' "$WORK/cluster/summary.csv" >&2

if [ "$WITH_KILL" != "--with-kill" ]; then
    rm -rf "$WORK"
    echo "slurm: 1 passed, 0 failed"
    exit 0
fi

# 3. A task killed mid-run: scancel task 2 once its run has a checkpoint, resubmit index 2.
"$DEOPT" "${GRID[@]}" --out "$WORK/killed" --slurm --slurm-cpus 1 >/dev/null
ARRAY2=$(sbatch --parsable "$WORK/killed/slurm/array.sbatch")
t0=$SECONDS
until ls "$WORK"/killed/shards/2/runs/*/checkpoint.json >/dev/null 2>&1; do
    (( SECONDS - t0 > LIMIT_S )) && { log "task 2 wrote no checkpoint"; exit 1; }
    sleep 1
done
scancel "${ARRAY2}_2"
log "cancelled task ${ARRAY2}_2 mid-run"
wait_jobs "$ARRAY2"
if "$DEOPT" sweep merge "$WORK"/killed/shards/{1,2,3,4} --out "$WORK/killed" 2>"$WORK/incomplete.err"; then
    log "merge of an incomplete shard was accepted"; exit 1
fi
log "merge refused: $(cat "$WORK/incomplete.err")"
AGAIN=$(sbatch --parsable --array=2 "$WORK/killed/slurm/array.sbatch")
wait_jobs "$AGAIN"
"$DEOPT" sweep merge "$WORK"/killed/shards/{1,2,3,4} --out "$WORK/killed" >/dev/null 2>&1
cmp "$WORK/reference/summary.csv" "$WORK/killed/summary.csv" || { log "after the resubmission summary.csv differs"; exit 1; }
log "task 2 resubmitted as job $AGAIN: merged summary.csv equals the unsharded one"
rm -rf "$WORK"
echo "slurm: 2 passed, 0 failed"
