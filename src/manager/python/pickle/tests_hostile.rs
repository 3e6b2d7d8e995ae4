//! Pickles built to exhaust the stack or the memory of whoever decodes
//! them: deep nesting through every kind of value, and memo references
//! that make a few bytes into many.

use super::*;

/// Run `f` on a thread whose stack is smaller than a server connection's
/// (256 KiB): a decoded value must be safe to drop, clone, print and
/// encode there.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(128 << 10)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

/// `builtins.Exception` memoized, pushed `n` times, then REDUCEd into
/// `Exception(Exception(...Exception()...))`, `n` deep, in about 4n bytes.
fn reduce_chain(n: usize) -> Vec<u8> {
    let mut p = b"\x80\x04cbuiltins\nException\nq\x00".to_vec();
    for _ in 1..n {
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b")R");
    for _ in 1..n {
        p.extend_from_slice(b"\x85R");
    }
    p.push(b'.');
    p
}

#[test]
fn a_deep_reduce_chain_is_refused_on_a_small_stack() {
    for n in [300, 5000] {
        let p = reduce_chain(n);
        let e = on_small_stack(move || loads(&p).map(|_| ()).unwrap_err());
        assert_eq!(e.kind(), crate::ErrorKind::BadData, "{e}");
        assert!(e.to_string().contains("nested"), "{n}: {e}");
    }
}

/// What puts a value one level down.
type Wrap = fn(Value) -> Value;

/// `levels` values of one kind, each inside the next.
fn nested(levels: usize, wrap: Wrap) -> Value {
    let mut v = Value::None;
    for _ in 0..levels {
        v = wrap(v);
    }
    v
}

#[test]
fn every_kind_of_value_is_bounded_in_depth() {
    let kinds: [(&str, Wrap); 6] = [
        ("tuple", |v| Value::Tuple(vec![v])),
        ("list", |v| Value::List(vec![v])),
        ("dict key", |v| Value::Dict(vec![(v, Value::None)])),
        ("dict value", |v| Value::Dict(vec![(Value::None, v)])),
        ("exception", |v| {
            Value::exception("builtins", "ValueError", vec![v])
        }),
        ("token", |v| {
            Value::Token(Box::new(Token {
                typeid: "t".into(),
                address: v,
                id: "i".into(),
            }))
        }),
    ];
    for (kind, wrap) in kinds {
        // MAX_DEPTH levels around a None: the None is MAX_DEPTH deep.
        let deepest = nested(MAX_DEPTH, wrap);
        let p = dumps(&deepest);
        let back = on_small_stack(move || {
            let v = loads(&p).expect("MAX_DEPTH levels decode");
            // Clone, compare, print, encode and drop it where stacks are small.
            let c = v.clone();
            assert_eq!(c, v);
            let _ = format!("{v}");
            let _ = dumps(&v);
            v
        });
        assert_eq!(back, deepest, "{kind}");
        let p = dumps(&nested(MAX_DEPTH + 1, wrap));
        let e = loads(&p).unwrap_err();
        assert!(e.to_string().contains("nested"), "{kind}: {e}");
    }
}

/// The bytes a value holds: its slot, its items' slots, its text, its box.
fn weight(v: &Value) -> usize {
    let slot = std::mem::size_of::<Value>();
    slot + match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Tuple(items) | Value::List(items) => items.iter().map(weight).sum(),
        Value::Dict(pairs) => pairs.iter().map(|(k, v)| weight(k) + weight(v)).sum(),
        Value::Token(t) => {
            std::mem::size_of::<Token>() - slot + t.typeid.len() + t.id.len() + weight(&t.address)
        }
        Value::Exception(e) => {
            std::mem::size_of::<Exception>()
                + e.module.len()
                + e.name.len()
                + e.args.iter().map(weight).sum::<usize>()
        }
        _ => 0,
    }
}

fn bound(input: &[u8]) -> usize {
    BUDGET_BASE + BUDGET_PER_BYTE * input.len()
}

/// A 63-byte str, a tuple of `k` references to it, and a tuple of `m`
/// references to that tuple: k·m strs from about 2(k+m) bytes.
fn str_fan_out(k: usize, m: usize) -> Vec<u8> {
    let mut p = vec![0x80, 4, 0x8c, 63];
    p.extend_from_slice(&[b'x'; 63]);
    p.extend_from_slice(b"q\x00(");
    for _ in 0..k {
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b"tq\x01(");
    for _ in 0..m {
        p.extend_from_slice(b"h\x01");
    }
    p.extend_from_slice(b"t\x87.");
    p
}

#[test]
fn memo_references_cannot_materialise_more_than_the_budget() {
    // Small enough that a budget of values counted by number let it through
    // (1600 strs of 63 bytes, over 200 KB, from 170 bytes).
    let small = str_fan_out(40, 40);
    let e = loads(&small).unwrap_err();
    assert!(e.to_string().contains("too many values"), "{e}");
    // A megabyte of references, refused as soon as the budget is spent.
    let big = str_fan_out(250_000, 250_000);
    let e = loads(&big).unwrap_err();
    assert!(e.to_string().contains("too many values"), "{e}");
    // What does decode stays within the bound, shared strs counted each time.
    for (k, m) in [(1, 1), (10, 10), (100, 3), (3, 100)] {
        let p = str_fan_out(k, m);
        if let Ok(v) = loads(&p) {
            assert!(weight(&v) <= bound(&p), "{k}x{m}: {}", weight(&v));
        }
    }
}

#[test]
fn honest_data_fits_the_budget() {
    // A list of 100 000 Nones: one value per input byte, the densest there is.
    let mut p = vec![0x80, 4, b']', b'('];
    p.extend(std::iter::repeat_n(b'N', 100_000));
    p.extend_from_slice(b"e.");
    let Value::List(items) = loads(&p).unwrap() else {
        panic!("a list")
    };
    assert_eq!(items.len(), 100_000);
    // 10 000 dicts sharing their keys through the memo, as CPython writes
    // them: {'name': 'item-i', 'n': i}.
    let mut p = vec![0x80, 4, b']', 0x94, b'('];
    for i in 0..10_000u32 {
        p.push(b'}');
        if i == 0 {
            p.extend_from_slice(b"(\x8c\x04name\x94");
        } else {
            p.extend_from_slice(b"(h\x01");
        }
        let s = format!("item-{i}");
        p.extend_from_slice(&[0x8c, s.len() as u8]);
        p.extend_from_slice(s.as_bytes());
        if i == 0 {
            p.extend_from_slice(b"\x8c\x01n\x94");
        } else {
            p.extend_from_slice(b"h\x02");
        }
        p.push(b'J');
        p.extend_from_slice(&(i as i32).to_le_bytes());
        p.push(b'u');
    }
    p.extend_from_slice(b"e.");
    let v = loads(&p).unwrap();
    assert!(weight(&v) <= bound(&p));
    let Value::List(items) = v else {
        panic!("a list")
    };
    assert_eq!(items.len(), 10_000);
    assert_eq!(
        items[9_999],
        Value::Dict(vec![
            (Value::str("name"), Value::str("item-9999")),
            (Value::str("n"), Value::Int(9_999)),
        ])
    );
}

#[test]
fn values_stay_small() {
    // The records are boxed: every other value is one 32-byte slot.
    assert!(std::mem::size_of::<Value>() <= 32);
}
