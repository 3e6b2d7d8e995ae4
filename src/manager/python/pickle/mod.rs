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

use crate::error::Result;

mod decode;
mod encode;
#[cfg(test)]
mod tests;

/// How deeply containers may nest in a decoded value.
pub const MAX_DEPTH: usize = 32;

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

/// Decode one pickle; anything outside the subset is an error of kind
/// [`crate::ErrorKind::BadData`] and nothing is run.
pub fn loads(input: &[u8]) -> Result<Value> {
    let mut d = decode::Decoder::new(input);
    let root = d.run()?;
    d.tree(root, 0)
}

/// Encode a value as a protocol-4 pickle.
pub fn dumps(v: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    encode::dump(v, &mut out);
    out.push(b'.');
    out
}
