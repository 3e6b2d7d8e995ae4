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
//! fetched from the memo. Every value kind is a node of the arena, the
//! records included (an exception's arguments, a Token's address), and the
//! arena becomes a tree once, at STOP. That step is bounded:
//!
//! - in depth: no value of any kind nests more than [`MAX_DEPTH`] deep
//!   (which also refuses a list that contains itself), so dropping,
//!   cloning, printing or encoding a decoded value recurses at most that
//!   deep, on any thread's stack;
//! - in memory: every byte the tree holds is counted (each value's slot,
//!   each str's and bytes' contents, each record's box) against a budget
//!   of [`BUDGET_BASE`] plus [`BUDGET_PER_BYTE`] per input byte, so memo
//!   references cannot blow a small pickle up: a pickle that would
//!   materialise more is refused before it does.
//!
//! Decoding itself (the arena) costs at most one node per input byte, and
//! a str or bytes in the arena is a range of the input, not a copy.
//!
//! The encoder writes protocol 4 opcodes (without frames) that every
//! CPython since 3.4 reads.

use std::fmt;

use crate::error::Result;

mod decode;
mod encode;
#[cfg(test)]
mod tests;

/// How deeply values may nest in a decoded value: containers, an
/// exception's arguments and a Token's address each count one level.
pub const MAX_DEPTH: usize = 32;

/// Bytes any pickle may materialise, whatever its length.
pub const BUDGET_BASE: usize = 64 << 10;

/// Bytes a pickle may materialise per byte of its own: one value slot, the
/// most a pickle can make of one byte without a memo reference.
pub const BUDGET_PER_BYTE: usize = std::mem::size_of::<Value>();

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
    Token(Box<Token>),
    /// A whitelisted exception instance: `_queue.Empty()`, `queue.Full()` …
    Exception(Box<Exception>),
}

/// A manager's `Token`: which shared object, on which server. Boxed in
/// [`Value`] so that the common values stay small.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The registered type id (`get_task_queue`).
    pub typeid: String,
    /// The manager's address, usually `(host, port)`.
    pub address: Value,
    /// The shared object's id.
    pub id: String,
}

/// An exception instance of a whitelisted class, inert. Boxed in
/// [`Value`] so that the common values stay small.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    /// The module that defines it (`_queue`, `queue`, `builtins`).
    pub module: String,
    /// The class name.
    pub name: String,
    /// Its `args`.
    pub args: Vec<Value>,
}

impl Value {
    /// A str value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// An exception of class `module.name` with these `args`.
    pub fn exception(module: &str, name: &str, args: Vec<Value>) -> Value {
        Value::Exception(Box::new(Exception {
            module: module.into(),
            name: name.into(),
            args,
        }))
    }

    /// The queue module's `Empty()`, as CPython 3.7+ spells it.
    pub fn empty() -> Value {
        Value::exception("_queue", "Empty", Vec::new())
    }

    /// The queue module's `Full()`.
    pub fn full() -> Value {
        Value::exception("queue", "Full", Vec::new())
    }

    /// Whether this is the queue module's `Empty` exception.
    pub fn is_empty_exception(&self) -> bool {
        matches!(self, Value::Exception(e) if e.name == "Empty" && e.module.ends_with("queue"))
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
            Value::Token(t) => write!(
                f,
                "Token(typeid={:?}, address={}, id={:?})",
                t.typeid, t.address, t.id
            ),
            Value::Exception(e) => {
                write!(f, "{}(", e.name)?;
                seq(f, &e.args)?;
                f.write_str(")")
            }
        }
    }
}

/// Decode one pickle; anything outside the subset is an error of kind
/// [`crate::ErrorKind::BadData`] and nothing is run.
pub fn loads(input: &[u8]) -> Result<Value> {
    let mut d = decode::Decoder::new(input);
    let root = d.run()?;
    d.tree(root)
}

/// Encode a value as a protocol-4 pickle.
pub fn dumps(v: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    encode::dump(v, &mut out);
    out.push(b'.');
    out
}
