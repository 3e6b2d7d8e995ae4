//! The part of pickle that CPython's managers need, and nothing more.
//!
//! CPython's managers send every request and answer as a pickle, and
//! unpickling runs code: a `GLOBAL` opcode names any importable function and
//! `REDUCE` calls it, so a peer that can send a pickle to CPython's own
//! manager server can make it run `os.system`. This decoder never imports or
//! calls anything. It accepts the plain data types (None, bool, int, float,
//! str, bytes, tuple, list, dict) and, by exact name, the few records a
//! manager conversation carries: `multiprocessing.managers.Token`, the
//! queue's `Empty` and `Full`, and a handful of builtin exceptions, which
//! become inert [`Value`]s. Any other opcode or name is an error, and the
//! caller closes the connection.
//!
//! Pickles are built on an arena, as the pickle machine builds them: a list
//! memoized while empty and filled afterwards is the filled list when it is
//! fetched from the memo. Turning the arena into a tree is bounded in depth
//! ([`MAX_DEPTH`], which also refuses self-containing lists) and in size (a
//! budget of nodes proportional to the input, so memo references cannot
//! blow a small pickle up into a huge value).
//!
//! The encoder writes protocol 4 opcodes (without frames) that every
//! CPython since 3.4 reads.

use std::fmt;

use crate::error::{Error, Result};

/// How deeply containers may nest in a decoded value.
pub const MAX_DEPTH: usize = 32;

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

/// A decoded pickle: plain data, or one of the whitelisted records.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int (those beyond 128 bits are refused).
    Int(i128),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A bytes object.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, its pairs in order.
    Dict(Vec<(Value, Value)>),
    /// `multiprocessing.managers.Token(typeid, address, id)`.
    Token {
        /// The registered type id (`get_task_queue`).
        typeid: String,
        /// The manager's address, usually `(host, port)`.
        address: Box<Value>,
        /// The shared object's id.
        id: String,
    },
    /// A whitelisted exception instance: `_queue.Empty()`, `queue.Full()` …
    Exception {
        /// The module that defines it (`_queue`, `queue`, `builtins`).
        module: String,
        /// The class name.
        name: String,
        /// Its `args`.
        args: Vec<Value>,
    },
}

impl Value {
    /// A str value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// The queue module's `Empty()`, as CPython 3.7+ spells it.
    pub fn empty() -> Value {
        Value::Exception {
            module: "_queue".into(),
            name: "Empty".into(),
            args: Vec::new(),
        }
    }

    /// The queue module's `Full()`.
    pub fn full() -> Value {
        Value::Exception {
            module: "queue".into(),
            name: "Full".into(),
            args: Vec::new(),
        }
    }

    /// Whether this is the queue module's `Empty` exception.
    pub fn is_empty_exception(&self) -> bool {
        matches!(self, Value::Exception { name, module, .. } if name == "Empty" && module.ends_with("queue"))
    }

    /// The text a shell user wants to see: a str as it is, bytes as they
    /// are (lossily), anything else as Python's `repr` would show it.
    pub fn to_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => other.to_string(),
        }
    }

    /// The bytes a native client receives for this value: a str's UTF-8,
    /// bytes as they are, anything else as its `repr`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b.clone(),
            other => other.to_text().into_bytes(),
        }
    }
}

/// Python's `repr`, near enough for messages and logs.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            Ok(())
        }
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::Dict(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Token {
                typeid,
                address,
                id,
            } => {
                write!(f, "Token(typeid={typeid:?}, address={address}, id={id:?})")
            }
            Value::Exception { name, args, .. } => {
                write!(f, "{name}(")?;
                seq(f, args)?;
                f.write_str(")")
            }
        }
    }
}

/// One node of the decoding arena.
#[derive(Debug)]
enum Node {
    Leaf(Value),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    /// A whitelisted class named by GLOBAL / STACK_GLOBAL.
    Class(String, String),
    /// `Token.__new__(Token)`, waiting for its BUILD.
    NewToken,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Node(usize),
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u32, usize>,
    budget: usize,
}

fn refuse(why: impl Into<String>) -> Error {
    Error::data("unpickle", "python peer", why.into())
}

impl<'a> Decoder<'a> {
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

    fn leaf(&mut self, v: Value) {
        self.push(Node::Leaf(v));
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

    fn string(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| refuse("a str that is not UTF-8"))
    }

    fn str_at(&self, i: usize) -> Result<&str> {
        match &self.arena[i] {
            Node::Leaf(Value::Str(s)) => Ok(s),
            _ => Err(refuse("a global named by something other than two strs")),
        }
    }

    fn class(&mut self, module: String, name: String) -> Result<()> {
        let known = (module == "multiprocessing.managers" && name == "Token")
            || EXCEPTIONS.iter().any(|(m, n)| *m == module && *n == name);
        if !known {
            return Err(refuse(format!(
                "a pickle that names {module}.{name}, which is not allowed"
            )));
        }
        self.push(Node::Class(module, name));
        Ok(())
    }

    fn int(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > 16 {
            return Err(refuse(format!("an int of {} bytes", bytes.len())));
        }
        let neg = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = [if neg { 0xff } else { 0 }; 16];
        buf[..bytes.len()].copy_from_slice(bytes);
        self.leaf(Value::Int(i128::from_le_bytes(buf)));
        Ok(())
    }

    fn run(&mut self) -> Result<usize> {
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
                b'N' => self.leaf(Value::None),
                0x88 => self.leaf(Value::Bool(true)),
                0x89 => self.leaf(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.leaf(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.leaf(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.leaf(Value::Int(v.into()));
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
                    self.leaf(Value::Float(v));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.leaf(Value::Str(s));
                }
                b'X' => {
                    let n = self.u32le()? as usize;
                    let s = self.string(n)?;
                    self.leaf(Value::Str(s));
                }
                0x8d => {
                    let n = self.len64()?;
                    let s = self.string(n)?;
                    self.leaf(Value::Str(s));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b));
                }
                b'B' => {
                    let n = self.u32le()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b));
                }
                0x8e => {
                    let n = self.len64()?;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b));
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
                    let (m, n) = (
                        self.str_at(module)?.to_string(),
                        self.str_at(name)?.to_string(),
                    );
                    self.class(m, n)?;
                }
                b'c' => {
                    let rest = &self.input[self.pos..];
                    let mut lines = rest.splitn(3, |&b| b == b'\n');
                    let (Some(m), Some(n), Some(_)) = (lines.next(), lines.next(), lines.next())
                    else {
                        return Err(refuse("a GLOBAL cut short"));
                    };
                    let (m, n) = (
                        String::from_utf8_lossy(m).into_owned(),
                        String::from_utf8_lossy(n).into_owned(),
                    );
                    self.pos += m.len() + n.len() + 2;
                    self.class(m, n)?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let is_token = matches!(&self.arena[cls], Node::Class(m, n) if m == "multiprocessing.managers" && n == "Token");
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
                    let token = match self.tree(state, 0)? {
                        Value::Tuple(t) => match <[Value; 3]>::try_from(t) {
                            Ok([Value::Str(typeid), address, Value::Str(id)]) => Value::Token {
                                typeid,
                                address: Box::new(address),
                                id,
                            },
                            _ => {
                                return Err(refuse(
                                    "a Token whose state is not (str, address, str)",
                                ));
                            }
                        },
                        _ => return Err(refuse("a Token whose state is not a tuple")),
                    };
                    self.arena[obj] = Node::Leaf(token);
                }
                b'R' => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let Node::Class(module, name) = &self.arena[cls] else {
                        return Err(refuse("REDUCE of something that is not an allowed class"));
                    };
                    if name == "Token" {
                        return Err(refuse("REDUCE of a Token"));
                    }
                    let (module, name) = (module.clone(), name.clone());
                    let Value::Tuple(args) = self.tree(args, 0)? else {
                        return Err(refuse("REDUCE with arguments that are not a tuple"));
                    };
                    self.leaf(Value::Exception { module, name, args });
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

    /// The value at arena node `i`, bounded in depth and in size.
    fn tree(&mut self, i: usize, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(refuse(format!(
                "values nested more than {MAX_DEPTH} deep (or a list that contains itself)"
            )));
        }
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| refuse("a pickle that expands into too many values"))?;
        Ok(match &self.arena[i] {
            Node::Leaf(v) => {
                let weight = match v {
                    Value::Str(s) => s.len() / 64,
                    Value::Bytes(b) => b.len() / 64,
                    _ => 0,
                };
                self.budget = self
                    .budget
                    .checked_sub(weight)
                    .ok_or_else(|| refuse("a pickle that expands into too many values"))?;
                v.clone()
            }
            Node::Tuple(items) => {
                let items = items.clone();
                Value::Tuple(self.trees(&items, depth)?)
            }
            Node::List(items) => {
                let items = items.clone();
                Value::List(self.trees(&items, depth)?)
            }
            Node::Dict(pairs) => {
                let pairs = pairs.clone();
                let mut out = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    out.push((self.tree(k, depth + 1)?, self.tree(v, depth + 1)?));
                }
                Value::Dict(out)
            }
            Node::Class(m, n) => return Err(refuse(format!("a bare class {m}.{n} as a value"))),
            Node::NewToken => return Err(refuse("a Token without its state")),
        })
    }

    fn trees(&mut self, items: &[usize], depth: usize) -> Result<Vec<Value>> {
        items.iter().map(|&i| self.tree(i, depth + 1)).collect()
    }
}

/// Decode one pickle; anything outside the subset is an error of kind
/// [`crate::ErrorKind::BadData`] and nothing is run.
pub fn loads(input: &[u8]) -> Result<Value> {
    let mut d = Decoder {
        input,
        pos: 0,
        arena: Vec::new(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
        budget: 1024 + input.len() * 4,
    };
    let root = d.run()?;
    d.tree(root, 0)
}

/// Encode a value as a protocol-4 pickle.
pub fn dumps(v: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    dump(v, &mut out);
    out.push(b'.');
    out
}

fn dump_str(s: &str, out: &mut Vec<u8>) {
    if s.len() < 256 {
        out.push(0x8c);
        out.push(s.len() as u8);
    } else if let Ok(n) = u32::try_from(s.len()) {
        out.push(b'X');
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(0x8d);
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn dump_items(items: &[Value], out: &mut Vec<u8>) {
    out.push(b'(');
    for v in items {
        dump(v, out);
    }
}

fn dump(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::None => out.push(b'N'),
        Value::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Value::Int(i) => {
            if let Ok(small) = u8::try_from(*i) {
                out.extend_from_slice(&[b'K', small]);
            } else if let Ok(x) = i32::try_from(*i) {
                out.push(b'J');
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                // LONG1: the shortest little-endian two's complement.
                let bytes = i.to_le_bytes();
                let mut n = 16;
                while n > 1 {
                    let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                    let redundant =
                        (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
                    if !redundant {
                        break;
                    }
                    n -= 1;
                }
                out.extend_from_slice(&[0x8a, n as u8]);
                out.extend_from_slice(&bytes[..n]);
            }
        }
        Value::Float(x) => {
            out.push(b'G');
            out.extend_from_slice(&x.to_be_bytes());
        }
        Value::Str(s) => dump_str(s, out),
        Value::Bytes(b) => {
            if b.len() < 256 {
                out.extend_from_slice(&[b'C', b.len() as u8]);
            } else if let Ok(n) = u32::try_from(b.len()) {
                out.push(b'B');
                out.extend_from_slice(&n.to_le_bytes());
            } else {
                out.push(0x8e);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::Tuple(items) => match items.len() {
            0 => out.push(b')'),
            1..=3 => {
                for v in items {
                    dump(v, out);
                }
                out.push(0x84 + items.len() as u8);
            }
            _ => {
                dump_items(items, out);
                out.push(b't');
            }
        },
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                dump_items(items, out);
                out.push(b'e');
            }
        }
        Value::Dict(pairs) => {
            out.push(b'}');
            if !pairs.is_empty() {
                out.push(b'(');
                for (k, v) in pairs {
                    dump(k, out);
                    dump(v, out);
                }
                out.push(b'u');
            }
        }
        Value::Token {
            typeid,
            address,
            id,
        } => {
            dump_str("multiprocessing.managers", out);
            dump_str("Token", out);
            out.extend_from_slice(&[0x93, b')', 0x81]);
            dump_str(typeid, out);
            dump(address, out);
            dump_str(id, out);
            out.extend_from_slice(&[0x87, b'b']);
        }
        Value::Exception { module, name, args } => {
            dump_str(module, out);
            dump_str(name, out);
            out.push(0x93);
            dump(&Value::Tuple(args.clone()), out);
            out.push(b'R');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pickles CPython 3.11 wrote (`ForkingPickler.dumps`).
    #[test]
    fn cpython_pickles_decode() {
        let empty = b"\x80\x04\x95\"\x00\x00\x00\x00\x00\x00\x00\x8c\x06#ERROR\x94\x8c\x06_queue\x94\x8c\x05Empty\x94\x93\x94)R\x94\x86\x94.";
        assert_eq!(
            loads(empty).unwrap(),
            Value::Tuple(vec![Value::str("#ERROR"), Value::empty()])
        );
        let create = b"\x80\x04\x95#\x00\x00\x00\x00\x00\x00\x00(N\x8c\x06create\x94\x8c\x0eget_task_queue\x94\x85\x94}\x94t\x94.";
        assert_eq!(
            loads(create).unwrap(),
            Value::Tuple(vec![
                Value::None,
                Value::str("create"),
                Value::Tuple(vec![Value::str("get_task_queue")]),
                Value::Dict(vec![]),
            ])
        );
        let get = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00(\x8c\x027f\x94\x8c\x03get\x94)}\x94\x8c\x07timeout\x94K\x01st\x94.";
        assert_eq!(
            loads(get).unwrap(),
            Value::Tuple(vec![
                Value::str("7f"),
                Value::str("get"),
                Value::Tuple(vec![]),
                Value::Dict(vec![(Value::str("timeout"), Value::Int(1))]),
            ])
        );
        let token = b"\x80\x04\x95S\x00\x00\x00\x00\x00\x00\x00\x8c\x18multiprocessing.managers\x94\x8c\x05Token\x94\x93\x94)\x81\x94\x8c\x0eget_task_queue\x94\x8c\t127.0.0.1\x94M\x88\x13\x86\x94\x8c\x027f\x94\x87\x94b.";
        let Value::Token {
            typeid,
            id,
            address,
        } = loads(token).unwrap()
        else {
            panic!("not a token")
        };
        assert_eq!((typeid.as_str(), id.as_str()), ("get_task_queue", "7f"));
        assert_eq!(
            *address,
            Value::Tuple(vec![Value::str("127.0.0.1"), Value::Int(5000)])
        );
        let big = b"\x80\x04\x95\x18\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x86\x94.";
        assert_eq!(
            loads(big).unwrap(),
            Value::Tuple(vec![Value::str("#RETURN"), Value::Int(1 << 70)])
        );
    }

    #[test]
    fn values_round_trip() {
        let v = Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::Int(-5),
            Value::Int(300),
            Value::Int(-(1 << 40)),
            Value::Int(i128::MIN),
            Value::Float(2.5),
            Value::str("héllo"),
            Value::str("x".repeat(300)),
            Value::Bytes(vec![0, 1, 255]),
            Value::List(vec![Value::Int(1), Value::List(vec![])]),
            Value::Dict(vec![(Value::str("k"), Value::Tuple(vec![Value::Int(1)]))]),
            Value::empty(),
            Value::full(),
            Value::Token {
                typeid: "t".into(),
                address: Box::new(Value::Tuple(vec![Value::str("h"), Value::Int(1)])),
                id: "1".into(),
            },
        ]);
        assert_eq!(loads(&dumps(&v)).unwrap(), v);
    }

    #[test]
    fn code_and_unknown_opcodes_are_refused() {
        let cases: &[&[u8]] = &[
            b"cos\nsystem\n(S'true'\ntR.", // GLOBAL os.system
            b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04true\x85R.", // STACK_GLOBAL
            b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", // builtins.eval
            b"\x80\x04\x8c\x06_queue\x8c\x05Empty\x93.", // a bare class
            b"\x80\x04\x8c\x06_queue\x8c\x05Empty\x93)\x81.", // NEWOBJ of a non-Token
            b"\x80\x04\x8f.",              // EMPTY_SET
            b"\x80\x04K\x01K\x02.",        // two values
            b"\x80\x04K\x01",              // no STOP
            b"\x80\x04h\x05.",             // memo never stored
            b"\x80\x04\x8c\x05ab.",        // cut short
            b"\x80\x04\x8c\x02\xff\xfe.",  // not UTF-8
            b"\x80\x04a.",                 // APPEND on nothing
            b"\x80\x04K\x01.junk",         // bytes after STOP
            b"\x80\x06N.",                 // protocol 6
        ];
        for c in cases {
            let e = loads(c).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadData, "{c:?}: {e}");
        }
    }

    #[test]
    fn memo_bombs_and_self_reference_are_refused() {
        // A list that contains itself.
        let e = loads(b"\x80\x04]\x94h\x00a.").unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        // Each level holds the previous one twice: 2^30 leaves from ~200 bytes.
        let mut p = vec![0x80, 4, b']', 0x94];
        for i in 0..30u8 {
            p.extend_from_slice(&[b'h', i, 0x86, 0x94]);
        }
        p.push(b'.');
        let e = loads(&p).unwrap_err();
        assert!(e.to_string().contains("too many values"), "{e}");
    }

    #[test]
    fn a_list_memoized_empty_is_fetched_full() {
        // l = [1]; (l, l): the memo holds the list, not its empty start.
        let p = b"\x80\x04]\x94K\x01ah\x00\x86.";
        assert_eq!(
            loads(p).unwrap(),
            Value::Tuple(vec![
                Value::List(vec![Value::Int(1)]),
                Value::List(vec![Value::Int(1)])
            ])
        );
    }
}
