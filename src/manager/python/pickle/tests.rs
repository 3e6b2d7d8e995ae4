//! The pickle subset against CPython's own pickles, and against pickles
//! built to run code or to blow up.

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
    let Value::Token(t) = loads(token).unwrap() else {
        panic!("not a token")
    };
    assert_eq!((t.typeid.as_str(), t.id.as_str()), ("get_task_queue", "7f"));
    assert_eq!(
        t.address,
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
        Value::Token(Box::new(Token {
            typeid: "t".into(),
            address: Value::Tuple(vec![Value::str("h"), Value::Int(1)]),
            id: "1".into(),
        })),
        Value::exception("builtins", "KeyError", vec![Value::str("k")]),
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

#[path = "tests_hostile.rs"]
mod hostile;
