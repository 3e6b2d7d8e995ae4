//! One source of documentation per binary: its `--help`. Each `## pk-NAME`
//! section of README.md holds the binary's `--help` and every
//! subcommand's, verbatim, between `<!-- help:pk-NAME -->` and
//! `<!-- /help -->`; this test fails when they differ from what the
//! binaries print. `make readme` (this test with PK_UPDATE_README=1)
//! writes them in.

use std::path::Path;

use crate::help::{self, Help};

const END: &str = "<!-- /help -->";

/// The block README.md should hold for `bin`: its helps in one fenced
/// block, folded away under a one-line summary.
fn block(bin: &str, helps: &[&Help]) -> String {
    let subs = helps.iter().filter(|h| h.sub.is_some()).count();
    let what = if subs == 0 {
        String::new()
    } else {
        " and each command's".to_string()
    };
    let mut text = format!(
        "<!-- help:pk-{bin} -->\n<details><summary><code>pk-{bin} --help</code>{what}: every flag, output line and exit status</summary>\n\n```text\n"
    );
    for (i, h) in helps.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("$ {}\n", h.command()));
        text.push_str(h.text.trim_end());
        text.push('\n');
    }
    text.push_str("```\n\n</details>\n");
    text.push_str(END);
    text
}

/// The byte range of `## pk-NAME`'s section: from its heading to the next
/// `## ` heading (or the end).
fn section(readme: &str, bin: &str) -> Option<std::ops::Range<usize>> {
    let heading = format!("\n## pk-{bin}\n");
    let start = readme.find(&heading)? + 1;
    let body = start + heading.len() - 1;
    let end = readme[body..]
        .find("\n## ")
        .map_or(readme.len(), |i| body + i + 1);
    Some(start..end)
}

#[test]
fn readme_holds_every_help_as_the_binaries_print_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("PK_UPDATE_README").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    // pk-bench and pk-bench-plot are documented under Performance, by make
    // bench.
    for bin in help::binaries()
        .into_iter()
        .filter(|b| b != "bench" && b != "bench-plot")
    {
        let helps: Vec<&Help> = help::all().iter().filter(|h| h.bin == bin).collect();
        let want = block(&bin, &helps);
        let range = section(&readme, &bin)
            .unwrap_or_else(|| panic!("README.md has no `## pk-{bin}` section"));
        let begin = format!("<!-- help:pk-{bin} -->");
        assert_eq!(
            readme.matches(&begin).count(),
            usize::from(readme[range.clone()].contains(&begin)),
            "{begin} belongs in the `## pk-{bin}` section, once"
        );
        let found = readme[range.clone()].find(&begin).map(|i| {
            let start = range.start + i;
            let len = readme[start..]
                .find(END)
                .unwrap_or_else(|| panic!("{begin} without {END}"));
            start..start + len + END.len()
        });
        match found {
            Some(r) if readme[r.clone()] == want => {}
            Some(r) if update => readme.replace_range(r, &want),
            None if update => {
                // At the end of the section, before the next heading.
                let at = readme[..range.end].trim_end().len();
                readme.insert_str(at, &format!("\n\n{want}"));
            }
            _ => stale.push(format!("pk-{bin}")),
        }
    }
    if update {
        std::fs::write(&path, readme).unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "README.md's --help text of {stale:?} differs from the binaries': run `make readme` and commit README.md"
    );
}

#[test]
fn the_queue_prose_says_what_the_help_says() {
    // The hand-written part of `## pk-queue` (before its --help block)
    // described the locks of an older format (robust mutexes handed on
    // with EOWNERDEAD) and said stat waits for a held lock, where the help
    // says lock words name their holder and stat gives up after 1s.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let range = section(&readme, "queue").expect("a `## pk-queue` section");
    let text = &readme[range];
    let prose = &text[..text.find("<!-- help:pk-queue -->").unwrap_or(text.len())];
    let help = help::all()
        .iter()
        .filter(|h| h.bin == "queue" && h.sub.is_none())
        .map(|h| h.text.clone())
        .collect::<String>();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("a lock names its holder"), "{help}");
    assert!(help.contains("`stat` waits 1s for such a lock"), "{help}");
    let prose = prose.split_whitespace().collect::<Vec<_>>().join(" ");
    for stale in [
        "EOWNERDEAD",
        "robust process-shared mutexes",
        "and for `stat`, it waits",
    ] {
        assert!(
            !prose.contains(stale),
            "README's pk-queue prose says {stale:?}"
        );
    }
    for claim in ["name their holder", "`stat` waits 1 s"] {
        assert!(
            prose.contains(claim),
            "README's pk-queue prose lacks {claim:?}"
        );
    }
}
