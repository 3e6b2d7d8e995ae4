//! A batch end to end without a pipe: encoded as the pool encodes it, run
//! as a worker runs it, decoded as the pool decodes it.

use super::frame::{self, AsBytes, RESULT_HEAD, TASK_HEAD, VARIABLE, parse_layout};
use super::results::Batch;
use super::wire::read;
use super::worker::{Cursor, Output, Shape, Typed, run_batch};
use super::*;

fn echo(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    out.extend_from_slice(arg);
    Ok(())
}

/// The first byte picks the outcome: 0 echo the rest, 1 fail, 2 panic
/// with a String, 3 panic with a &str (after writing some bytes).
fn pick(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    match arg.split_first() {
        Some((0, rest)) => echo(rest, out),
        Some((1, rest)) => Err(format!("refused {}", rest.len())),
        Some((2, rest)) => panic!("boom {}", rest.len()),
        Some((3, _)) => {
            out.extend_from_slice(b"half-written");
            panic!("static boom")
        }
        _ => Err("empty".into()),
    }
}

fn registry() -> Registry {
    let mut reg = Registry::new()
        .register("echo", echo)
        .register("pick", pick);
    reg.task("square", |n: i64| {
        n.checked_mul(n).ok_or_else(|| format!("{n} overflows"))
    });
    reg.task("halve", |n: u16| -> std::result::Result<u8, String> {
        assert!(n % 2 == 0, "odd {n}");
        u8::try_from(n / 2).map_err(|e| e.to_string())
    });
    reg
}

/// Task `name`'s number in `reg`.
fn index(reg: &Registry, name: &'static str) -> u16 {
    Target::<&[u8]>::resolve(name, reg).unwrap().0
}

/// A raw task frame for `args`.
fn encode_task<B: AsRef<[u8]>>(
    frame: &mut Vec<u8>,
    id: u64,
    func: u16,
    args: &[B],
) -> crate::Result<u32> {
    frame::encode_task::<AsBytes<B>>(frame, id, func, args)
}

#[test]
fn typed_tasks_decode_run_and_encode_each_item() {
    let args: Vec<Vec<u8>> = (0..100i64).map(|i| i.to_le_bytes().to_vec()).collect();
    let (_, width, results) = round_trip("square", &args);
    assert_eq!(width, 8);
    let want: Vec<Outcome> = (0..100i64)
        .map(|i| Ok((i * i).to_le_bytes().to_vec()))
        .collect();
    assert_eq!(results, want);
}

#[test]
fn a_typed_task_fails_one_item_on_an_error_a_panic_or_a_wrong_width() {
    let mut args: Vec<Vec<u8>> = (0..10u16).map(|i| (2 * i).to_le_bytes().to_vec()).collect();
    args[2] = 7u16.to_le_bytes().to_vec(); // panics
    args[4] = 600u16.to_le_bytes().to_vec(); // 300 does not fit in a u8
    args[6] = vec![1, 2, 3]; // not a u16
    let (task_width, width, results) = round_trip("halve", &args);
    assert_eq!((task_width, width), (VARIABLE, VARIABLE));
    assert_eq!(results[2], Err("panicked: odd 7".to_string()));
    assert!(results[4].as_ref().unwrap_err().contains("out of range"));
    assert_eq!(
        results[6],
        Err("the argument is 3 bytes, the task takes 2".to_string())
    );
    for i in [0, 1, 3, 5, 7, 8, 9] {
        assert_eq!(results[i], Ok(vec![i as u8]), "item {i}");
    }
    let big = vec![i64::MAX.to_le_bytes().to_vec(), 3i64.to_le_bytes().to_vec()];
    let (_, _, results) = round_trip("square", &big);
    assert_eq!(results[0], Err(format!("{} overflows", i64::MAX)));
    assert_eq!(results[1], Ok(9i64.to_le_bytes().to_vec()));
}

#[test]
fn a_packed_typed_batch_fails_any_item_alone_and_goes_on_after_it() {
    // 7 panics (odd), 600 fails (300 is not a u8): alone, in pairs,
    // first, last, and every item.
    let cases: Vec<Vec<usize>> = vec![
        vec![0],
        vec![1],
        vec![5],
        vec![9],
        vec![0, 1],
        vec![4, 5],
        vec![8, 9],
        vec![0, 3, 9],
        (0..10).collect(),
    ];
    for bad in &cases {
        for (arg, want) in [
            (7u16, Err("panicked: odd 7".to_string())),
            (
                600u16,
                Err("out of range integral type conversion attempted".to_string()),
            ),
        ] {
            let mut args: Vec<Vec<u8>> =
                (0..10u16).map(|i| (2 * i).to_le_bytes().to_vec()).collect();
            for &i in bad {
                args[i] = arg.to_le_bytes().to_vec();
            }
            let (task_width, width, results) = round_trip("halve", &args);
            assert_eq!((task_width, width), (2, VARIABLE), "{bad:?}");
            for (i, r) in results.iter().enumerate() {
                if bad.contains(&i) {
                    assert_eq!(r, &want, "item {i} of {bad:?}");
                } else {
                    assert_eq!(r, &Ok(vec![i as u8]), "item {i} of {bad:?}");
                }
            }
        }
    }
}

#[test]
fn the_packed_loop_runs_up_to_the_first_failure_and_leaves_the_cursor_after_it() {
    let halve = Typed::new(|n: u16| -> std::result::Result<u8, String> {
        assert!(n % 2 == 0, "odd {n}");
        Ok((n / 2) as u8)
    });
    for bad in [None, Some(0usize), Some(3), Some(5)] {
        let args: Vec<[u8; 2]> = (0..6u16)
            .map(|i| {
                if Some(usize::from(i)) == bad {
                    7u16
                } else {
                    2 * i
                }
            })
            .map(u16::to_le_bytes)
            .collect();
        let mut frame = Vec::new();
        encode_task(&mut frame, 1, 0, &args).unwrap();
        let (mut data, mut table) = (vec![0xAA; RESULT_HEAD], Vec::new());
        let mut out = Output {
            data: &mut data,
            table: &mut table,
            shape: Shape::default(),
            cursor: Cursor {
                next: 0,
                at: TASK_HEAD,
                head: RESULT_HEAD,
            },
        };
        halve.run_packed(&frame, 6, &mut out).unwrap();
        let ran = bad.map_or(6, |k| k + 1);
        assert_eq!(out.cursor.next, ran, "{bad:?}");
        assert_eq!(out.cursor.at, TASK_HEAD + 2 * ran, "{bad:?}");
        let ok = bad.unwrap_or(6);
        let want: Vec<u8> = (0..ok as u8).collect();
        assert_eq!(
            &out.data[RESULT_HEAD..RESULT_HEAD + ok],
            &want[..],
            "{bad:?}"
        );
        if bad.is_some() {
            assert_eq!(&out.data[RESULT_HEAD + ok..], b"panicked: odd 7");
            assert_eq!(table.len(), 4 * (ok + 1), "{bad:?}");
        } else {
            assert_eq!(out.data.len(), RESULT_HEAD + 6);
            assert_eq!(out.shape.packed, Some(1));
            assert!(table.is_empty());
        }
    }
}

/// Encode, run and decode one batch as a worker and the pool would:
/// (the task frame's width, the result frame's width, the results).
type Outcome = std::result::Result<Vec<u8>, String>;

fn round_trip(name: &'static str, args: &[Vec<u8>]) -> (u32, u32, Vec<Outcome>) {
    let reg = registry();
    let mut task = Vec::new();
    let count = encode_task(&mut task, 42, index(&reg, name), args).unwrap();
    assert_eq!(count as usize, args.len());
    let (mut out, mut table) = (Vec::new(), Vec::new());
    run_batch(&reg, &task, &mut out, &mut table).unwrap();
    // What send_parts puts on the wire.
    let mut frame = out[..RESULT_HEAD].to_vec();
    frame.extend_from_slice(&table);
    frame.extend_from_slice(&out[RESULT_HEAD..]);
    assert_eq!(read::<u64>(&frame, 0), Some(42));
    assert_eq!(read::<u32>(&frame, 8), Some(count));
    let width = read::<u32>(&frame, 12).unwrap();
    let layout = parse_layout(&frame, count, width).unwrap();
    let batch = Batch {
        task: name,
        first: 0,
        frame,
        layout,
        lost: None,
        count: count as usize,
    };
    let results = (0..args.len())
        .map(|i| {
            batch.get(i).map(<[u8]>::to_vec).map_err(|e| match e {
                TaskError::Failed { message, index, .. } => {
                    assert_eq!(index, i);
                    message
                }
                other => panic!("unexpected {other}"),
            })
        })
        .collect();
    (read::<u32>(&task, 14).unwrap(), width, results)
}

#[test]
fn items_of_one_width_travel_packed_both_ways() {
    let args: Vec<Vec<u8>> = (0..1000u64).map(|i| i.to_le_bytes().to_vec()).collect();
    let (task_width, result_width, results) = round_trip("echo", &args);
    assert_eq!((task_width, result_width), (8, 8));
    let want: Vec<_> = args.iter().cloned().map(Ok).collect();
    assert_eq!(results, want);
    // Packed means no per-item bytes at all.
    let mut task = Vec::new();
    encode_task(&mut task, 1, 0, &args).unwrap();
    assert_eq!(task.len(), TASK_HEAD + 8 * 1000);
}

#[test]
fn items_of_mixed_widths_are_framed_one_by_one() {
    let args: Vec<Vec<u8>> = vec![
        vec![],
        b"a".to_vec(),
        b"bcd".to_vec(),
        vec![],
        b"ef".to_vec(),
    ];
    let (task_width, result_width, results) = round_trip("echo", &args);
    assert_eq!((task_width, result_width), (VARIABLE, VARIABLE));
    let want: Vec<_> = args.iter().cloned().map(Ok).collect();
    assert_eq!(results, want);
}

#[test]
fn empty_results_and_empty_batches_pack() {
    let args = vec![Vec::new(); 5];
    let (task_width, result_width, results) = round_trip("echo", &args);
    assert_eq!((task_width, result_width), (0, 0));
    assert_eq!(results, vec![Ok(Vec::new()); 5]);
    let (_, result_width, results) = round_trip("echo", &[]);
    assert_eq!(result_width, 0);
    assert!(results.is_empty());
}

#[test]
fn a_failure_or_panic_anywhere_fails_that_item_alone() {
    let ok = |b: u8| vec![0, b, b];
    let outcomes: [(&[u8], Outcome); 4] = [
        (&[1, 9], Err("refused 1".into())),
        (&[2, 9, 9], Err("panicked: boom 2".into())),
        (&[3], Err("panicked: static boom".into())),
        (&[], Err("empty".into())),
    ];
    for (bad, want) in &outcomes {
        for at in [0usize, 1, 5, 9] {
            let mut args: Vec<Vec<u8>> = (0..10).map(|i| ok(i as u8)).collect();
            args[at] = bad.to_vec();
            let (_, width, results) = round_trip("pick", &args);
            assert_eq!(width, VARIABLE, "a failure is never packed");
            for (i, r) in results.iter().enumerate() {
                if i == at {
                    assert_eq!(r, want, "item {i} of {bad:?}");
                } else {
                    assert_eq!(r, &Ok(vec![i as u8, i as u8]), "item {i} of {bad:?}");
                }
            }
        }
    }
}

#[test]
fn panics_in_a_row_and_a_batch_of_panics_each_fail_once() {
    let args: Vec<Vec<u8>> = vec![vec![2], vec![3], vec![0, 7], vec![2, 0], vec![2]];
    let (_, _, results) = round_trip("pick", &args);
    assert_eq!(
        results,
        vec![
            Err("panicked: boom 0".into()),
            Err("panicked: static boom".into()),
            Ok(vec![7]),
            Err("panicked: boom 1".into()),
            Err("panicked: boom 0".into()),
        ]
    );
    let (_, _, results) = round_trip("pick", &vec![vec![2u8]; 50]);
    assert_eq!(results, vec![Err("panicked: boom 0".to_string()); 50]);
}

#[test]
fn results_of_a_new_width_late_in_a_batch_switch_to_a_table() {
    let mut args: Vec<Vec<u8>> = (0..100u8).map(|i| vec![0, i]).collect();
    args[99] = vec![0, 1, 2, 3];
    let (task_width, result_width, results) = round_trip("pick", &args);
    assert_eq!((task_width, result_width), (VARIABLE, VARIABLE));
    assert_eq!(results[98], Ok(vec![98]));
    assert_eq!(results[99], Ok(vec![1, 2, 3]));
}

#[test]
fn a_typed_worker_refuses_a_frame_that_lies_about_its_count() {
    let reg = registry();
    let mut task = Vec::new();
    encode_task(&mut task, 1, index(&reg, "square"), &[7i64.to_le_bytes()]).unwrap();
    task[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    let (mut out, mut table) = (Vec::new(), Vec::new());
    assert!(run_batch(&reg, &task, &mut out, &mut table).is_err());
    assert!(out.capacity() < 1 << 20, "no huge reservation");
}

#[test]
fn a_worker_refuses_a_torn_task_frame() {
    let reg = registry();
    let (mut out, mut table) = (Vec::new(), Vec::new());
    // A byte task's framed items, and a typed task's packed ones.
    let mut framed = Vec::new();
    encode_task(&mut framed, 1, 0, &[b"abc".to_vec(), b"de".to_vec()]).unwrap();
    let mut packed = Vec::new();
    let square = index(&reg, "square");
    encode_task(
        &mut packed,
        2,
        square,
        &[3i64.to_le_bytes(), 4i64.to_le_bytes()],
    )
    .unwrap();
    for task in [&framed, &packed] {
        assert!(run_batch(&reg, task, &mut out, &mut table).is_ok());
        for cut in [0, 5, TASK_HEAD, TASK_HEAD + 1, task.len() - 1] {
            assert!(
                run_batch(&reg, &task[..cut], &mut out, &mut table).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = task.clone();
        long.push(0);
        assert!(
            run_batch(&reg, &long, &mut out, &mut table).is_err(),
            "trailing byte"
        );
    }
    let task = framed;
    let mut unknown = task;
    unknown[8] = 9;
    assert!(
        run_batch(&reg, &unknown, &mut out, &mut table).is_err(),
        "no such task"
    );
}

/// Encode `args` for typed `task` as the pool does, run the batch as a
/// worker does, and decode the results as [`Results`] does.
fn typed_round_trip<A: Wire, R: Wire>(
    reg: &Registry,
    task: Task<A, R>,
    args: &[A],
) -> Vec<std::result::Result<R, TaskError>> {
    let (func, name) = task.resolve(reg).unwrap();
    let mut input = Vec::new();
    let count = <Task<A, R> as Target<A>>::encode(&mut input, 7, func, args).unwrap();
    let (mut out, mut table) = (Vec::new(), Vec::new());
    run_batch(reg, &input, &mut out, &mut table).unwrap();
    let mut frame = out[..RESULT_HEAD].to_vec();
    frame.extend_from_slice(&table);
    frame.extend_from_slice(&out[RESULT_HEAD..]);
    let width = read::<u32>(&frame, 12).unwrap();
    let batch = Batch {
        task: name,
        first: 0,
        layout: parse_layout(&frame, count, width).unwrap(),
        frame,
        lost: None,
        count: count as usize,
    };
    (0..args.len()).map(|i| batch.decode(i)).collect()
}

#[test]
fn typed_tasks_take_and_return_strings_bytes_and_tuples() {
    let mut reg = Registry::new();
    let shout = reg.task("shout", |s: String| s.to_uppercase());
    let split = reg.task("split", |b: Vec<u8>| {
        (b.len() as u32, b.into_iter().rev().collect::<Vec<u8>>())
    });
    let mean = reg.task("mean", |(a, b): (i32, f64)| (f64::from(a) + b) / 2.0);
    let words: Vec<String> = ["a", "", "héllo", "xyz"].map(String::from).to_vec();
    let got = typed_round_trip(&reg, shout, &words);
    let want: Vec<_> = ["A", "", "HÉLLO", "XYZ"]
        .map(|s| Ok(s.to_string()))
        .to_vec();
    assert_eq!(got, want);
    let got = typed_round_trip(&reg, split, &[vec![1, 2, 3], vec![]]);
    assert_eq!(got, vec![Ok((3, vec![3, 2, 1])), Ok((0, vec![]))]);
    let got = typed_round_trip(&reg, mean, &[(1, 2.0), (-4, 0.5)]);
    assert_eq!(got, vec![Ok(1.5), Ok(-1.75)]);
}

#[test]
fn a_typed_task_that_returns_a_result_fails_that_item_alone() {
    let mut reg = Registry::new();
    let parse = reg.task("parse", |s: String| s.parse::<u8>());
    let args: Vec<String> = ["7", "x", "300", "9"].map(String::from).to_vec();
    let got = typed_round_trip(&reg, parse, &args);
    assert_eq!(got[0], Ok(7));
    assert_eq!(got[3], Ok(9));
    for (i, why) in [
        (1, "invalid digit found in string"),
        (2, "number too large to fit in target type"),
    ] {
        assert_eq!(
            got[i],
            Err(TaskError::Failed {
                task: "parse".into(),
                index: i,
                message: why.into()
            })
        );
    }
}

#[test]
fn a_result_of_the_wrong_shape_is_a_failed_item_not_a_panic() {
    let mut reg = Registry::new();
    let echo_bytes = reg.task("bytes", |b: Vec<u8>| b);
    let (func, name) = echo_bytes.resolve(&reg).unwrap();
    // Decoded as if the task returned a u32: 3 bytes are not one.
    let mut input = Vec::new();
    let count = encode_task(&mut input, 1, func, &[vec![1u8, 2, 3]]).unwrap();
    let (mut out, mut table) = (Vec::new(), Vec::new());
    run_batch(&reg, &input, &mut out, &mut table).unwrap();
    let width = read::<u32>(&out, 12).unwrap();
    let batch = Batch {
        task: name,
        first: 0,
        layout: parse_layout(&out, count, width).unwrap(),
        frame: out,
        lost: None,
        count: 1,
    };
    let e = batch.decode::<u32>(0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "task bytes[0] failed: a result of 3 bytes is not a u32"
    );
}
