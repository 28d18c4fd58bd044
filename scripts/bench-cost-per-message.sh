#!/usr/bin/env bash
# What one durable send costs, counted rather than timed, so that two builds
# can be compared on a shared, noisy machine.
#
#   scripts/bench-cost-per-message.sh instructions BIN DB [SMALL LARGE]
#       Clacks' own instructions per message (callgrind, every thread): two
#       runs of `clacks-bench durable-send` under valgrind, SMALL and LARGE
#       messages (default 300 and 1300), and the difference divided by
#       LARGE - SMALL, so start-up and migrations cancel out. With DB=sqlite
#       this includes the database engine, which runs in the process.
#   scripts/bench-cost-per-message.sh dbcpu BIN DB [SMALL LARGE]
#       The database server's CPU time per message (DB=mysql or postgres;
#       user + system, PostgreSQL's exited backends included through the
#       postmaster's reaped-children times), the same difference of two runs
#       (default 3,000 and 23,000 messages from 64 senders).
#   scripts/bench-cost-per-message.sh fanout BIN sqlite [SMALL LARGE]
#       Clacks' instructions per delivered event (callgrind): two runs of
#       `clacks-bench fanout` to 200 subscribers in bursts of 50 messages,
#       SMALL and LARGE bursts (default 4 and 20), the difference divided by
#       the deliveries between them.
#
# BIN is a `clacks` binary; the bench tool is target/release/clacks-bench
# (or $CLACKS_BENCH). Each run spawns BIN on a fresh database.
set -euo pipefail

mode=${1:?usage: $0 instructions|fanout|dbcpu BIN DB [SMALL LARGE]}
bin=$(realpath "${2:?BIN}")
db=${3:?DB: sqlite, mysql or postgres}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${CLACKS_BENCH:-$root/target/release/clacks-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A wrapper the bench spawns in BIN's place: valgrind in a session of its
# own, so the bench's SIGKILL of the wrapper leaves it running; it is then
# stopped with SIGTERM, and callgrind writes its counts as the server exits.
cat > "$work/wrap.sh" <<EOF
#!/usr/bin/env bash
setsid valgrind --tool=callgrind --callgrind-out-file="\$CG_OUT" "$bin" "\$@" &
echo \$! > "\$CG_OUT.pid"
wait
EOF
chmod +x "$work/wrap.sh"

instructions() {
    local n=$1 out=$work/callgrind.$1
    if [ "$mode" = fanout ]; then
        CG_OUT=$out "$bench" fanout --subscribers 200 --burst 50 --bursts "$n" \
            --db "$db" --spawn "$work/wrap.sh" > "$work/log.$n" 2>&1
    else
        CG_OUT=$out "$bench" durable-send --senders 8 --channels 8 --max-messages "$n" \
            --duration 300 --half-rate-duration 0 --db "$db" --spawn "$work/wrap.sh" > "$work/log.$n" 2>&1
    fi
    local pid
    pid=$(cat "$out.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    grep -h '^summary:\|^totals:' "$out" | head -1 | awk '{print $2}'
}

database_ticks() {
    if [ "$db" = postgres ]; then
        local postmaster total
        postmaster=$(head -1 /var/run/postgresql/*.pid)
        total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
        for child in $(pgrep -P "$postmaster"); do
            total=$((total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0)))
        done
        echo "$total"
    else
        awk '{print $14 + $15}' "/proc/$(pgrep -x mariadbd || pgrep -x mysqld)/stat"
    fi
}

dbcpu() {
    local n=$1 before after
    before=$(database_ticks)
    "$bench" durable-send --senders 64 --max-messages "$n" --duration 120 \
        --half-rate-duration 0 --db "$db" --spawn "$bin" > "$work/log.$n" 2>&1
    sleep 3
    after=$(database_ticks)
    echo $((after - before))
}

case $mode in
    instructions)
        small=${4:-300} large=${5:-1300}
        a=$(instructions "$small")
        b=$(instructions "$large")
        echo "$(basename "$bin") $db: $(( (b - a) / (large - small) )) instructions per message"
        ;;
    fanout)
        small=${4:-4} large=${5:-20}
        a=$(instructions "$small")
        b=$(instructions "$large")
        echo "$(basename "$bin") $db: $(( (b - a) / ((large - small) * 50 * 200) )) instructions per delivered event"
        ;;
    dbcpu)
        [ "$db" != sqlite ] || { echo "dbcpu needs mysql or postgres" >&2; exit 2; }
        small=${4:-3000} large=${5:-23000}
        a=$(dbcpu "$small")
        b=$(dbcpu "$large")
        tick=$(getconf CLK_TCK)
        echo "$(basename "$bin") $db: $(( (b - a) * 1000000 / tick / (large - small) )) µs of database CPU per message"
        ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
