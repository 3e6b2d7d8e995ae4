//! Five buyer processes race for three tickets in a plain-text file locked
//! with flock(2): exactly three are sold, each once. A buyer's exit code is
//! the ticket number it got (0: sold out).
//!
//! Run: cargo run --example tickets

#![forbid(unsafe_code)]

use posixkit::process::Builder;
use posixkit::ticket::{Sale, TicketFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("posixkit-tickets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("product");
    TicketFile::init(&path, 3)?; // the file holds "3"

    let mut buyers = Vec::new();
    for b in 0..5 {
        let path = &path;
        buyers.push(Builder::new().name(format!("buyer-{b}")).start(move || {
            match TicketFile::open(path).and_then(|file| file.buy()) {
                Ok(Sale::Bought(ticket)) => ticket.number as i32,
                Ok(Sale::SoldOut) => 0,
                Err(_) => 100,
            }
        })?);
    }
    let mut sold = Vec::new();
    for b in &mut buyers {
        b.join(None)?;
        match b.exitcode() {
            Some(0) => println!("{}: sold out", b.name()),
            Some(n @ 1..=3) => {
                println!("{} bought ticket {n}", b.name());
                sold.push(n);
            }
            other => panic!("{} failed: {other:?}", b.name()),
        }
    }
    sold.sort();
    assert_eq!(sold, [1, 2, 3], "each ticket sold exactly once");
    assert_eq!(TicketFile::open(&path)?.count()?, 0);
    assert_eq!(std::fs::read_to_string(&path)?.trim(), "0");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
