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
