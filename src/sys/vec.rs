//! Filling a `Vec` in place, for items that may be missing: what
//! `Vec::extend` does for an iterator of known length (write each item
//! into the spare capacity, set the length once), which a loop of `push`
//! cannot (it stores the length at every item, and a loop of small copies
//! is then not vectorised: about twice the time for packed `i64`s).

/// Append `items` to `out` up to the first `None`, which is dropped and
/// ends it; how many were appended. Room for `items.len()` is reserved
/// first; an iterator that yields more than it said stops at the spare
/// capacity.
pub(crate) fn extend_until_none<T>(
    out: &mut Vec<T>,
    items: impl ExactSizeIterator<Item = Option<T>>,
) -> usize {
    out.reserve(items.len());
    let len = out.len();
    let mut written = 0;
    for (slot, item) in out.spare_capacity_mut().iter_mut().zip(items) {
        let Some(value) = item else { break };
        slot.write(value);
        written += 1;
    }
    // SAFETY: the `written` slots right after the first `len` elements are
    // the first `written` of the spare capacity, each initialised just
    // above by `slot.write`, so `len + written` is within the capacity and
    // every element below it is initialised. Were `items` to panic, this
    // line is not reached: the values written are leaked, never dropped
    // twice nor read uninitialised.
    unsafe { out.set_len(len + written) };
    written
}

#[cfg(test)]
mod tests {
    use super::extend_until_none;

    #[test]
    fn appends_up_to_the_first_none_and_keeps_what_was_there() {
        let mut out = vec![String::from("kept")];
        let items = ["a", "b", "", "c"].map(|s| (!s.is_empty()).then(|| s.to_string()));
        assert_eq!(extend_until_none(&mut out, items.into_iter()), 2);
        assert_eq!(out, ["kept", "a", "b"]);
        let all = (0..1000).map(|n| Some(n.to_string()));
        assert_eq!(extend_until_none(&mut out, all), 1000);
        assert_eq!(out.len(), 1003);
        assert_eq!(out[1002], "999");
    }
}
