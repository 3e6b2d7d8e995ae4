//! Items, read as they come: from stdin or the `-a` files in turn,
//! separated by newlines (default), NUL bytes (`-0`) or one byte (`-d`).
//!
//! The reader holds one buffer (64 KiB, more only for a longer item) and
//! never the input as a whole, so ten million lines take the memory of
//! one. It never blocks: [`Input::take`] says when it needs the descriptor
//! to be readable, and the scheduler polls it beside its jobs.
//!
//! An empty item (an empty line) is a job with an empty argument, as in
//! GNU parallel, unless `--skip-empty`. With `-n`, a job takes fewer items
//! when more would not fit in one command line ([`Input::limits`]), as
//! xargs and parallel do; an item that would not fit even alone is an
//! error, as an item over [`MAX_ITEM`] is. A last item without a separator
//! counts; the empty "item" after the last separator does not.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use super::template::Shape;
use crate::error::{Error, Result};

/// The most bytes one argument may take, its NUL included (Linux's
/// MAX_ARG_STRLEN, 32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// What each argument costs execve(2) beside its text: its pointer.
pub const POINTER: usize = std::mem::size_of::<usize>();

/// How much room the items of one job have on its command line.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Where the items go in the command.
    pub shape: Shape,
    /// The most bytes of argument text (NULs included) the items of a job
    /// of several items may take: xargs' 128 KiB less the fixed text.
    pub group_text: usize,
    /// The most bytes the items may add to what execve(2) counts against
    /// its limit (their text and a pointer per argument they become):
    /// that limit less the environment and the fixed arguments.
    pub exec_room: usize,
}

/// The weight of the items gathered for one job.
#[derive(Debug, Default, Clone, Copy)]
struct Weight {
    /// Argument text, NULs included.
    text: usize,
    /// Text and pointers, as execve(2) counts them.
    exec: usize,
    /// Each item once, with its separator (a space or a NUL).
    once: usize,
}

impl Limits {
    /// The weight of `group` with one more item of `len` bytes.
    fn with(&self, group: Weight, len: usize) -> Weight {
        // {//} of an item without a slash is `.`: never more than this.
        let once = len.max(1) + 1;
        let copies = self.shape.lone + self.shape.embedded.iter().map(|e| e.1).sum::<usize>();
        let text = once.saturating_mul(copies);
        Weight {
            text: group.text.saturating_add(text),
            exec: group
                .exec
                .saturating_add(text)
                .saturating_add(POINTER.saturating_mul(self.shape.lone)),
            once: group.once.saturating_add(once),
        }
    }

    /// Whether a job whose items weigh `w` (the last of them `len` bytes
    /// long) can be run at all: within execve's limit, each argument
    /// within MAX_ARG_STRLEN.
    fn runs(&self, w: Weight, len: usize) -> bool {
        w.exec <= self.exec_room
            && (self.shape.lone == 0 || len.max(1) < MAX_ARG_STRLEN)
            && self.shape.embedded.iter().all(|&(own, times)| {
                // Its text, and the items joined by spaces, `times` times.
                own.saturating_add(times.saturating_mul(w.once - 1)) <= MAX_ARG_STRLEN
            })
    }
}

/// The longest item accepted. Linux refuses a single argument longer than
/// 128 KiB (MAX_ARG_STRLEN) anyway; this only bounds the buffer.
pub const MAX_ITEM: usize = 1 << 22;

const CHUNK: usize = 64 * 1024;

/// Where items come from.
#[derive(Debug)]
pub struct Source {
    /// `stdin` or the file's path, for messages.
    pub name: String,
    /// The open descriptor.
    pub fd: OwnedFd,
}

impl Source {
    /// Our stdin (a duplicate, so that the commands' /dev/null is unaffected).
    pub fn stdin() -> Result<Source> {
        let fd = crate::cmd::stdin_for_input()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("dup", "stdin", &e))?;
        Ok(Source {
            name: "stdin".into(),
            fd,
        })
    }

    /// An `-a` file, opened now so that a missing one stops everything
    /// before any command runs; `-` is stdin.
    pub fn file(path: &PathBuf) -> Result<Source> {
        if path.as_os_str() == "-" {
            return Source::stdin();
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path.display(), &e))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::sys("read", path.display(), Errno::EISDIR));
        }
        Ok(Source {
            name: path.display().to_string(),
            fd: file.into(),
        })
    }
}

/// What [`Input::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// The items of one job (1 to `-n` of them).
    Items(Vec<Vec<u8>>),
    /// Nothing yet: poll [`Input::fd`] for reading, then [`Input::fill`].
    NeedRead,
    /// Every source is at end of file and every item taken.
    End,
}

/// The streaming item reader.
#[derive(Debug)]
pub struct Input {
    sources: VecDeque<Source>,
    sep: u8,
    skip_empty: bool,
    per_job: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The current source is at end of file.
    at_eof: bool,
    /// Items gathered for the next job (`-n`).
    group: Vec<Vec<u8>>,
    /// Their weight on the command line.
    weight: Weight,
    /// The room the items of one job have; an item that would take a
    /// group past it begins the next one. `None`: no limit.
    pub limits: Option<Limits>,
    /// An item read but left for the next group.
    pending: Option<Vec<u8>>,
    /// Items read so far, for messages.
    count: u64,
    /// Bytes read so far.
    pub bytes: u64,
}

impl Input {
    /// Items from `sources` in turn, split at `sep`, `per_job` per job.
    pub fn new(sources: Vec<Source>, sep: u8, skip_empty: bool, per_job: usize) -> Input {
        Input {
            sources: sources.into(),
            sep,
            skip_empty,
            per_job: per_job.max(1),
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            at_eof: false,
            group: Vec::new(),
            weight: Weight::default(),
            limits: None,
            pending: None,
            count: 0,
            bytes: 0,
        }
    }

    /// The descriptor to poll while [`Take::NeedRead`].
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.sources.front().map(|s| s.fd.as_fd())
    }

    /// Read once from the current source (it was polled readable, or is a
    /// regular file). EINTR and EAGAIN are not errors.
    pub fn fill(&mut self) -> Result<()> {
        let Some(src) = self.sources.front() else {
            return Ok(());
        };
        if self.start > 0 && (self.start == self.end || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_ITEM {
                return Err(Error::data(
                    "read",
                    &src.name,
                    format!("item {} is longer than {} bytes", self.count + 1, MAX_ITEM),
                ));
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_ITEM), 0);
        }
        match nix::unistd::read(src.fd.as_fd(), &mut self.buf[self.end..]) {
            Ok(0) => self.at_eof = true,
            Ok(n) => {
                self.end += n;
                self.bytes += n as u64;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(Error::sys("read", &src.name, e)),
        }
        Ok(())
    }

    /// The next job's items, or what is needed first.
    pub fn take(&mut self) -> Result<Take> {
        loop {
            if self.group.len() >= self.per_job {
                return Ok(Take::Items(self.take_group()));
            }
            let item = match self.pending.take() {
                Some(item) => Some(item),
                None => self.next_item()?,
            };
            match item {
                Some(item) => {
                    if self.skip_empty && item.is_empty() {
                        continue;
                    }
                    if let Some(l) = &self.limits {
                        let w = l.with(self.weight, item.len());
                        if !self.group.is_empty()
                            && (!l.runs(w, item.len()) || w.text > l.group_text)
                        {
                            self.pending = Some(item);
                            return Ok(Take::Items(self.take_group()));
                        }
                        if !l.runs(w, item.len()) {
                            let name = self.sources.front().map_or("input", |s| &s.name);
                            return Err(Error::data(
                                "read",
                                name,
                                format!(
                                    "item {} ({} bytes) does not fit in a command line \
                                     (E2BIG: the command, its environment and the item are too long)",
                                    self.count,
                                    item.len()
                                ),
                            ));
                        }
                        self.weight = w;
                    }
                    self.group.push(item);
                }
                None if self.sources.is_empty() => {
                    return Ok(if self.group.is_empty() {
                        Take::End
                    } else {
                        Take::Items(self.take_group())
                    });
                }
                None => return Ok(Take::NeedRead),
            }
        }
    }

    fn take_group(&mut self) -> Vec<Vec<u8>> {
        self.weight = Weight::default();
        std::mem::take(&mut self.group)
    }

    /// One item from the buffer, or `None` when more must be read (or all
    /// sources are done).
    fn next_item(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(src) = self.sources.front() else {
            return Ok(None);
        };
        let data = &self.buf[self.start..self.end];
        let (item, used) = match data.iter().position(|&b| b == self.sep) {
            Some(i) => (&data[..i], i + 1),
            None if self.at_eof => {
                if data.is_empty() {
                    // This source is done: on to the next one.
                    self.sources.pop_front();
                    self.at_eof = false;
                    self.start = 0;
                    self.end = 0;
                    return self.next_item();
                }
                (data, data.len())
            }
            None => return Ok(None),
        };
        self.count += 1;
        if self.sep != 0 && item.contains(&0) {
            return Err(Error::data(
                "read",
                &src.name,
                format!("item {} holds a NUL byte (use -0)", self.count),
            ));
        }
        let item = item.to_vec();
        self.start += used;
        Ok(Some(item))
    }
}

/// The byte a `-d` value names: one character, or an escape `\n`, `\t`,
/// `\r`, `\0`, `\\`, `\xHH` or `\OOO` (octal), as xargs reads them.
pub fn parse_delimiter(s: &str) -> std::result::Result<u8, String> {
    let b = s.as_bytes();
    let bad = || format!("'{s}' is not one byte nor an escape such as \\n, \\0, \\x1f, \\037");
    match b {
        [] => Err("the delimiter is empty: give one byte (\\0 for NUL)".to_string()),
        [c] => Ok(*c),
        [b'\\', rest @ ..] => match rest {
            [b'n'] => Ok(b'\n'),
            [b't'] => Ok(b'\t'),
            [b'r'] => Ok(b'\r'),
            [b'a'] => Ok(7),
            [b'b'] => Ok(8),
            [b'f'] => Ok(12),
            [b'v'] => Ok(11),
            [b'\\'] => Ok(b'\\'),
            [b'x', hex @ ..] if (1..=2).contains(&hex.len()) => {
                u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| bad())?, 16)
                    .map_err(|_| bad())
            }
            oct if (1..=3).contains(&oct.len())
                && oct.iter().all(|c| (b'0'..=b'7').contains(c)) =>
            {
                u8::try_from(
                    u32::from_str_radix(std::str::from_utf8(oct).map_err(|_| bad())?, 8)
                        .map_err(|_| bad())?,
                )
                .map_err(|_| bad())
            }
            _ => Err(bad()),
        },
        _ => {
            // One character that is more than one byte in UTF-8.
            Err(format!(
                "'{s}' is more than one byte: a delimiter is one byte"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(data: &[u8]) -> Source {
        let (r, w) = crate::pipe::pipe().unwrap();
        w.write_all(data).unwrap();
        drop(w);
        Source {
            name: "test".into(),
            fd: r.into(),
        }
    }

    fn all(input: &mut Input) -> Result<Vec<Vec<String>>> {
        let mut jobs = Vec::new();
        loop {
            match input.take()? {
                Take::Items(items) => jobs.push(
                    items
                        .into_iter()
                        .map(|i| String::from_utf8(i).unwrap())
                        .collect(),
                ),
                Take::NeedRead => input.fill()?,
                Take::End => return Ok(jobs),
            }
        }
    }

    #[test]
    fn lines_keep_empty_ones_and_a_last_line_without_newline() {
        let mut i = Input::new(vec![source(b"a\n\nb\nc")], b'\n', false, 1);
        assert_eq!(all(&mut i).unwrap(), [["a"], [""], ["b"], ["c"]]);
        let mut i = Input::new(vec![source(b"a\n\nb\n")], b'\n', true, 1);
        assert_eq!(all(&mut i).unwrap(), [["a"], ["b"]]);
        let mut i = Input::new(vec![source(b"")], b'\n', false, 1);
        assert!(all(&mut i).unwrap().is_empty());
        let mut i = Input::new(vec![source(b"\n")], b'\n', false, 1);
        assert_eq!(all(&mut i).unwrap(), [[""]]);
    }

    #[test]
    fn groups_of_n_across_sources() {
        let mut i = Input::new(vec![source(b"1\n2\n3"), source(b"4\n5\n")], b'\n', false, 2);
        assert_eq!(
            all(&mut i).unwrap(),
            [vec!["1", "2"], vec!["3", "4"], vec!["5"]]
        );
    }

    #[test]
    fn a_group_stops_before_it_outgrows_the_byte_budget() {
        let mut i = Input::new(
            vec![source(b"aaaa\nbb\ncc\nd\neeeeeeeeee\nf\n")],
            b'\n',
            false,
            10,
        );
        i.limits = Some(Limits {
            shape: Shape {
                fixed_bytes: 0,
                fixed_args: 0,
                lone: 1,
                embedded: Vec::new(),
            },
            group_text: 8,
            exec_room: usize::MAX,
        });
        // Each item costs its length and a NUL; a lone item that is too
        // long still goes, alone.
        assert_eq!(
            all(&mut i).unwrap(),
            [
                vec!["aaaa", "bb"],
                vec!["cc", "d"],
                vec!["eeeeeeeeee"],
                vec!["f"]
            ]
        );
    }

    #[test]
    fn every_copy_of_the_items_and_each_pointer_count() {
        // Two lone {} and an argument with {} twice: an item of 2 bytes
        // is 4 copies of 3 bytes (with its NUL or space) and 2 pointers.
        let mut i = Input::new(vec![source(b"ab\ncd\nef\n")], b'\n', false, 10);
        i.limits = Some(Limits {
            shape: Shape {
                fixed_bytes: 3,
                fixed_args: 1,
                lone: 2,
                embedded: vec![(3, 2)],
            },
            group_text: usize::MAX,
            exec_room: 2 * (12 + 2 * POINTER),
        });
        assert_eq!(all(&mut i).unwrap(), [vec!["ab", "cd"], vec!["ef"]]);
    }

    #[test]
    fn an_item_that_fits_no_command_line_is_bad_input_after_the_ones_before() {
        // {} three times in one argument: 3 × 50 000 bytes, past
        // MAX_ARG_STRLEN (and the input within a pipe's 64 KiB).
        let mut data = b"a\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 50_000));
        data.extend(b"\nb\n");
        let mut i = Input::new(vec![source(&data)], b'\n', false, 1);
        i.limits = Some(Limits {
            shape: Shape {
                fixed_bytes: 3,
                fixed_args: 1,
                lone: 0,
                embedded: vec![(3, 3)],
            },
            group_text: usize::MAX,
            exec_room: usize::MAX,
        });
        let mut next = || loop {
            match i.take() {
                Ok(Take::NeedRead) => i.fill().unwrap(),
                other => return other,
            }
        };
        assert_eq!(next().unwrap(), Take::Items(vec![b"a".to_vec()]));
        let e = next().unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::BadData, "{e}");
        assert!(e.to_string().contains("item 2 (50000 bytes)"), "{e}");
    }

    #[test]
    fn nul_separated_items_may_hold_newlines() {
        let mut i = Input::new(vec![source(b"a b\nc\0d\0")], 0, false, 1);
        assert_eq!(all(&mut i).unwrap(), [["a b\nc"], ["d"]]);
    }

    #[test]
    fn a_nul_in_a_line_is_bad_data() {
        let mut i = Input::new(vec![source(b"ok\nx\0y\n")], b'\n', false, 1);
        assert_eq!(i.take().unwrap(), Take::NeedRead);
        i.fill().unwrap();
        assert_eq!(i.take().unwrap(), Take::Items(vec![b"ok".to_vec()]));
        let e = i.take().unwrap_err();
        assert_eq!(
            e.to_string(),
            "read(test): item 2 holds a NUL byte (use -0)"
        );
    }

    #[test]
    fn long_items_grow_the_buffer() {
        let long = vec![b'x'; 3 * CHUNK + 5];
        let mut data = long.clone();
        data.extend_from_slice(b"\nshort\n");
        let (r, w) = crate::pipe::pipe().unwrap();
        let t = std::thread::spawn(move || w.write_all(&data).unwrap());
        let mut i = Input::new(
            vec![Source {
                name: "t".into(),
                fd: r.into(),
            }],
            b'\n',
            false,
            1,
        );
        let jobs = all(&mut i).unwrap();
        t.join().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0][0].len(), long.len());
        assert_eq!(jobs[1], ["short"]);
    }

    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter(","), Ok(b','));
        assert_eq!(parse_delimiter("\\n"), Ok(b'\n'));
        assert_eq!(parse_delimiter("\\0"), Ok(0));
        assert_eq!(parse_delimiter("\\x1f"), Ok(0x1f));
        assert_eq!(parse_delimiter("\\037"), Ok(0o37));
        assert_eq!(parse_delimiter("\\\\"), Ok(b'\\'));
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("").is_err());
        assert!(parse_delimiter("\\777").is_err());
        assert!(parse_delimiter("é").is_err());
    }
}
