//! `make install` into a temporary DESTDIR, as a packager runs it: every
//! pk-* binary (pk-bench and pk-bench-plot aside) runs from there and is stripped, the man
//! pages format without a warning and `man` finds them by name, the bash
//! completions load, and `make uninstall` leaves no file behind. The
//! binaries are the ones cargo built for this test run (`make
//! install-files RELEASE=<their directory>`: the install recipe without
//! its release build).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::common::{TIMEOUT, bin, pk};

const PREFIX: &str = "usr/local";

/// The binaries `make install` installs: every `src/bin/pk-*.rs` but
/// pk-bench and pk-bench-plot.
fn tools() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    let mut tools: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .filter(|n| n.starts_with("pk-") && n != "pk-bench" && n != "pk-bench-plot")
        .collect();
    tools.sort();
    assert!(tools.len() >= 10, "{tools:?}");
    tools
}

/// `make ARGS` in the source tree, the binaries taken from cargo's build
/// for this test run.
fn make(target: &str, destdir: &Path) -> Command {
    let built = bin("pk-fork");
    let mut cmd = Command::new("make");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .args(["--no-print-directory", target])
        .arg(format!("RELEASE={}", built.parent().unwrap().display()))
        .arg(format!("DESTDIR={}", destdir.display()))
        .timeout(TIMEOUT);
    cmd
}

/// Every file (or symlink) below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The names of an ELF64 file's sections, read from its section headers.
fn elf_sections(path: &Path) -> Vec<String> {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{}: not ELF64", path.display());
    let u16_at = |o: usize| usize::from(u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()));
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = names + u32_at(header(i));
            let len = elf[start..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[start..start + len]).into_owned()
        })
        .collect()
}

#[test]
fn make_install_puts_binaries_man_pages_and_completions_in_place_and_uninstall_removes_them() {
    let tmp = tempfile::tempdir().unwrap();
    // man(1) may read the pages as its own user: let it through.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = tmp.path();
    let root = dest.join(PREFIX);
    let out = make("install-files", dest)
        .assert()
        .success()
        .get_output()
        .clone();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("installed {} pk-* binaries", tools().len())),
        "{said}"
    );

    // The binaries: each runs from there, stripped of symbols and debug info.
    let installed = files_below(&root.join("bin"));
    let want: Vec<PathBuf> = tools().iter().map(|t| root.join("bin").join(t)).collect();
    assert_eq!(
        installed, want,
        "every pk-* binary but pk-bench and pk-bench-plot, nothing else"
    );
    Command::new(root.join("bin/pk-fork"))
        .arg("--version")
        .timeout(TIMEOUT)
        .assert()
        .success()
        .stdout(format!("pk-fork {}\n", env!("CARGO_PKG_VERSION")));
    Command::new(root.join("bin/pk-fork"))
        .args(["--children", "2", "--quiet"])
        .timeout(TIMEOUT)
        .assert()
        .success();
    for t in tools() {
        let path = root.join("bin").join(&t);
        let sections = elf_sections(&path);
        // .debug_gdb_scripts is not debug info but a few bytes asking gdb
        // to load Rust's pretty-printers; strip keeps it.
        assert!(
            !sections
                .iter()
                .any(|s| s == ".symtab" || (s.starts_with(".debug") && s != ".debug_gdb_scripts")),
            "{t} is not stripped: {sections:?}"
        );
        assert!(sections.iter().any(|s| s == ".text"), "{sections:?}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    // The man pages: one per binary, one per subcommand, all formatting
    // with no warning from groff; man finds them by name under MANPATH.
    let man1 = root.join("share/man/man1");
    let pages = files_below(&man1);
    for t in tools() {
        assert!(
            pages.contains(&man1.join(format!("{t}.1"))),
            "no {t}.1 in {pages:?}"
        );
    }
    assert!(pages.contains(&man1.join("pk-ticket-buy.1")), "{pages:?}");
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .args(&pages)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let fork_page = Command::new("man")
        .args(["-l", man1.join("pk-fork.1").to_str().unwrap()])
        .env("MANWIDTH", "80")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&fork_page.stdout);
    assert!(fork_page.status.success(), "{fork_page:?}");
    for want in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "--children",
        "DETAILS",
        "Exit status",
    ] {
        assert!(text.contains(want), "no {want:?} in man pk-fork:\n{text}");
    }
    let buy = Command::new("man")
        .arg("pk-ticket-buy")
        .env("MANPATH", root.join("share/man"))
        .env("MANWIDTH", "80")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&buy.stdout);
    assert!(buy.status.success(), "{buy:?}");
    assert!(text.contains("pk-ticket buy"), "{text}");
    assert!(text.contains("--no-wait"), "{text}");
    assert!(
        text.contains("SEE ALSO") && text.contains("pk-ticket(1)"),
        "{text}"
    );

    // The completions: bash loads each and registers it for its binary;
    // zsh and fish files are their shell's own.
    let comp = root.join("share");
    for t in tools() {
        let bash = comp.join("bash-completion/completions").join(&t);
        Command::new("bash")
            .args([
                "--norc",
                "--noprofile",
                "-c",
                r#"source "$1" && complete -p "$2""#,
                "bash",
            ])
            .arg(&bash)
            .arg(&t)
            .timeout(TIMEOUT)
            .assert()
            .success()
            .stdout(predicates::str::ends_with(format!(" {t}\n")));
        let zsh =
            std::fs::read_to_string(comp.join("zsh/site-functions").join(format!("_{t}"))).unwrap();
        assert!(
            zsh.starts_with(&format!("#compdef {t}\n")),
            "{t}: {zsh:.80}"
        );
        let fish = std::fs::read_to_string(
            comp.join("fish/vendor_completions.d")
                .join(format!("{t}.fish")),
        )
        .unwrap();
        assert!(
            fish.contains(&format!("complete -c {t} ")),
            "{t}: {fish:.200}"
        );
    }
    let subcommands =
        std::fs::read_to_string(comp.join("bash-completion/completions/pk-ticket")).unwrap();
    assert!(subcommands.contains("init") && subcommands.contains("rush"));

    // Uninstall: not one file left (the standard directories stay).
    let n = files_below(dest).len();
    make("uninstall", dest)
        .assert()
        .success()
        .stdout(format!("removed {n} files from {}\n", root.display()));
    assert_eq!(files_below(dest), Vec::<PathBuf>::new());
}

#[test]
fn uninstall_removes_only_what_install_put_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path();
    let root = dest.join(PREFIX);
    let mine = [
        root.join("bin/other-tool"),
        root.join("bin/pk-bench"),
        root.join("bin/pk-bench-plot"),
        root.join("share/man/man1/other.1"),
        root.join("share/zsh/site-functions/_other"),
    ];
    for f in &mine {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "not posixkit's").unwrap();
    }
    make("uninstall", dest)
        .assert()
        .success()
        .stdout(format!("removed 0 files from {}\n", root.display()));
    let mut left = mine.to_vec();
    left.sort();
    assert_eq!(files_below(dest), left);
}

#[test]
fn the_generation_flags_are_hidden_and_checked() {
    let help = pk("fork")
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(!String::from_utf8_lossy(&help).contains("generate"));
    // Only as the first argument: elsewhere they are what they always were.
    pk("fork")
        .args(["--quiet", "--generate-man", "x"])
        .assert()
        .code(2)
        .stderr(predicates::str::starts_with(
            "pk-fork: unexpected argument '--generate-man'",
        ));
    let bad: &[(&[&str], &str)] = &[
        (
            &["--generate-completions", "tcsh"],
            "pk-ticket: invalid value 'tcsh' for '--generate-completions <SHELL>'",
        ),
        (
            &["--generate-completions"],
            "pk-ticket: a value is required for '--generate-completions <SHELL>'",
        ),
        (
            &["--generate-man"],
            "pk-ticket: a value is required for '--generate-man <DIR>'",
        ),
        (
            &["--generate-man", "a", "--generate-completions", "bash"],
            "pk-ticket: the argument '--generate-man <DIR>' cannot be used with",
        ),
        (
            &["--generate-man", "a", "b"],
            "pk-ticket: unexpected argument 'b'",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (args, msg) in bad {
        let out = pk("ticket")
            .current_dir(tmp.path())
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(msg) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        files_below(tmp.path()),
        Vec::<PathBuf>::new(),
        "nothing written"
    );
    // A directory that cannot be made: one line, and the errno's code.
    pk("ticket")
        .args(["--generate-man", "/proc/no/such/dir"])
        .assert()
        .code(66)
        .stderr("pk-ticket: mkdir(/proc/no/such/dir): No such file or directory\n");
    // Pages are written into a new directory; completions go to stdout.
    let dir = tmp.path().join("a/b");
    pk("ticket")
        .arg(format!("--generate-man={}", dir.display()))
        .assert()
        .success()
        .stdout("");
    let mut names: Vec<String> = files_below(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "pk-ticket-buy.1",
            "pk-ticket-init.1",
            "pk-ticket-rush.1",
            "pk-ticket-show.1",
            "pk-ticket.1"
        ]
    );
    pk("ticket")
        .args(["--generate-completions", "zsh"])
        .assert()
        .success()
        .stdout(predicates::str::starts_with("#compdef pk-ticket\n"));
}
