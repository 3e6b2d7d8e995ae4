//! The decoder: a pickle machine restricted to the whitelisted opcodes and
//! names, building on an arena of nodes that refer to each other by index.
//! Nothing is materialised before STOP; [`Decoder::tree`] then makes the
//! one value, bounded in depth and in bytes (see the module docs above).

use super::{BUDGET_BASE, BUDGET_PER_BYTE, Exception, MAX_DEPTH, Token, Value};
use crate::error::{Error, Result};

/// The Token class, by `module.name`.
const TOKEN: (&str, &str) = ("multiprocessing.managers", "Token");

/// Exceptions a manager may send in an `#ERROR` answer, by `module.name`.
const EXCEPTIONS: &[(&str, &str)] = &[
    ("_queue", "Empty"),
    ("queue", "Empty"),
    ("queue", "Full"),
    ("builtins", "Exception"),
    ("builtins", "ValueError"),
    ("builtins", "KeyError"),
    ("builtins", "TypeError"),
    ("builtins", "AttributeError"),
    ("builtins", "RuntimeError"),
    ("builtins", "EOFError"),
    ("builtins", "OSError"),
];

/// One node of the decoding arena. A str or bytes is where it lies in the
/// input; a container or record names its parts by arena index.
#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// A str: `len` bytes of the input from `at`, checked UTF-8.
    Str {
        at: usize,
        len: usize,
    },
    /// A bytes object: `len` bytes of the input from `at`.
    Bytes {
        at: usize,
        len: usize,
    },
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    /// A whitelisted class named by GLOBAL / STACK_GLOBAL.
    Class(&'static str, &'static str),
    /// `Token.__new__(Token)`, waiting for its BUILD.
    NewToken,
    /// A built Token: its state, a tuple (str, address, str), checked.
    Token(usize),
    /// An exception: its class and its arguments, a tuple.
    Exception(&'static str, &'static str, usize),
}

/// A stack entry: a MARK, or a node's index.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Node(usize),
}

pub(super) struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u32, usize>,
}

fn refuse(why: impl Into<String>) -> Error {
    Error::data("unpickle", "python peer", why.into())
}

fn too_big() -> Error {
    refuse("a pickle that expands into too many values")
}

fn too_deep() -> Error {
    refuse(format!(
        "values nested more than {MAX_DEPTH} deep (or a list that contains itself)"
    ))
}

impl<'a> Decoder<'a> {
    /// A decoder of `input`.
    pub(super) fn new(input: &'a [u8]) -> Self {
        Decoder {
            input,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            memo: std::collections::HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| refuse("a pickle cut short"))?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32le(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn len64(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        usize::try_from(n).map_err(|_| refuse("a length beyond memory"))
    }

    fn push(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(Slot::Node(self.arena.len() - 1));
    }

    fn pop(&mut self) -> Result<usize> {
        match self.stack.pop() {
            Some(Slot::Node(i)) => Ok(i),
            Some(Slot::Mark) => Err(refuse("a mark where a value belongs")),
            None => Err(refuse("an opcode with too few values on the stack")),
        }
    }

    fn top(&self) -> Result<usize> {
        match self.stack.last() {
            Some(Slot::Node(i)) => Ok(*i),
            _ => Err(refuse("an opcode with no value to work on")),
        }
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<usize>> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| refuse("no mark to pop back to"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Node(i) => i,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }

    /// A str of `n` bytes at the current position, checked UTF-8.
    fn string(&mut self, n: usize) -> Result<()> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| refuse("a str that is not UTF-8"))?;
        self.push(Node::Str { at, len: n });
        Ok(())
    }

    /// A bytes object of `n` bytes at the current position.
    fn bytes(&mut self, n: usize) -> Result<()> {
        let at = self.pos;
        self.take(n)?;
        self.push(Node::Bytes { at, len: n });
        Ok(())
    }

    fn str_at(&self, i: usize) -> Result<&'a str> {
        match self.arena[i] {
            Node::Str { at, len } => {
                Ok(std::str::from_utf8(&self.input[at..at + len]).expect("checked when read"))
            }
            _ => Err(refuse("a global named by something other than two strs")),
        }
    }

    fn class(&mut self, module: &str, name: &str) -> Result<()> {
        let known = std::iter::once(&TOKEN)
            .chain(EXCEPTIONS)
            .find(|(m, n)| *m == module && *n == name);
        let Some(&(m, n)) = known else {
            return Err(refuse(format!(
                "a pickle that names {module}.{name}, which is not allowed"
            )));
        };
        self.push(Node::Class(m, n));
        Ok(())
    }

    fn int(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > 16 {
            return Err(refuse(format!("an int of {} bytes", bytes.len())));
        }
        let neg = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = [if neg { 0xff } else { 0 }; 16];
        buf[..bytes.len()].copy_from_slice(bytes);
        self.push(Node::Int(i128::from_le_bytes(buf)));
        Ok(())
    }

    /// Whether node `i` is a str.
    fn is_str(&self, i: usize) -> bool {
        matches!(self.arena[i], Node::Str { .. })
    }

    pub(super) fn run(&mut self) -> Result<usize> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(refuse(format!("pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a hint for buffered readers
                }
                b'.' => {
                    let root = self.pop()?;
                    if !self.stack.is_empty() {
                        return Err(refuse("values left on the stack at STOP"));
                    }
                    if self.pos != self.input.len() {
                        return Err(refuse("bytes after the pickle's STOP"));
                    }
                    return Ok(root);
                }
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.push(Node::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Node::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.push(Node::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.int(b)?;
                }
                0x8b => {
                    let n = self.u32le()? as usize;
                    let b = self.take(n)?;
                    self.int(b)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.push(Node::Float(v));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    self.string(n)?;
                }
                b'X' => {
                    let n = self.u32le()? as usize;
                    self.string(n)?;
                }
                0x8d => {
                    let n = self.len64()?;
                    self.string(n)?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                b'B' => {
                    let n = self.u32le()? as usize;
                    self.bytes(n)?;
                }
                0x8e => {
                    let n = self.len64()?;
                    self.bytes(n)?;
                }
                b')' => self.push(Node::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(refuse("a tuple opcode with too few values"));
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b'(' => self.stack.push(Slot::Mark),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                b']' => self.push(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    match &mut self.arena[list] {
                        Node::List(items) => items.push(item),
                        _ => return Err(refuse("APPEND to something that is not a list")),
                    }
                }
                b'e' => {
                    let new = self.pop_mark()?;
                    let list = self.top()?;
                    match &mut self.arena[list] {
                        Node::List(items) => items.extend(new),
                        _ => return Err(refuse("APPENDS to something that is not a list")),
                    }
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(refuse("a dict with a key and no value"));
                    }
                    let pairs = items.chunks(2).map(|p| (p[0], p[1])).collect();
                    self.push(Node::Dict(pairs));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    match &mut self.arena[dict] {
                        Node::Dict(pairs) => pairs.push((k, v)),
                        _ => return Err(refuse("SETITEM on something that is not a dict")),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(refuse("SETITEMS with a key and no value"));
                    }
                    let dict = self.top()?;
                    match &mut self.arena[dict] {
                        Node::Dict(pairs) => pairs.extend(items.chunks(2).map(|p| (p[0], p[1]))),
                        _ => return Err(refuse("SETITEMS on something that is not a dict")),
                    }
                }
                0x94 => {
                    let top = self.top()?;
                    let n = self.memo.len() as u32;
                    self.memo.insert(n, top);
                }
                b'q' => {
                    let n = u32::from(self.u8()?);
                    let top = self.top()?;
                    self.memo.insert(n, top);
                }
                b'r' => {
                    let n = self.u32le()?;
                    let top = self.top()?;
                    self.memo.insert(n, top);
                }
                b'h' | b'j' => {
                    let n = if op == b'h' {
                        u32::from(self.u8()?)
                    } else {
                        self.u32le()?
                    };
                    let i = *self
                        .memo
                        .get(&n)
                        .ok_or_else(|| refuse(format!("a memo fetch of {n}, never stored")))?;
                    self.stack.push(Slot::Node(i));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (m, n) = (self.str_at(module)?, self.str_at(name)?);
                    self.class(m, n)?;
                }
                b'c' => {
                    let rest = &self.input[self.pos..];
                    let mut lines = rest.splitn(3, |&b| b == b'\n');
                    let (Some(m), Some(n), Some(_)) = (lines.next(), lines.next(), lines.next())
                    else {
                        return Err(refuse("a GLOBAL cut short"));
                    };
                    self.pos += m.len() + n.len() + 2;
                    let (m, n) = (String::from_utf8_lossy(m), String::from_utf8_lossy(n));
                    self.class(&m, &n)?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let is_token = matches!(self.arena[cls], Node::Class(m, n) if (m, n) == TOKEN);
                    let no_args = matches!(&self.arena[args], Node::Tuple(a) if a.is_empty());
                    if !(is_token && no_args) {
                        return Err(refuse("NEWOBJ of something other than a Token"));
                    }
                    self.push(Node::NewToken);
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    if !matches!(self.arena[obj], Node::NewToken) {
                        return Err(refuse("BUILD on something other than a Token"));
                    }
                    match &self.arena[state] {
                        Node::Tuple(t)
                            if t.len() == 3 && self.is_str(t[0]) && self.is_str(t[2]) => {}
                        Node::Tuple(_) => {
                            return Err(refuse("a Token whose state is not (str, address, str)"));
                        }
                        _ => return Err(refuse("a Token whose state is not a tuple")),
                    }
                    self.arena[obj] = Node::Token(state);
                }
                b'R' => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let Node::Class(module, name) = self.arena[cls] else {
                        return Err(refuse("REDUCE of something that is not an allowed class"));
                    };
                    if (module, name) == TOKEN {
                        return Err(refuse("REDUCE of a Token"));
                    }
                    if !matches!(self.arena[args], Node::Tuple(_)) {
                        return Err(refuse("REDUCE with arguments that are not a tuple"));
                    }
                    self.push(Node::Exception(module, name, args));
                }
                other => {
                    return Err(refuse(format!(
                        "pickle opcode 0x{other:02x} at byte {}, which is not allowed",
                        self.pos - 1
                    )));
                }
            }
        }
    }

    /// The value at arena node `root`, no deeper than [`MAX_DEPTH`] and
    /// holding no more bytes than the budget allows.
    pub(super) fn tree(&self, root: usize) -> Result<Value> {
        let mut t = Tree {
            arena: &self.arena,
            input: self.input,
            budget: BUDGET_BASE.saturating_add(self.input.len().saturating_mul(BUDGET_PER_BYTE)),
        };
        t.root(root)
    }
}

/// Turning the arena into a value: the budget left, in bytes.
struct Tree<'d> {
    arena: &'d [Node],
    input: &'d [u8],
    budget: usize,
}

/// The bytes of `n` value slots (a container's items, or the root).
fn slots(n: usize) -> usize {
    n.saturating_mul(std::mem::size_of::<Value>())
}

/// What a value under construction becomes once its parts are made.
enum Kind<'d> {
    Tuple,
    List,
    Dict(&'d [(usize, usize)]),
    Token { typeid: String, id: String },
    Exception(&'static str, &'static str),
}

/// A value under construction: the nodes of its parts and those made.
struct Frame<'d> {
    kind: Kind<'d>,
    items: &'d [usize],
    depth: usize,
    made: Vec<Value>,
}

impl Frame<'_> {
    fn parts(&self) -> usize {
        match self.kind {
            Kind::Dict(pairs) => pairs.len() * 2,
            _ => self.items.len(),
        }
    }

    /// The node of part `j`.
    fn part(&self, j: usize) -> usize {
        match self.kind {
            Kind::Dict(pairs) if j % 2 == 0 => pairs[j / 2].0,
            Kind::Dict(pairs) => pairs[j / 2].1,
            _ => self.items[j],
        }
    }

    fn finish(self) -> Value {
        match self.kind {
            Kind::Tuple => Value::Tuple(self.made),
            Kind::List => Value::List(self.made),
            Kind::Dict(_) => {
                let mut made = self.made.into_iter();
                let mut pairs = Vec::with_capacity(made.len() / 2);
                while let (Some(k), Some(v)) = (made.next(), made.next()) {
                    pairs.push((k, v));
                }
                Value::Dict(pairs)
            }
            Kind::Token { typeid, id } => Value::Token(Box::new(Token {
                typeid,
                address: self
                    .made
                    .into_iter()
                    .next()
                    .expect("a Token has its address"),
                id,
            })),
            Kind::Exception(module, name) => Value::Exception(Box::new(Exception {
                module: module.into(),
                name: name.into(),
                args: self.made,
            })),
        }
    }
}

impl<'d> Tree<'d> {
    /// The root value, made with a stack of its own (at most
    /// [`MAX_DEPTH`] + 1 frames), not the thread's.
    fn root(&mut self, root: usize) -> Result<Value> {
        self.charge(slots(1))?;
        let mut stack: Vec<Frame<'d>> = Vec::new();
        let mut made = self.open(root, 0, &mut stack)?;
        loop {
            if let Some(v) = made {
                match stack.last_mut() {
                    Some(top) => top.made.push(v),
                    None => return Ok(v),
                }
            }
            let top = stack.last().expect("a value under construction");
            made = if top.made.len() < top.parts() {
                let (part, depth) = (top.part(top.made.len()), top.depth + 1);
                self.open(part, depth, &mut stack)?
            } else {
                Some(stack.pop().expect("not empty").finish())
            };
        }
    }

    /// Count `bytes` more against the budget.
    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(too_big)?;
        Ok(())
    }

    fn text(&mut self, at: usize, len: usize) -> Result<String> {
        self.charge(len)?;
        let s = std::str::from_utf8(&self.input[at..at + len]).expect("checked when read");
        Ok(s.to_owned())
    }

    /// Start on node `i`, `depth` levels down, its slot paid for by the
    /// caller: a value made at once, or `None` with a frame pushed for its
    /// parts. What a value owns (its parts' slots, its text, its box) is
    /// charged before it is allocated.
    fn open(
        &mut self,
        i: usize,
        depth: usize,
        stack: &mut Vec<Frame<'d>>,
    ) -> Result<Option<Value>> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let arena: &'d [Node] = self.arena;
        let (kind, items): (Kind<'d>, &'d [usize]) = match &arena[i] {
            Node::None => return Ok(Some(Value::None)),
            Node::Bool(b) => return Ok(Some(Value::Bool(*b))),
            Node::Int(n) => return Ok(Some(Value::Int(*n))),
            Node::Float(x) => return Ok(Some(Value::Float(*x))),
            &Node::Str { at, len } => return Ok(Some(Value::Str(self.text(at, len)?))),
            &Node::Bytes { at, len } => {
                self.charge(len)?;
                return Ok(Some(Value::Bytes(self.input[at..at + len].to_vec())));
            }
            Node::Tuple(items) => (Kind::Tuple, items),
            Node::List(items) => (Kind::List, items),
            Node::Dict(pairs) => (Kind::Dict(pairs), &[]),
            &Node::Token(state) => {
                self.charge(std::mem::size_of::<Token>())?;
                let Node::Tuple(parts) = &arena[state] else {
                    unreachable!("BUILD checked the state");
                };
                let (&Node::Str { at: ta, len: tl }, &Node::Str { at: ia, len: il }) =
                    (&arena[parts[0]], &arena[parts[2]])
                else {
                    unreachable!("BUILD checked the state");
                };
                let kind = Kind::Token {
                    typeid: self.text(ta, tl)?,
                    id: self.text(ia, il)?,
                };
                (kind, &parts[1..2])
            }
            &Node::Exception(module, name, args) => {
                self.charge(std::mem::size_of::<Exception>() + module.len() + name.len())?;
                let Node::Tuple(items) = &arena[args] else {
                    unreachable!("REDUCE checked the arguments");
                };
                (Kind::Exception(module, name), items)
            }
            Node::Class(m, n) => return Err(refuse(format!("a bare class {m}.{n} as a value"))),
            Node::NewToken => return Err(refuse("a Token without its state")),
        };
        let mut frame = Frame {
            kind,
            items,
            depth,
            made: Vec::new(),
        };
        // The parts' slots: a Token's address lives in its box, paid above.
        let parts = frame.parts();
        if !matches!(frame.kind, Kind::Token { .. }) {
            self.charge(slots(parts))?;
        }
        frame.made.reserve_exact(parts);
        stack.push(frame);
        Ok(None)
    }
}
