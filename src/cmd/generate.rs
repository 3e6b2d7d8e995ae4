//! Manual pages and shell completions, written by each binary from its own
//! clap definition, so they say what `--help` says and cannot drift from it.
//!
//! Two hidden flags, taken only as a binary's first argument and handled by
//! [`main`](super::main) before the binary's own arguments are parsed:
//!
//! - `pk-NAME --generate-man DIR` writes `DIR/pk-NAME.1` and, for a binary
//!   with subcommands, one page per subcommand (`pk-ticket-buy.1`, as git
//!   names `git-commit.1`), creating DIR if needed. The page is clap's
//!   (clap_mangen): NAME, SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS, then
//!   the help's closing text (output lines, exit status, examples) under
//!   DETAILS, its indented lines kept as they are.
//! - `pk-NAME --generate-completions SHELL` prints the completion script
//!   for bash, zsh or fish (clap_complete) on stdout.
//!
//! `make install` runs both for every installed binary. They are hidden
//! from `--help` because a user gets their results installed; they are not
//! a way to change what a binary does.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgGroup, Command, ValueEnum, value_parser};
use clap_complete::shells::{Bash, Fish, Zsh};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

use crate::cmd::{Out, Result};
use crate::error::Error;

const MAN: &str = "--generate-man";
const COMPLETIONS: &str = "--generate-completions";

/// Whether the command line asks for generation: its first argument is
/// `--generate-man` or `--generate-completions` (or `--flag=VALUE`).
pub(crate) fn requested() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| is_flag(&a))
}

fn is_flag(arg: &OsString) -> bool {
    let Some(arg) = arg.to_str() else {
        return false;
    };
    [MAN, COMPLETIONS].iter().any(|flag| {
        arg.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
    })
}

/// Parse the generation flags from the command line and do what they ask
/// for `cmd`, the binary's own clap definition. A bad flag prints its
/// one-line usage error here and exits 2, as any other binary does.
pub(crate) fn run(cmd: Command, out: &mut Out) -> Result<u8> {
    let name = cmd.get_name().to_string();
    let flags = Command::new("generate")
        .bin_name(name.clone())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("man")
                .long(&MAN[2..])
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("completions")
                .long(&COMPLETIONS[2..])
                .value_name("SHELL")
                .value_parser(value_parser!(Shell)),
        )
        .group(
            ArgGroup::new("what")
                .args(["man", "completions"])
                .required(true),
        );
    let matches = match flags.try_get_matches_from(std::env::args_os()) {
        Ok(m) => m,
        Err(e) => return Ok(super::report_clap(&name, &e)),
    };
    if let Some(dir) = matches.get_one::<PathBuf>("man") {
        man_pages(cmd, dir)?;
    } else if let Some(shell) = matches.get_one::<Shell>("completions") {
        let mut cmd = cmd;
        let mut script = Vec::new();
        match shell {
            Shell::Bash => clap_complete::generate(Bash, &mut cmd, name, &mut script),
            Shell::Zsh => clap_complete::generate(Zsh, &mut cmd, name, &mut script),
            Shell::Fish => clap_complete::generate(Fish, &mut cmd, name, &mut script),
        }
        out.bytes(&script)?;
    }
    Ok(super::exit::OK)
}

/// The shells `make install` installs completions for (clap_complete knows
/// elvish and powershell too; each shell's generator adds to every binary).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Write the pages of `cmd` and of its visible subcommands, at any depth,
/// into `dir`.
fn man_pages(cmd: Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir.display(), &e))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_pages(&cmd, None, dir)
}

fn write_pages(cmd: &Command, parent: Option<&str>, dir: &Path) -> Result<()> {
    let man = Man::new(cmd.clone())
        .manual("posixkit")
        .source(concat!("posixkit ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let page = render(&man, cmd, parent).map_err(|e| Error::io("render", path.display(), &e))?;
    std::fs::write(&path, page).map_err(|e| Error::io("write", path.display(), &e))?;
    let title = page_name(cmd);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, Some(&title), dir)?;
    }
    Ok(())
}

/// The name a page goes by: `pk-ticket`, `pk-ticket-buy`.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// One page: clap_mangen's sections, the help's closing text as DETAILS,
/// and, on a subcommand's page, SEE ALSO its binary's page.
fn render(man: &Man, cmd: &Command, parent: Option<&str>) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    // Every rendering starts with the same preamble (a string for the
    // apostrophe); keep the title's and drop the others' copies.
    let preamble = Roff::new().render();
    let mut section = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        f(&mut buf)?;
        let body = buf.strip_prefix(preamble.as_bytes()).unwrap_or(&buf);
        page.extend_from_slice(body);
        std::io::Result::Ok(())
    };
    section(&|w| man.render_name_section(w))?;
    section(&|w| man.render_synopsis_section(w))?;
    section(&|w| man.render_description_section(w))?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        section(&|w| man.render_options_section(w))?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        section(&|w| man.render_subcommands_section(w))?;
    }
    let mut roff = Roff::new();
    if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        roff.control("SH", ["DETAILS"]);
        details(&mut roff, &text.to_string());
    }
    if let Some(parent) = parent {
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman(format!("{parent}(1)"))]);
    }
    let rest = roff.render();
    page.extend_from_slice(
        rest.strip_prefix(preamble.as_str())
            .unwrap_or(&rest)
            .as_bytes(),
    );
    Ok(page)
}

/// The help's closing text as roff: a blank line starts a paragraph, and
/// so does a label line (`Output:`, `Exit status: ...`, `Examples:`);
/// indented lines (tables of output lines, examples) are set as they are,
/// unfilled; the other lines are filled into paragraphs.
fn details(roff: &mut Roff, text: &str) {
    let mut unfilled = false;
    let mut paragraph_start = true;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        if indented != unfilled {
            roff.control(if indented { "nf" } else { "fi" }, []);
            unfilled = indented;
        }
        if line.trim().is_empty() {
            if !unfilled && !paragraph_start {
                roff.control("PP", []);
                paragraph_start = true;
            }
            continue;
        }
        if !indented && !paragraph_start && is_label(line) {
            roff.control("PP", []);
        }
        roff.text([roman(line)]);
        paragraph_start = false;
    }
    if unfilled {
        roff.control("fi", []);
    }
}

/// `Output:`, `Output (at most one line):`, `Exit status: 0 done; ...`,
/// `Examples:`: a few words and a colon that start a new part of the text.
fn is_label(line: &str) -> bool {
    line.split_once(':').is_some_and(|(head, _)| {
        head.len() <= 40
            && head.starts_with(|c: char| c.is_ascii_uppercase())
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " ()-".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_flags_ask_for_generation() {
        for yes in [
            "--generate-man",
            "--generate-man=/tmp",
            "--generate-completions",
        ] {
            assert!(is_flag(&yes.into()), "{yes}");
        }
        for no in [
            "--generate-manual",
            "--generate",
            "-h",
            "generate-man",
            "--help",
        ] {
            assert!(!is_flag(&no.into()), "{no}");
        }
    }

    #[test]
    fn labels_start_paragraphs() {
        assert!(is_label("Output:"));
        assert!(is_label("Output (at most one line):"));
        assert!(is_label("Exit status: 0 done; 1 sold out"));
        assert!(!is_label(
            "oversold = sold + left - stock: tickets handed out"
        ));
        assert!(!is_label(
            "flock(2) lock, so a script's `flock product -c '...'` excludes"
        ));
        assert!(!is_label("  pk-ticket init product 10"));
    }

    #[test]
    fn indented_lines_are_kept_unfilled() {
        let mut roff = Roff::new();
        details(
            &mut roff,
            "Some prose\nthat flows.\nOutput:\n  line one\n  line two\nExit status: 0 done.\n\nExamples:\n  pk-x -v",
        );
        let text = roff.to_roff();
        assert_eq!(
            text,
            "Some prose\nthat flows.\n.PP\nOutput:\n.nf\n  line one\n  line two\n.fi\n.PP\nExit status: 0 done.\n.PP\nExamples:\n.nf\n  pk\\-x \\-v\n.fi\n"
        );
    }
}
