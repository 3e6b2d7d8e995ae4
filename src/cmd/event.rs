//! `pk-event`: the threading.Event lesson. A waiting thread blocks until a
//! second thread has stored the password and set the event; with
//! `--timeout` it gives up after a while.

use std::sync::{Arc, Mutex, PoisonError};

use clap::Parser;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::error::Error;
use crate::outln;
use crate::thread::{self, Event};

const AFTER_HELP: &str = "\
Output (always in this order):
  thread Waiter: waiting for the password...            (then Event.wait)
  thread Setter: password stored, event set              (after --delay)
  thread Waiter: got the password '<PASSWORD>'            (only after the set)
When the wait times out (--timeout shorter than --delay, or --no-set):
  thread Waiter: timed out after <DURATION>, no password
  thread Setter: password stored, event set              (late; not with --no-set)
The setter starts its --delay only once the waiter is waiting, so the
waiter always prints `waiting` first.

Exit status: 0 when the waiter got the password; 1 when its wait timed
out; 2 for a bad flag; 71 when a thread cannot be started.

Examples:
  pk-event --delay 1s
  pk-event --timeout 200ms --no-set; echo $?     # 1";

/// Two threads hand over a password with an Event: Python's threading.Event.
#[derive(Debug, Parser)]
#[command(name = "pk-event", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The waiter gives up after this long (default: it waits for ever).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub timeout: Option<DurationArg>,

    /// How long the setter takes before it stores the password and sets the event.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "0")]
    pub delay: DurationArg,

    /// Start no setter: the event is never set, so the wait times out.
    /// Needs --timeout.
    #[arg(long)]
    pub no_set: bool,

    /// The password the setter hands over (1-256 characters, no control characters).
    #[arg(short, long, value_name = "TEXT", default_value = "hunter2", value_parser = password)]
    pub password: String,
}

fn password(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.chars().count() > 256 || s.chars().any(char::is_control) {
        return Err("a password has 1 to 256 characters, none of them control characters".into());
    }
    Ok(s.to_string())
}

/// Run the event lesson.
pub fn run(args: Args, _out: &mut Out) -> Result<u8> {
    if args.no_set && args.timeout.is_none() {
        return Err(Error::invalid(
            "--no-set",
            "needs --timeout, or the waiter would wait for ever",
        )
        .into());
    }
    let event = Arc::new(Event::new());
    let waiting = Arc::new(Event::new());
    let secret: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let waiter = {
        let (event, waiting, secret) = (
            Arc::clone(&event),
            Arc::clone(&waiting),
            Arc::clone(&secret),
        );
        let timeout = args.timeout;
        thread::spawn("Waiter", move || -> Result<bool> {
            let mut out = Out::stdout();
            let me = thread::current_name();
            // Set `waiting` even when the line cannot be written (stdout
            // closed), or the setter would wait for it for ever.
            let said = outln!(out, "thread {me}: waiting for the password...");
            waiting.set();
            said?;
            let set = match timeout {
                Some(t) => event.wait_timeout(t.0),
                None => {
                    event.wait();
                    true
                }
            };
            if !set {
                let t = timeout.unwrap_or_default();
                outln!(out, "thread {me}: timed out after {t}, no password")?;
                return Ok(false);
            }
            let pw = secret
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            outln!(
                out,
                "thread {me}: got the password '{}'",
                pw.unwrap_or_default()
            )?;
            Ok(true)
        })?
    };

    let setter = if args.no_set {
        None
    } else {
        let (ev, waiting, secret) = (
            Arc::clone(&event),
            Arc::clone(&waiting),
            Arc::clone(&secret),
        );
        let (delay, pw) = (args.delay, args.password);
        let started = thread::spawn("Setter", move || -> Result<()> {
            let mut out = Out::stdout();
            let me = thread::current_name();
            waiting.wait();
            std::thread::sleep(delay.0);
            *secret.lock().unwrap_or_else(PoisonError::into_inner) = Some(pw);
            // The line comes before set(): the waiter cannot print first.
            let said = outln!(out, "thread {me}: password stored, event set");
            // Set the event whatever happened to the line, or the waiter
            // would wait for ever.
            ev.set();
            said
        });
        match started {
            Ok(t) => Some(t),
            Err(e) => {
                // Release the waiter so that joining it cannot hang.
                event.set();
                return Err(e.into());
            }
        }
    };

    let got = waiter.join()??;
    if let Some(setter) = setter {
        setter.join()??;
    }
    Ok(if got { exit::OK } else { exit::DECLINED })
}
