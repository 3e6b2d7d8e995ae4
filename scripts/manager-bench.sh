#!/usr/bin/env bash
# Tasks per second through a manager: N tiny tasks (n -> "n * n = n²"),
# two workers, loopback, every side in this one run so the figures compare:
#   pk-manager serve   + 2 x pk-manager work           (pk's own protocol)
#   Python BaseManager + 2 x the lesson's Python worker (CPython's own)
#   pk-manager serve --python + 2 x the Python worker
#   Python BaseManager + 2 x pk-manager work --python
# Each time runs from starting the workers (the tasks already queued) to
# the master's exit with every result in.
# Usage: scripts/manager-bench.sh [N]   (default 10000; pk-manager on PATH or built)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pk-manager >/dev/null || PATH="$here/target/release:$here/target/debug:$PATH"
n=${1:-10000}
PK_AUTHKEY="bench-$$-$RANDOM"
export PK_AUTHKEY
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/worker.py" <<'PY'
# The lesson's worker, looping until the queue stays empty for 1 s.
import os, queue, sys
from multiprocessing.managers import BaseManager
class QueueManager(BaseManager):
    pass
QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')
host, port = sys.argv[1].rsplit(':', 1)
m = QueueManager(address=(host, int(port)), authkey=os.environb[b'PK_AUTHKEY'])
m.connect()
task, result = m.get_task_queue(), m.get_result_queue()
while True:
    try:
        n = task.get(timeout=1)
    except queue.Empty:
        break
    result.put('%d * %d = %d' % (n, n, n * n))
PY
cat > "$work/master.py" <<'PY'
# The lesson's master: N tasks queued, then every result awaited.
import os, queue, sys
from multiprocessing.managers import BaseManager
task_queue, result_queue = queue.Queue(), queue.Queue()
class QueueManager(BaseManager):
    pass
QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)
m = QueueManager(address=('127.0.0.1', 0), authkey=os.environb[b'PK_AUTHKEY'])
m.start()
task, result = m.get_task_queue(), m.get_result_queue()
n = int(sys.argv[1])
for i in range(1, n + 1):
    task.put(i)
print('listening on %s:%d' % m.address, flush=True)
for i in range(n):
    r = result.get(timeout=60)
    a, rest = r.split(' * ', 1)
    assert rest == '%s = %d' % (a, int(a) ** 2), r
m.shutdown()
PY

now() { date +%s.%N; }
rate() { awk -v n="$n" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", n / (b - a) }'; }

# bench NAME MASTER-CMD... -- WORKER-CMD...   ({ADDR} in the worker command)
bench() {
  local name=$1; shift
  local master=() workers=()
  while [ "$1" != -- ]; do master+=("$1"); shift; done
  shift
  workers=("$@")
  exec 3< <(exec "${master[@]}")
  local pid=$! first
  IFS= read -r -t 60 first <&3
  local addr=${first#listening on }
  local cmd=("${workers[@]/\{ADDR\}/$addr}")
  local t0 t1
  t0=$(now)
  "${cmd[@]}" >/dev/null 2>>"$work/workers.err" &
  local w1=$!
  "${cmd[@]}" >/dev/null 2>>"$work/workers.err" &
  local w2=$!
  cat <&3 >/dev/null
  wait "$pid"
  t1=$(now)
  # Python workers end with EOFError when their master shuts down.
  wait "$w1" "$w2" || true
  exec 3<&-
  printf '%-44s %8s tasks/s\n' "$name" "$(rate "$t0" "$t1")"
}

echo "== $n tasks, 2 workers, loopback ($(nproc) cores)"
bench "pk-manager serve + 2 pk-manager work" \
  pk-manager serve --tasks "$n" --min-workers 2 --quiet --timeout 600s -- \
  pk-manager work --connect {ADDR} --quiet
bench "Python BaseManager + 2 Python workers" \
  python3 "$work/master.py" "$n" -- \
  python3 "$work/worker.py" {ADDR}
bench "pk-manager serve --python + 2 Python workers" \
  pk-manager serve --python --tasks "$n" --min-workers 2 --quiet --timeout 600s -- \
  python3 "$work/worker.py" {ADDR}
bench "Python BaseManager + 2 pk-manager work --python" \
  python3 "$work/master.py" "$n" -- \
  pk-manager work --python --connect {ADDR} --quiet
