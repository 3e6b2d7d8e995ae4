//! A sale that stands only once it is committed: [`Pending`], and the undo
//! that writes the old count back.

use nix::errno::Errno;

use super::{Locked, Text, Ticket, TicketFile};
use crate::error::{Error, ErrorKind, Result};

/// What [`TicketFile::buy_pending`] came to.
#[derive(Debug)]
pub enum Purchase<'a> {
    /// A ticket is sold, the lock still held: hand it over, then
    /// [`Pending::commit`], or [`Pending::undo`].
    Pending(Pending<'a>),
    /// The count was 0: nothing sold, the file unchanged.
    SoldOut,
}

/// A sale written to the file (and flushed, when durable) while the lock
/// is still held: no buyer has seen it. [`Pending::commit`] makes it stand
/// and releases the lock; [`Pending::undo`], or a drop without a commit,
/// writes the old count back first, so the ticket is for sale again.
#[derive(Debug)]
#[must_use = "a pending sale is undone when dropped: commit it once the ticket is handed over"]
pub struct Pending<'a> {
    pub(super) shop: &'a TicketFile,
    pub(super) ticket: Ticket,
    /// The file's content before the sale.
    pub(super) old: Text,
    pub(super) settled: bool,
    /// Dropped after `drop` has undone an unsettled sale.
    pub(super) _lock: Option<Locked<'a>>,
}

impl Pending<'_> {
    /// The ticket sold.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Keep the sale, and release the lock.
    pub fn commit(mut self) {
        self.settled = true;
    }

    /// Undo the sale before the lock is released: the old count is written
    /// back (and flushed, when durable), and the ticket is for sale again.
    /// The error, when that fails, says what the file holds: the count
    /// without the ticket (then the ticket was sold to nobody), or the old
    /// count with the disk unknown (a failed flush).
    pub fn undo(mut self) -> Result<()> {
        self.settled = true;
        self.shop.restore(&self.old, self.ticket)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.shop.restore(&self.old, self.ticket);
        }
    }
}

/// How a failed sale ended, for the error's last words: undone, or not.
pub(super) fn undo_outcome(undone: &Result<()>, ticket: Ticket) -> String {
    match undone {
        Ok(()) => format!("nothing sold: the count is back to {}", ticket.number),
        Err(e) => format!("and undoing the sale failed: {e}"),
    }
}

impl TicketFile {
    /// Write the count a sale replaced back (`old`, the file's whole
    /// former content, at least as long as what the sale left), and flush
    /// it when durable. The error says what the file holds then.
    pub(super) fn restore(&self, old: &Text, ticket: Ticket) -> Result<()> {
        let (was, now) = (ticket.number, ticket.left);
        self.pwrite_all(old.bytes()).map_err(|e| {
            Error::new(
                e.kind(),
                "write",
                &self.name,
                format!(
                    "{}: the old count could not be written back: the file says {now}, and ticket {was} was sold to nobody",
                    e.errno().map_or_else(|| e.to_string(), crate::error::strerror)
                ),
            )
        })?;
        if self.durable {
            nix::unistd::fdatasync(&self.fd).map_err(|e| {
                self.unknown_on_disk(
                    e,
                    format!("the count is back to {was}, but whether the disk holds {was} or {now} is unknown"),
                )
            })?;
        }
        Ok(())
    }

    /// A failed flush: the file holds what `state` says, the disk maybe not.
    pub(super) fn unknown_on_disk(&self, e: Errno, state: String) -> Error {
        Error::new(
            ErrorKind::from_errno(e),
            "fdatasync",
            &self.name,
            format!("{}: {state}", crate::error::strerror(e)),
        )
    }
}
