//! The decoder: a pickle machine restricted to the whitelisted opcodes and
//! names, building on an arena.

use super::{MAX_DEPTH, Value};
use crate::error::{Error, Result};

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

pub(super) struct Decoder<'a> {
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
    /// A decoder of `input`, its expansion budget proportional to it.
    pub(super) fn new(input: &'a [u8]) -> Self {
        Decoder {
            input,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            memo: std::collections::HashMap::new(),
            budget: 1024 + input.len() * 4,
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
    pub(super) fn tree(&mut self, i: usize, depth: usize) -> Result<Value> {
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
