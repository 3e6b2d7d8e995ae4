//! The command template: CMD ARGS with replacement strings, turned into
//! one argv per job.
//!
//! | string | becomes (GNU parallel's meaning) |
//! |---|---|
//! | `{}` | the item (`-I STR` names another string) |
//! | `{.}` | the item without its extension: `a/b.tar.gz` → `a/b.tar` |
//! | `{/}` | the basename: everything up to the last `/` removed |
//! | `{//}` | the dirname, as dirname(1): `a/b` → `a`, `b` → `.`, `/x/` → `/` |
//! | `{/.}` | the basename without its extension |
//! | `{#}` | the job's sequence number, from 1 |
//! | `{%}` | the job slot, from 1 to the slots of its host |
//!
//! Without any replacement string the items are appended as arguments,
//! as xargs does. With `-n N` a job has up to N items: an argument that
//! is exactly an item string becomes one argument per item, and an item
//! string inside other text is replaced by the items joined with spaces.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// What an item string does to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xform {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Item(Xform),
    Seq,
    Slot,
}

/// How the items of a job weigh on its command line ([`Template::shape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The bytes of the arguments that are not items themselves: their
    /// text and a NUL each.
    pub fixed_bytes: usize,
    /// How many such arguments.
    pub fixed_args: usize,
    /// The arguments each item becomes: one per lone item string (an
    /// argument that is just `{}`, or `{.}`...), or one when the items
    /// are appended.
    pub lone: usize,
    /// For each argument that holds the items inside other text: its
    /// own bytes (NUL included) and how many times the items appear in it.
    pub embedded: Vec<(usize, usize)>,
}

/// A parsed command template.
#[derive(Debug, Clone)]
pub struct Template {
    args: Vec<Vec<Piece>>,
    /// No replacement string anywhere: items are appended.
    append: bool,
}

/// The fixed strings, longest first so `{//}` is not read as `{/}`.
const FIXED: [(&[u8], Piece); 6] = [
    (b"{//}", Piece::Item(Xform::Dir)),
    (b"{/.}", Piece::Item(Xform::BaseNoExt)),
    (b"{/}", Piece::Item(Xform::Base)),
    (b"{.}", Piece::Item(Xform::NoExt)),
    (b"{#}", Piece::Seq),
    (b"{%}", Piece::Slot),
];

impl Template {
    /// Parse `command`; `item` is the string that stands for the whole
    /// item (`{}`, or `-I STR`'s).
    pub fn new(command: &[OsString], item: &[u8]) -> Template {
        let mut append = true;
        let args = command
            .iter()
            .map(|a| {
                let pieces = parse(a.as_bytes(), item);
                if pieces.iter().any(|p| !matches!(p, Piece::Lit(_))) {
                    append = false;
                }
                pieces
            })
            .collect();
        Template { args, append }
    }

    /// How the items of a job weigh on its command line.
    pub fn shape(&self) -> Shape {
        let mut shape = Shape {
            fixed_bytes: 0,
            fixed_args: 0,
            lone: usize::from(self.append),
            embedded: Vec::new(),
        };
        for pieces in &self.args {
            if let [Piece::Item(_)] = pieces.as_slice() {
                shape.lone += 1;
                continue;
            }
            // The argument's own text and its NUL.
            let lit = 1 + pieces
                .iter()
                .map(|p| match p {
                    Piece::Lit(l) => l.len(),
                    // A job number or slot: at most 20 digits.
                    Piece::Seq | Piece::Slot => 20,
                    Piece::Item(_) => 0,
                })
                .sum::<usize>();
            let occurrences = pieces
                .iter()
                .filter(|p| matches!(p, Piece::Item(_)))
                .count();
            shape.fixed_bytes += lit;
            shape.fixed_args += 1;
            if occurrences > 0 {
                shape.embedded.push((lit, occurrences));
            }
        }
        shape
    }

    /// The argv of job `seq` on slot `slot` with these items.
    pub fn render(&self, items: &[Vec<u8>], seq: u64, slot: usize) -> Vec<Vec<u8>> {
        let mut argv =
            Vec::with_capacity(self.args.len() + if self.append { items.len() } else { 0 });
        for pieces in &self.args {
            if let [Piece::Item(x)] = pieces.as_slice() {
                argv.extend(items.iter().map(|i| xform(*x, i)));
                continue;
            }
            let mut arg = Vec::new();
            for p in pieces {
                match p {
                    Piece::Lit(l) => arg.extend_from_slice(l),
                    Piece::Item(x) => {
                        for (n, i) in items.iter().enumerate() {
                            if n > 0 {
                                arg.push(b' ');
                            }
                            arg.extend_from_slice(&xform(*x, i));
                        }
                    }
                    Piece::Seq => arg.extend_from_slice(seq.to_string().as_bytes()),
                    Piece::Slot => arg.extend_from_slice(slot.to_string().as_bytes()),
                }
            }
            argv.push(arg);
        }
        if self.append {
            argv.extend(items.iter().cloned());
        }
        argv
    }
}

fn parse(arg: &[u8], item: &[u8]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    'scan: while i < arg.len() {
        let rest = &arg[i..];
        let mut found = None;
        if !item.is_empty() && rest.starts_with(item) {
            found = Some((item.len(), Piece::Item(Xform::Whole)));
        } else if rest[0] == b'{' {
            for (s, p) in &FIXED {
                if rest.starts_with(s) {
                    found = Some((s.len(), p.clone()));
                    break;
                }
            }
        }
        if let Some((len, piece)) = found {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
            i += len;
            continue 'scan;
        }
        lit.push(arg[i]);
        i += 1;
    }
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

fn xform(x: Xform, item: &[u8]) -> Vec<u8> {
    match x {
        Xform::Whole => item.to_vec(),
        Xform::NoExt => no_ext(item).to_vec(),
        Xform::Base => base(item).to_vec(),
        Xform::Dir => dir(item),
        Xform::BaseNoExt => no_ext(base(item)).to_vec(),
    }
}

/// Everything after the last `/`.
fn base(item: &[u8]) -> &[u8] {
    match item.iter().rposition(|&b| b == b'/') {
        Some(i) => &item[i + 1..],
        None => item,
    }
}

/// Without the last `.` and what follows it, when no `/` or `.` follows
/// that dot: `a/b.tar.gz` → `a/b.tar`, `.bashrc` → ``, `d.x/f` → `d.x/f`.
fn no_ext(item: &[u8]) -> &[u8] {
    match item.iter().rposition(|&b| b == b'.' || b == b'/') {
        Some(i) if item[i] == b'.' => &item[..i],
        _ => item,
    }
}

/// dirname(1): trailing slashes off, the last component off, the
/// slashes before it off; `.` when no slash is left, `/` for the root.
fn dir(item: &[u8]) -> Vec<u8> {
    let trim = |s: &[u8]| -> usize { s.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1) };
    let end = trim(item);
    if end == 0 {
        return if item.is_empty() {
            b".".to_vec()
        } else {
            b"/".to_vec()
        };
    }
    let Some(slash) = item[..end].iter().rposition(|&b| b == b'/') else {
        return b".".to_vec();
    };
    let end = trim(&item[..slash]);
    if end == 0 {
        b"/".to_vec()
    } else {
        item[..end].to_vec()
    }
}

/// `argv` as one shell command line, byte for byte: each argument quoted
/// when it needs it (`'a b'`, `'c'"'"'d'`), as GNU parallel quotes them
/// (only letters, digits and `_ . / + -` go bare), and a command name
/// that is a shell's reserved word (`if`, `then`, `time` ...) quoted too,
/// so that a shell runs it as a command (`'if' x`) rather than reading
/// `if x` as the start of an if statement. `--dry-run`, `-t` and the
/// joblog show it; `sh` run on it passes the very same arguments, bytes
/// that are not UTF-8 included.
pub fn shell_bytes(argv: &[Vec<u8>]) -> Vec<u8> {
    let mut line = Vec::new();
    for (n, a) in argv.iter().enumerate() {
        if n > 0 {
            line.push(b' ');
        }
        quote_into(&mut line, a, n == 0 && RESERVED.contains(&a.as_slice()));
    }
    line
}

/// The words that sh, bash, ksh or zsh reserve where a command name goes
/// (those made of the characters that would go bare; `!`, `{`, `[[` ...
/// are quoted anyway). A word here, quoted, is a plain command name in
/// each of them.
const RESERVED: [&[u8]; 29] = [
    b"case",
    b"coproc",
    b"declare",
    b"do",
    b"done",
    b"elif",
    b"else",
    b"end",
    b"esac",
    b"export",
    b"fi",
    b"float",
    b"for",
    b"foreach",
    b"function",
    b"if",
    b"in",
    b"integer",
    b"local",
    b"namespace",
    b"nocorrect",
    b"readonly",
    b"repeat",
    b"select",
    b"then",
    b"time",
    b"typeset",
    b"until",
    b"while",
];

/// [`shell_bytes`] as text, for messages (bytes that are not UTF-8 shown
/// as U+FFFD).
pub fn shell_line(argv: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&shell_bytes(argv)).into_owned()
}

/// Append `arg`, quoted if it needs it, or always with `force`.
fn quote_into(line: &mut Vec<u8>, arg: &[u8], force: bool) {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_./+-".contains(&b);
    if !force && !arg.is_empty() && arg.iter().all(|&b| safe(b)) {
        line.extend_from_slice(arg);
        return;
    }
    line.push(b'\'');
    for &b in arg {
        if b == b'\'' {
            line.extend_from_slice(b"'\"'\"'");
        } else {
            line.push(b);
        }
    }
    line.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(cmd: &[&str]) -> Template {
        let cmd: Vec<OsString> = cmd.iter().map(OsString::from).collect();
        Template::new(&cmd, b"{}")
    }

    fn r(tpl: &Template, items: &[&str]) -> Vec<String> {
        let items: Vec<Vec<u8>> = items.iter().map(|i| i.as_bytes().to_vec()).collect();
        tpl.render(&items, 7, 2)
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn the_strings_of_gnu_parallel() {
        // What GNU parallel 20221122 prints for the same items.
        let tpl = t(&[
            "echo", "[{}]", "[{.}]", "[{/}]", "[{//}]", "[{/.}]", "{#}", "{%}",
        ]);
        let cases = [
            (
                "a/b.c.d",
                ["[a/b.c.d]", "[a/b.c]", "[b.c.d]", "[a]", "[b.c]"],
            ),
            (".bashrc", ["[.bashrc]", "[]", "[.bashrc]", "[.]", "[]"]),
            ("/x/y/", ["[/x/y/]", "[/x/y/]", "[]", "[/x]", "[]"]),
            (
                "dir.x/file",
                [
                    "[dir.x/file]",
                    "[dir.x/file]",
                    "[file]",
                    "[dir.x]",
                    "[file]",
                ],
            ),
            ("", ["[]", "[]", "[]", "[.]", "[]"]),
            ("/x", ["[/x]", "[/x]", "[x]", "[/]", "[x]"]),
        ];
        for (item, want) in cases {
            let got = r(&tpl, &[item]);
            assert_eq!(&got[1..6], &want, "{item:?}");
            assert_eq!(&got[6..], ["7", "2"]);
        }
    }

    #[test]
    fn without_a_string_items_are_appended() {
        assert_eq!(
            r(&t(&["echo", "x"]), &["a b", "c"]),
            ["echo", "x", "a b", "c"]
        );
        assert_eq!(
            r(&t(&["echo", "{#}"]), &["a"]),
            ["echo", "7"],
            "{{#}} is a string"
        );
        assert_eq!(r(&t(&["echo", "{}"]), &["a", "b"]), ["echo", "a", "b"]);
        assert_eq!(r(&t(&["echo", "x{}y"]), &["a", "b"]), ["echo", "xa by"]);
        assert_eq!(r(&t(&["{}", "-v"]), &["prog"]), ["prog", "-v"]);
        assert_eq!(r(&t(&["echo", "{", "}{}{"]), &["a"]), ["echo", "{", "}a{"]);
        assert_eq!(r(&t(&["echo", ""]), &["a"]), ["echo", "", "a"]);
    }

    #[test]
    fn another_item_string() {
        let cmd: Vec<OsString> = ["echo", "XX", "{}"].iter().map(OsString::from).collect();
        let tpl = Template::new(&cmd, b"XX");
        let got = tpl.render(&[b"a".to_vec()], 1, 1);
        assert_eq!(got, [b"echo".to_vec(), b"a".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn shell_lines_quote_what_needs_it() {
        let argv: Vec<Vec<u8>> = ["echo", "a b", "c'd", "e", "", "x=y", "-n", "+a_b.c/d"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        assert_eq!(
            shell_line(&argv),
            r#"echo 'a b' 'c'"'"'d' e '' 'x=y' -n +a_b.c/d"#
        );
        assert_eq!(shell_bytes(&[b"a\xffb".to_vec()]), b"'a\xffb'");
    }

    #[test]
    fn a_reserved_word_is_quoted_where_a_command_name_goes() {
        let line = |argv: &[&str]| {
            shell_line(
                &argv
                    .iter()
                    .map(|a| a.as_bytes().to_vec())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(line(&["if", "then", "fi"]), "'if' then fi");
        assert_eq!(line(&["time", "x"]), "'time' x");
        assert_eq!(line(&["echo", "if"]), "echo if");
        assert_eq!(line(&["iff", "x"]), "iff x");
    }
}
