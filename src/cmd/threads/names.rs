//! `pk-threads names`: threads started without a name are `Thread-1`,
//! `Thread-2`, …; `current_thread().name`, `get_ident()` and
//! `get_native_id()` on each; a running thread renamed through its handle
//! (`t.name = ...`) and one that renames itself.

use std::sync::Arc;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::thread::{self, Builder, Event};
use crate::{note, outln};

/// The threads' steps, so that the lines come in one order: each thread
/// says hello when its turn comes, and ends when released.
struct Steps {
    hello: Arc<Event>,
    said: Arc<Event>,
    release: Arc<Event>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            hello: Arc::new(Event::new()),
            said: Arc::new(Event::new()),
            release: Arc::new(Event::new()),
        }
    }
}

/// The OS name of the calling thread (`ps -L`, `/proc/<pid>/task/<tid>/comm`).
fn os_name() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn hello(out: &mut Out) -> Result<()> {
    outln!(
        out,
        "thread {}: current_thread().name={} get_ident()={} get_native_id()={}",
        thread::current_name(),
        thread::current_name(),
        thread::get_ident(),
        thread::get_native_id()
    )
}

/// Run `pk-threads names`: three unnamed threads, the second renamed by
/// main as `rename`, the third renaming itself `self_name`.
pub fn run(rename: String, self_name: String, out: &mut Out) -> Result<u8> {
    hello(out)?;
    let mut threads = Vec::new();
    let mut steps = Vec::new();
    // Set every event whatever path main leaves by, so no thread waits
    // for ever (the joined threads are waited for when dropped).
    let mut release_all = ReleaseAll(Vec::new());
    for i in 0..3 {
        let s = Steps::new();
        release_all.0.push(Arc::clone(&s.hello));
        release_all.0.push(Arc::clone(&s.release));
        let (h, said, rel) = (
            Arc::clone(&s.hello),
            Arc::clone(&s.said),
            Arc::clone(&s.release),
        );
        let self_name = self_name.clone();
        let mut out = out.like();
        let t = Builder::new().spawn(move || -> Result<()> {
            h.wait();
            let r = hello(&mut out);
            said.set();
            r?;
            rel.wait();
            let before = thread::current_name();
            if i == 2 {
                thread::set_current_name(self_name.as_str())?;
                note!(
                    out,
                    "thread {before}: current_thread().name = '{self_name}' (renamed itself)"
                )?;
            }
            outln!(
                out,
                "thread {}: ended, OS name {}",
                thread::current_name(),
                os_name()
            )
        })?;
        threads.push(t);
        steps.push(s);
    }
    let names: Vec<String> = threads.iter().map(|t| t.name()).collect();
    note!(
        out,
        "started {} without names (Python 3.11: Thread-N (target))",
        names.join(", ")
    )?;
    for s in &steps {
        s.hello.set();
        s.said.wait();
    }
    let t = &threads[1];
    let was = t.name();
    t.set_name(rename.as_str())?;
    note!(
        out,
        "main: {was} is running (is_alive={}); t.name = '{rename}'",
        super::py_bool(t.is_alive())
    )?;
    for (t, s) in threads.into_iter().zip(&steps) {
        s.release.set();
        t.join()??;
    }
    Ok(exit::OK)
}

/// Sets every event when dropped.
struct ReleaseAll(Vec<Arc<Event>>);

impl Drop for ReleaseAll {
    fn drop(&mut self) {
        for e in &self.0 {
            e.set();
        }
    }
}
