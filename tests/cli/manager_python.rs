//! pk-manager and CPython's own managers, python3 on the other side both
//! ways: the classic lesson's worker against `serve --python`, and
//! `work --python` for an unmodified Python master; pickles that would run
//! code are refused.

use std::process::Output;

use crate::common::*;
use crate::manager::{KEY, assert_all_results, finish, mgr, serve};

/// The classic lesson's worker (task_worker.py), as the lesson writes it;
/// only the address and key come from the command line.
const LESSON_WORKER: &str = r#"
import time, sys, queue
from multiprocessing.managers import BaseManager

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')

server_addr, port = sys.argv[1].rsplit(':', 1)
print('Connect to server %s...' % server_addr, flush=True)
m = QueueManager(address=(server_addr, int(port)), authkey=sys.argv[2].encode())
m.connect()
task = m.get_task_queue()
result = m.get_result_queue()
for i in range(10):
    try:
        n = task.get(timeout=1)
        print('run task %d * %d...' % (n, n), flush=True)
        r = '%d * %d = %d' % (n, n, n*n)
        time.sleep(float(sys.argv[3]))
        result.put(r)
    except queue.Empty:
        print('task queue is empty.', flush=True)
print('worker exit.')
"#;

/// The classic lesson's master (task_master.py), with `manager.start()`;
/// it prints its address first (port 0: the kernel picks one).
const LESSON_MASTER: &str = r#"
import random, time, queue, sys
from multiprocessing.managers import BaseManager

task_queue = queue.Queue()
result_queue = queue.Queue()

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)
manager = QueueManager(address=('127.0.0.1', 0), authkey=sys.argv[1].encode())
manager.start()
print('address %s:%d' % manager.address, flush=True)
task = manager.get_task_queue()
result = manager.get_result_queue()
for i in range(10):
    n = random.randint(0, 10000)
    print('Put task %d...' % n, flush=True)
    task.put(n)
print('Try get results...', flush=True)
for i in range(10):
    r = result.get(timeout=30)
    print('Result: %s' % r, flush=True)
manager.shutdown()
print('master exit.', flush=True)
"#;

/// The same master served in-process: `get_server().serve_forever()`.
const SERVE_FOREVER_MASTER: &str = r#"
import queue, sys, threading
from multiprocessing.managers import BaseManager

task_queue = queue.Queue()
result_queue = queue.Queue()

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)
m = QueueManager(address=('127.0.0.1', 0), authkey=sys.argv[1].encode())
server = m.get_server()
print('address %s:%d' % server.address, flush=True)
for n in range(1, 11):
    task_queue.put(n)
threading.Thread(target=server.serve_forever, daemon=True).start()
for i in range(10):
    print('Result: %s' % result_queue.get(timeout=30), flush=True)
print('master exit.', flush=True)
"#;

/// A class whose pickle is `os.system(cmd)`.
const EVIL: &str = r#"
import os, sys
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[2],))
"#;

fn python_missing() -> bool {
    let missing = std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err();
    if missing {
        eprintln!("skipped: python3 is not installed");
    }
    missing
}

fn python(script: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

fn run(mut cmd: std::process::Command) -> Output {
    assert_cmd::Command::from_std(std::mem::replace(
        &mut cmd,
        std::process::Command::new("true"),
    ))
    .timeout(TIMEOUT)
    .output()
    .unwrap()
}

#[test]
fn the_lesson_worker_runs_unmodified_against_serve_python() {
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&["--python", "--tasks", "6", "--lease", "30s"]);
    // One Python worker dies holding a task: the task goes back.
    let mut doomed = Running::start(python(LESSON_WORKER, &[&addr, KEY, "60"]), false);
    doomed.wait_for(|l| l.starts_with("run task 1 * 1"));
    doomed.child.kill().unwrap();
    doomed.wait();
    server.wait_for(|l| l.starts_with("requeued task 1: ") && l.contains("(python)"));
    let out = run(python(LESSON_WORKER, &[&addr, KEY, "0"]));
    assert_success(&out);
    let text = stdout(&out);
    for n in 1..=6 {
        assert!(text.contains(&format!("run task {n} * {n}...\n")), "{text}");
    }
    assert!(
        text.ends_with("task queue is empty.\nworker exit.\n"),
        "{text}"
    );
    let (_, results) = finish(&mut server, 6);
    assert_all_results(&results, 6);
    assert!(
        results
            .values()
            .all(|(_, by)| by.starts_with("python 127.0.0.1:")),
        "{results:?}"
    );
}

#[test]
fn a_python_worker_with_the_wrong_key_is_refused() {
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&["--python", "--tasks", "1"]);
    let out = run(python(LESSON_WORKER, &[&addr, "wrong", "0"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AuthenticationError"),
        "{out:?}"
    );
    let seen = server.wait_for(|l| l.starts_with("refused "));
    assert!(
        seen.last().unwrap().ends_with("(python): wrong authkey"),
        "{seen:#?}"
    );
    assert_success(&run(python(LESSON_WORKER, &[&addr, KEY, "0"])));
    finish(&mut server, 1);
}

/// Start a Python master and read the address it prints.
fn master(script: &str, key: &str) -> (Running, String) {
    let mut m = Running::start(python(script, &[key]), false);
    let seen = m.wait_for(|l| l.starts_with("address "));
    let addr = seen
        .last()
        .unwrap()
        .strip_prefix("address ")
        .unwrap()
        .to_string();
    (m, addr)
}

#[test]
fn pk_workers_serve_an_unmodified_python_master() {
    if python_missing() {
        return;
    }
    for script in [LESSON_MASTER, SERVE_FOREVER_MASTER] {
        let (mut m, addr) = master(script, KEY);
        let mut cmd = assert_cmd::Command::from_std(mgr(&[
            "work",
            "--python",
            "--connect",
            &addr,
            "--idle",
            "2s",
        ]));
        let w = cmd.timeout(TIMEOUT).output().unwrap();
        assert_success(&w);
        let lines = m.wait_for(|l| l == "master exit.");
        assert_eq!(m.wait().code(), Some(0), "{lines:#?}");
        let results: Vec<&String> = lines.iter().filter(|l| l.starts_with("Result: ")).collect();
        assert_eq!(results.len(), 10, "{lines:#?}");
        for r in results {
            let (a, rest) = r
                .strip_prefix("Result: ")
                .unwrap()
                .split_once(" * ")
                .unwrap();
            let (b, v) = rest.split_once(" = ").unwrap();
            let n: u64 = a.parse().unwrap();
            assert_eq!(
                (b.parse::<u64>().unwrap(), v.parse::<u64>().unwrap()),
                (n, n * n),
                "{r}"
            );
        }
        assert_eq!(
            stdout(&w).lines().filter(|l| l.contains(" done: ")).count(),
            10,
            "{}",
            stdout(&w)
        );
    }
    // A wrong key: 77, nothing done.
    let (_m, addr) = master(SERVE_FOREVER_MASTER, "other");
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--python", "--connect", &addr]));
    let w = cmd.timeout(TIMEOUT).output().unwrap();
    assert_one_line_error(&w, "manager", 77);
}

#[test]
fn a_pickle_that_would_run_code_is_refused_both_ways() {
    if python_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let marker_s = marker.to_str().unwrap();
    // A client that authenticates and sends os.system as its request.
    let (mut server, addr) = serve(&["--python", "--tasks", "1"]);
    let client = format!(
        "{EVIL}\nfrom multiprocessing.connection import Client\nh, p = sys.argv[1].rsplit(':', 1)\nc = Client((h, int(p)), authkey=sys.argv[3].encode())\nc.send(Evil())\ntry:\n    print('answer', c.recv())\nexcept EOFError:\n    print('closed')\n"
    );
    let out = run(python(&client, &[&addr, marker_s, KEY]));
    assert_success(&out);
    assert_eq!(stdout(&out), "closed\n");
    let seen = server.wait_for(|l| l.starts_with("closed "));
    assert!(
        seen.last()
            .unwrap()
            .contains("names posix.system, which is not allowed"),
        "{seen:#?}"
    );
    assert!(!marker.exists(), "the server ran the pickle");
    assert_success(&run(python(LESSON_WORKER, &[&addr, KEY, "0"])));
    finish(&mut server, 1);
    // A server that answers the worker's first request with os.system.
    let fake = format!(
        "{EVIL}\nfrom multiprocessing.connection import Listener\nl = Listener(('127.0.0.1', 0), authkey=sys.argv[3].encode())\nprint('address %s:%d' % l.address, flush=True)\nc = l.accept()\nc.recv()\nc.send(('#RETURN', Evil()))\ntry:\n    c.recv()\nexcept EOFError:\n    print('closed', flush=True)\n"
    );
    let mut f = Running::start(python(&fake, &["-", marker_s, KEY]), false);
    let seen = f.wait_for(|l| l.starts_with("address "));
    let addr = seen
        .last()
        .unwrap()
        .strip_prefix("address ")
        .unwrap()
        .to_string();
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--python", "--connect", &addr]));
    let w = cmd.timeout(TIMEOUT).output().unwrap();
    assert_one_line_error(&w, "manager", 65);
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("posix.system"),
        "{w:?}"
    );
    f.wait_for(|l| l == "closed");
    assert!(!marker.exists(), "the worker ran the pickle");
}

/// Pickles built to exhaust whoever decodes them, by kind: a REDUCE chain
/// 100 000 deep (a stack overflow for a recursive decoder), and memo
/// references that make 170 bytes into 1600 strs of 63 bytes.
const HOSTILE_PICKLES: &str = r#"
def pickle(kind):
    if kind == 'deep':
        n = 100000
        return (b'\x80\x04cbuiltins\nException\nq\x00' + b'h\x00' * (n - 1)
                + b')R' + b'\x85R' * (n - 1) + b'.')
    s = b'\x80\x04\x8c\x3f' + b'x' * 63 + b'q\x00(' + b'h\x00' * 40 + b'tq\x01('
    return s + b'h\x01' * 40 + b't\x87.'
"#;

#[test]
fn deep_and_expanding_pickles_are_refused_in_one_line_and_serving_goes_on() {
    if python_missing() {
        return;
    }
    // A client that authenticates and sends the pickle as its request.
    let client = format!(
        "{HOSTILE_PICKLES}\nimport sys\nfrom multiprocessing.connection import Client\nh, p = sys.argv[1].rsplit(':', 1)\nc = Client((h, int(p)), authkey=sys.argv[2].encode())\nc.send_bytes(pickle(sys.argv[3]))\ntry:\n    print('answer', c.recv_bytes()[:40])\nexcept (EOFError, ConnectionResetError):\n    print('closed')\n"
    );
    let (mut server, addr) = serve(&["--python", "--tasks", "1"]);
    let mut seen = Vec::new();
    for (kind, why) in [
        ("deep", "nested more than 32 deep"),
        ("expanding", "expands into too many values"),
    ] {
        let out = run(python(&client, &[&addr, KEY, kind]));
        assert_success(&out);
        assert_eq!(stdout(&out), "closed\n", "{kind}");
        let lines = server.wait_for(|l| l.starts_with("closed "));
        assert!(lines.last().unwrap().contains(why), "{kind}: {lines:#?}");
        seen.extend(lines);
    }
    // The server lives and serves the lesson's worker.
    assert_success(&run(python(LESSON_WORKER, &[&addr, KEY, "0"])));
    let (lines, _) = finish(&mut server, 1);
    seen.extend(lines);
    // Each refused connection is reported once.
    let closed: Vec<&String> = seen.iter().filter(|l| l.starts_with("closed ")).collect();
    assert_eq!(closed.len(), 2, "{seen:#?}");
    // A server whose answer is the deep pickle: the worker ends with 65.
    let fake = format!(
        "{HOSTILE_PICKLES}\nimport sys\nfrom multiprocessing.connection import Listener\nl = Listener(('127.0.0.1', 0), authkey=sys.argv[1].encode())\nprint('address %s:%d' % l.address, flush=True)\nc = l.accept()\nc.recv_bytes()\nc.send_bytes(pickle('deep'))\ntry:\n    c.recv_bytes()\nexcept EOFError:\n    print('closed', flush=True)\n"
    );
    let (mut f, addr) = master(&fake, KEY);
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--python", "--connect", &addr]));
    let w = cmd.timeout(TIMEOUT).output().unwrap();
    assert_one_line_error(&w, "manager", 65);
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("nested more than 32 deep"),
        "{w:?}"
    );
    f.wait_for(|l| l == "closed");
}

/// A Python worker that takes one task and puts a wrong result for it.
const WRONG_WORKER: &str = r#"
import sys
from multiprocessing.managers import BaseManager
class M(BaseManager):
    pass
M.register('get_task_queue')
M.register('get_result_queue')
h, p = sys.argv[1].rsplit(':', 1)
m = M(address=(h, int(p)), authkey=sys.argv[2].encode())
m.connect()
t, r = m.get_task_queue(), m.get_result_queue()
n = t.get(timeout=5)
try:
    r.put('%d * %d = %d' % (n, n, n * n + 1))
    print('accepted')
except Exception:
    print('refused')
"#;

#[test]
fn a_refused_result_hands_its_task_to_the_next_worker() {
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&["--python", "--tasks", "3"]);
    let out = run(python(WRONG_WORKER, &[&addr, KEY]));
    assert_success(&out);
    assert_eq!(stdout(&out), "refused\n");
    let seen = server.wait_for(|l| l.starts_with("closed "));
    assert!(
        seen.last().unwrap().contains("a wrong result for task 1"),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("requeued task 1: ")),
        "{seen:#?}"
    );
    assert_success(&run(python(LESSON_WORKER, &[&addr, KEY, "0"])));
    let (lines, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
    // The refused worker's connection is reported closed once, not by the
    // connection and again by the server.
    let closed = seen
        .iter()
        .chain(&lines)
        .filter(|l| l.starts_with("closed "));
    assert_eq!(closed.count(), 1, "{seen:#?} {lines:#?}");
}

/// A CPython master (serve_forever) whose `n` tasks are the Python list
/// `tasks`, of which `failing` fail, and one `work --python` run to its
/// end against it: the worker's stderr (a line per failed task, exit 65)
/// and the master's result lines.
fn work_for_a_master_of(tasks: &str, n: usize, failing: usize) -> (String, Vec<String>) {
    let script = SERVE_FOREVER_MASTER
        .replace("for n in range(1, 11):", &format!("for n in {tasks}:"))
        .replace("for i in range(10):", &format!("for i in range({n}):"));
    let (mut m, addr) = master(&script, KEY);
    let mut cmd = assert_cmd::Command::from_std(mgr(&[
        "work",
        "--python",
        "--connect",
        &addr,
        "--idle",
        "2s",
    ]));
    let w = cmd.timeout(TIMEOUT).output().unwrap();
    assert_eq!(w.status.code(), Some(65), "{w:?}");
    let err = String::from_utf8_lossy(&w.stderr).into_owned();
    assert_eq!(err.lines().count(), failing, "{err}");
    (err, m.wait_for(|l| l == "master exit."))
}

#[test]
fn a_task_that_is_not_an_int_fails_alone_for_a_python_master() {
    if python_missing() {
        return;
    }
    let (err, lines) = work_for_a_master_of("['seven', 7, 2**64]", 3, 2);
    assert!(err.contains("the lesson's task is not an int"), "{err}");
    assert!(err.contains("its square does not fit in 128 bits"), "{err}");
    assert_eq!(
        lines,
        [
            "Result: seven: not an int",
            "Result: 7 * 7 = 49",
            "Result: 18446744073709551616: its square does not fit in 128 bits",
            "master exit."
        ]
    );
}

/// CPython clients in `threads` threads of one process, each making its
/// first call on a queue proxy at the same moment (so each opens a
/// connection of its own); prints `ok N` and the errors.
const BURST: &str = r#"
import sys, threading
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register('get_result_queue')
host, port = sys.argv[1].rsplit(':', 1)
m = M(address=(host, int(port)), authkey=sys.argv[2].encode()); m.connect()
q = m.get_result_queue()
n = int(sys.argv[3]); errors = []; ok = [0]; go = threading.Event()
def call():
    go.wait()
    try:
        q.qsize(); ok[0] += 1
    except Exception as e:
        errors.append(type(e).__name__)
ts = [threading.Thread(target=call) for _ in range(n)]
[t.start() for t in ts]; go.set(); [t.join() for t in ts]
print("ok", ok[0], sorted(set(errors)))
"#;

#[test]
fn a_burst_of_python_clients_is_served_not_pushed_out() {
    // 80 connections in their handshake at once, more than the 64 the
    // server lets in: each new one pushed out the oldest, a real client
    // in the middle of its handshake (EOFError, BrokenPipeError).
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&["--python", "--tasks", "1"]);
    let out = run(python(BURST, &[&addr, KEY, "80"]));
    assert_eq!(stdout(&out), "ok 80 []\n", "{out:?}");
    let worker = run(python(LESSON_WORKER, &[&addr, KEY, "0"]));
    assert_success(&worker);
    let (lines, _) = finish(&mut server, 1);
    assert!(
        !lines.iter().any(|l| l.contains("too many unauthenticated")),
        "{lines:#?}"
    );
}

/// A CPython peer (multiprocessing.connection does its handshake) that
/// answers the worker's first `get` with a cut message: the header and 5
/// bytes of the body, then it dies.
const DIES_MID_REPLY: &str = r#"
import os, pickle, struct, sys, threading
from multiprocessing.connection import Listener
l = Listener(('127.0.0.1', 0), authkey=sys.argv[1].encode())
print('address %s:%d' % l.address, flush=True)
def serve(c):
    while True:
        try:
            ident, meth, args, kw = c.recv()
        except EOFError:
            return
        if meth == 'create':
            c.send(('#RETURN', (args[0], ('get', 'put'))))
        elif meth == 'get':
            body = pickle.dumps(('#RETURN', 7))
            os.write(c.fileno(), struct.pack('!i', len(body)) + body[:5])
            os._exit(0)
        else:
            c.send(('#RETURN', None))
while True:
    threading.Thread(target=serve, args=(l.accept(),), daemon=True).start()
"#;

#[test]
fn a_server_that_dies_mid_reply_is_a_dropped_connection_not_the_end() {
    // The end of file inside a message was taken for an orderly close:
    // "the server closed the connection", exit 0, as if all were done.
    if python_missing() {
        return;
    }
    let (mut m, addr) = master(DIES_MID_REPLY, KEY);
    let mut cmd = assert_cmd::Command::from_std(mgr(&["work", "--python", "--connect", &addr]));
    let w = cmd.timeout(TIMEOUT).output().unwrap();
    let err = String::from_utf8_lossy(&w.stderr);
    assert_eq!(w.status.code(), Some(71), "{w:?}");
    assert!(
        err.contains("the connection closed in the middle of a message"),
        "{err}"
    );
    m.wait();
}

/// A CPython client's bad calls on a queue proxy, each with the class of
/// the exception it raised; the same script runs against a CPython
/// server of queue.Queue for comparison (`serve` as its first argument).
const BAD_CALLS: &str = r#"
import queue, sys, threading
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
if sys.argv[1] == 'serve':
    q = queue.Queue(maxsize=1000)  # bounded, as --capacity makes ours
    M.register('get_result_queue', callable=lambda: q)
    m = M(address=('127.0.0.1', 0), authkey=sys.argv[2].encode())
    server = m.get_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = server.address
else:
    M.register('get_result_queue')
    host, port = sys.argv[1].rsplit(':', 1)
    address = (host, int(port))
c = M(address=address, authkey=sys.argv[2].encode()); c.connect()
q = c.get_result_queue()
for call in [lambda: q.get(timeout=-1), lambda: q.put(), lambda: q.get(timeout='x'),
             lambda: q.put(1, timeout=-1), lambda: q.get_nowait()]:
    try:
        call(); print('returned')
    except Exception as e:
        print(type(e).__name__)
"#;

#[test]
fn a_bad_call_raises_the_exception_cpython_raises() {
    // They came back as RemoteError with a traceback's text.
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&["--python", "--tasks", "1"]);
    let ours = run(python(BAD_CALLS, &[&addr, KEY]));
    let theirs = run(python(BAD_CALLS, &["serve", KEY]));
    assert_success(&theirs);
    assert_eq!(stdout(&ours), stdout(&theirs), "{ours:?}");
    assert_eq!(
        stdout(&ours),
        "ValueError\nTypeError\nTypeError\nValueError\nEmpty\n"
    );
    let worker = run(python(LESSON_WORKER, &[&addr, KEY, "0"]));
    assert_success(&worker);
    finish(&mut server, 1);
}

/// Client A takes task X and stays silent past the lease; client B (in a
/// thread of its own, so with a connection of its own: proxies share one
/// per thread) gets X and puts its result; then A puts a message. Prints
/// what the results queue holds.
const LATE_PUT: &str = r#"
import queue, sys, threading
from multiprocessing.managers import BaseManager
class M(BaseManager): pass
M.register('get_task_queue'); M.register('get_result_queue')
host, port = sys.argv[1].rsplit(':', 1)
m = M(address=(host, int(port)), authkey=sys.argv[2].encode()); m.connect()
t, r = m.get_task_queue(), m.get_result_queue()
t.put('X'); t.get()
def b():
    print('B got', t.get(timeout=30), flush=True)
    r.put('B: result for X')
tb = threading.Thread(target=b); tb.start(); tb.join()
print('A put', r.put('A: a message'), flush=True)
held = []
try:
    while True:
        held.append(r.get(timeout=0.5))
except queue.Empty:
    pass
print(sorted(held))
"#;

#[test]
fn a_put_after_the_lease_ran_out_is_stored_not_dropped() {
    // A's put settled its oldest lease, which B had settled already: the
    // put was dropped as a late result, while A's put() returned None.
    if python_missing() {
        return;
    }
    let (mut server, addr) = serve(&[
        "--python", "--queue", "tasks", "--queue", "results", "--lease", "300ms",
    ]);
    let out = run(python(LATE_PUT, &[&addr, KEY]));
    assert_eq!(
        stdout(&out),
        "B got X\nA put None\n['A: a message', 'B: result for X']\n",
        "{out:?}"
    );
    server.wait_for(|l| l.starts_with("late put from ") && l.ends_with("stored all the same"));
}

#[test]
fn a_task_that_cannot_be_decoded_fails_alone_and_the_master_hears_of_it() {
    // A set or an int past 128 bits is no pickle this worker decodes: it
    // exited 65 at once, with the task gone from the master's queue and
    // no result for it, so the master waited for ever and the tasks after
    // it never ran.
    if python_missing() {
        return;
    }
    let (_, lines) = work_for_a_master_of("[{1, 2}, 2**130, 7]", 3, 2);
    assert_eq!(
        lines,
        [
            "Result: task 1: a task this worker cannot decode",
            "Result: task 2: a task this worker cannot decode",
            "Result: 7 * 7 = 49",
            "master exit."
        ]
    );
}
