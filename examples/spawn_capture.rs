//! Start a program, feed its stdin and capture its stdout and stderr:
//! Python's `subprocess.run(..., input=..., capture_output=True)`.
//!
//! Run: cargo run --example spawn_capture

#![forbid(unsafe_code)]

use posixkit::spawn::Spawn;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = Spawn::new(["sh", "-c", "tr a-z A-Z; echo 'to stderr' >&2; exit 3"])?
        .input(b"hello\n".to_vec())
        .capture(true)
        .run()?;
    println!("status: {}", out.status);
    println!("stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    println!("stderr: {:?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"HELLO\n");
    assert_eq!(out.stderr, b"to stderr\n");
    assert_eq!(out.status.shell_code(), 3);

    // A program that is not there is an error of its own kind.
    let e = Spawn::new(["no-such-program-here"])?.run().unwrap_err();
    println!("{e}");
    assert_eq!(e.kind(), posixkit::ErrorKind::CommandNotFound);
    Ok(())
}
