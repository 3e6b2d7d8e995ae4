//! Every binary's `--help` and every subcommand's, read as a user reads
//! them: no subcommand listed twice, no example cut in the middle of a
//! quoted shell string, and `-q/--quiet` taken before the subcommand's
//! name and after it wherever a binary has it.

use std::path::Path;
use std::sync::OnceLock;

use crate::common::{pk, stdout};

/// One `--help` text: the binary (`queue`), the subcommand (empty for the
/// binary's own), and the text.
pub struct Help {
    pub bin: String,
    pub sub: Option<String>,
    pub text: String,
}

impl Help {
    /// The command line that prints it, `pk-queue put --help`.
    pub fn command(&self) -> String {
        match &self.sub {
            Some(s) => format!("pk-{} {s} --help", self.bin),
            None => format!("pk-{} --help", self.bin),
        }
    }
}

/// Every `src/bin/pk-*.rs`, by the name the tests use (`fork`, `queue` ...).
pub fn binaries() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| Some(n.strip_prefix("pk-")?.strip_suffix(".rs")?.to_string()))
        .collect();
    names.sort();
    assert!(names.len() >= 15, "{names:?}");
    names
}

/// `pk-NAME ARGS --help`, which must succeed.
fn help_text(bin: &str, args: &[&str]) -> String {
    let out = pk(bin).args(args).arg("--help").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "pk-{bin} {args:?} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The subcommands a help lists under clap's `Commands:` (hidden ones are
/// not listed; `help` is left out).
pub fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  ") && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches(',').to_string())
        .filter(|w| w != "help")
        .collect()
}

/// Every binary's help, then each of its subcommands' helps, in order;
/// read once for all the tests that need them.
pub fn all() -> &'static [Help] {
    static ALL: OnceLock<Vec<Help>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = Vec::new();
        for bin in binaries() {
            let text = help_text(&bin, &[]);
            let subs = subcommands(&text);
            all.push(Help {
                bin: bin.clone(),
                sub: None,
                text,
            });
            for sub in subs {
                let text = help_text(&bin, &[&sub]);
                all.push(Help {
                    bin: bin.clone(),
                    sub: Some(sub),
                    text,
                });
            }
        }
        all
    })
}

/// Lines that list one of `subs` a second time, after clap's `Commands:`
/// (a `Subcommands:` block in the closing text), and any second heading.
fn duplicate_listings(help: &str, subs: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for heading in ["Commands:", "Subcommands:"] {
        let n = help.lines().filter(|l| l.trim() == heading).count();
        if n + usize::from(heading == "Subcommands:" && help.contains("\nCommands:")) > 1 {
            found.push(format!("a second `{heading}` heading"));
        }
    }
    for sub in subs {
        let listed: Vec<&str> = help
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                l.len() > t.len()
                    && t.strip_prefix(sub.as_str())
                        .is_some_and(|rest| rest.starts_with("  ") && !rest.trim().is_empty())
            })
            .collect();
        if listed.len() > 1 {
            found.push(format!("`{sub}` listed {} times: {listed:?}", listed.len()));
        }
    }
    found
}

/// Whether a shell line leaves a quote open at its end, as the shell
/// reads it: `'...'` with no escapes, `"..."` and bare words with `\`
/// escapes, and a `#` that starts a word beginning a comment.
fn quote_left_open(line: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut word_start = true;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => quote = None,
            Some('\'') => {}
            Some(_) if c == '\\' => {
                chars.next();
            }
            Some(_) if c == '"' => quote = None,
            Some(_) => {}
            None => {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' | '"' => quote = Some(c),
                    '#' if word_start => return false,
                    _ => {}
                }
                word_start = matches!(c, ' ' | '\t' | '|' | ';' | '&' | '(' | '`');
            }
        }
    }
    quote.is_some()
}

/// Shell lines of a help that end inside a quoted string: the lines of an
/// `Examples:` block, lines that start with a `pk-` command (synopses),
/// and lines that pipe into one.
fn broken_shell_lines(help: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_examples = false;
    for line in help.lines() {
        if line.starts_with("Examples:") {
            in_examples = true;
            continue;
        }
        if !line.starts_with(' ') {
            in_examples = false;
        }
        let t = line.trim_start();
        let shell = in_examples || t.starts_with("pk-") || line.contains(" | pk-");
        if shell && quote_left_open(t) {
            found.push(line.to_string());
        }
    }
    found
}

#[test]
fn the_checks_see_the_defects_they_look_for() {
    // A hand-written list after clap's, as pk-sem had.
    let help = "Usage: pk-sem <COMMAND>\n\nCommands:\n  demo    N forked workers\n  run     Take a slot\n  help    Print this message\n\nSubcommands:\n  demo     N workers share a semaphore\n  run      take a slot\n\nOutput of `demo`:\n  <pid> wants\n";
    let subs = subcommands(help);
    assert_eq!(subs, ["demo", "run"]);
    let dups = duplicate_listings(help, &subs);
    assert_eq!(dups.len(), 3, "{dups:?}");
    // A `\n` in a non-raw string that cut printf's format in two, as
    // pk-pool's had.
    let help = "Examples:\n  printf '%s\n' a b c | pk-pool exec -j 2 -- echo item {}\n";
    assert_eq!(broken_shell_lines(help).len(), 2);
    let fine = "Examples:\n  printf '%s\\n' a b | pk-pool exec -- echo {}\n  pk-fork --exit-message 'no more tickets'   # it's on stderr\n  while msg=$(pk-queue get /jobs); do echo \"got $msg\"; done\n";
    assert_eq!(broken_shell_lines(fine), Vec::<String>::new());
}

#[test]
fn no_help_lists_a_subcommand_twice_or_cuts_a_shell_line() {
    let mut bad = Vec::new();
    for h in all() {
        let subs = subcommands(&h.text);
        for d in duplicate_listings(&h.text, &subs) {
            bad.push(format!("{}: {d}", h.command()));
        }
        for l in broken_shell_lines(&h.text) {
            bad.push(format!("{}: a quote left open: {l:?}", h.command()));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The binaries with subcommands whose output has lines `--quiet` drops.
const QUIET: [&str; 11] = [
    "coro", "event", "lock", "manager", "pipe", "pool", "queue", "sem", "shm", "threads", "ticket",
];

#[test]
fn quiet_goes_before_or_after_the_subcommand() {
    let quiet = |h: &Help| {
        h.text.lines().any(|l| {
            l.trim_start()
                .strip_prefix("-q, --quiet")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    };
    let mut with_quiet = Vec::new();
    for top in all().iter().filter(|h| h.sub.is_none()) {
        let subs: Vec<&Help> = all()
            .iter()
            .filter(|h| h.bin == top.bin && h.sub.is_some())
            .collect();
        if subs.is_empty() {
            continue;
        }
        if quiet(top) {
            with_quiet.push(top.bin.as_str());
        }
        for sub in subs {
            let name = sub.sub.as_deref().unwrap();
            assert_eq!(
                quiet(sub),
                quiet(top),
                "{} and {} differ on -q/--quiet",
                top.command(),
                sub.command()
            );
            if !quiet(top) {
                continue;
            }
            // clap reads the flags in order: an unknown -q before --help
            // is an error, a known one lets --help print.
            for args in [
                ["--quiet", name, "--help"],
                [name, "--quiet", "--help"],
                ["-q", name, "--help"],
                [name, "-q", "--help"],
            ] {
                let out = pk(&top.bin).args(args).output().unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "pk-{} {args:?}: {}",
                    top.bin,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(stdout(&out), sub.text, "pk-{} {args:?}", top.bin);
            }
        }
    }
    assert_eq!(with_quiet, QUIET);
}

#[test]
fn quiet_means_the_same_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("product");
    let file = file.to_str().unwrap();
    let rush = |args: &[&str]| {
        pk("ticket").args(["init", file, "3"]).assert().success();
        let out = pk("ticket").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        stdout(&out)
    };
    let before = rush(&["--quiet", "rush", file, "--buyers", "5"]);
    let after = rush(&["rush", file, "--buyers", "5", "-q"]);
    assert_eq!(before, "summary: stock 3, sold 3, left 0, oversold 0\n");
    assert_eq!(before, after);
    let loud = rush(&["rush", file, "--buyers", "5"]);
    assert!(loud.lines().count() > 5, "{loud}");

    let demo = |args: &[&str]| {
        let out = pk("sem").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        stdout(&out)
    };
    let common = ["--workers", "3", "--value", "2", "--hold", "10ms"];
    for args in [
        [&["-q", "demo"][..], &common].concat(),
        [&["demo"][..], &common, &["--quiet"]].concat(),
    ] {
        // Only the result line: how many were inside at once varies.
        let text = demo(&args);
        assert!(
            text.starts_with("max_inside=") && text.ends_with(" final_value=2\n"),
            "{args:?}: {text}"
        );
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
    }
}
