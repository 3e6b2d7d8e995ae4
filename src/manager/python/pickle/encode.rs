//! The encoder: protocol 4 opcodes, no frames, no memo.

use super::Value;

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

fn dump_tuple(items: &[Value], out: &mut Vec<u8>) {
    match items.len() {
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
    }
}

pub(super) fn dump(v: &Value, out: &mut Vec<u8>) {
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
        Value::Tuple(items) => dump_tuple(items, out),
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
        Value::Token(t) => {
            dump_str("multiprocessing.managers", out);
            dump_str("Token", out);
            out.extend_from_slice(&[0x93, b')', 0x81]);
            dump_str(&t.typeid, out);
            dump(&t.address, out);
            dump_str(&t.id, out);
            out.extend_from_slice(&[0x87, b'b']);
        }
        Value::Exception(e) => {
            dump_str(&e.module, out);
            dump_str(&e.name, out);
            out.push(0x93);
            dump_tuple(&e.args, out);
            out.push(b'R');
        }
    }
}
