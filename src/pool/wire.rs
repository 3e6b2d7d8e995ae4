//! [`Wire`]: how a task's argument and result cross the pipes, so that a
//! task takes and returns its own types and the caller writes no byte
//! conversion.
//!
//! - Integers, floats, `bool`, `()` and `[u8; N]` have a fixed width: their
//!   little-endian bytes. A batch of them travels packed, as a C pool sends
//!   an array, and a worker runs it in a loop with no per-item framing.
//! - `String` (UTF-8) and `Vec<u8>` are their bytes, of any length.
//! - A tuple of up to six of these is its fields back to back; a field of
//!   no fixed width is preceded by its length (`u32`). A tuple of fixed-width
//!   fields has a fixed width itself, and packs.
//!
//! Both ends are the same program (the workers are forked), so the
//! encoding only has to agree with itself; it is little-endian throughout.

/// A value a pool task takes or returns: how it is written to and read
/// from the pipes.
///
/// Implemented for the integers, `f32`/`f64`, `bool`, `()`, `[u8; N]`,
/// `String`, `Vec<u8>` and tuples of up to six of these. A type of your own
/// can implement it too; [`Wire::size`] must be [`Wire::WIDTH`] whenever
/// that is `Some`.
pub trait Wire: Sized + Send + 'static {
    /// `Some(n)` when every value is `n` bytes on the wire (such values
    /// travel packed, with no length per item); `None` when the size
    /// varies.
    const WIDTH: Option<usize>;

    /// `true` when [`Wire::get`] makes a value of every slice of
    /// [`Wire::WIDTH`] bytes, whatever they hold (the numbers, `[u8; N]`,
    /// `()` and tuples of these): [`Results::values_into`] then copies a
    /// batch of them out in one pass, with no check per item. `false`
    /// (the default) is always correct; a type that claims `true` and then
    /// returns `None` for some bytes makes `values_into` panic.
    ///
    /// [`Results::values_into`]: super::Results::values_into
    const ANY_BYTES: bool = false;

    /// How many bytes this value takes on the wire.
    fn size(&self) -> usize;

    /// Write the value into `out`, which is exactly [`Wire::size`] bytes.
    fn put(&self, out: &mut [u8]);

    /// Read a value from all of `bytes`; `None` when they are not one.
    fn get(bytes: &[u8]) -> Option<Self>;

    /// Append the value's bytes to `out`.
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + self.size(), 0);
        self.put(&mut out[at..]);
    }
}

macro_rules! wire_numbers {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const WIDTH: Option<usize> = Some(std::mem::size_of::<$t>());
            const ANY_BYTES: bool = true;
            #[inline]
            fn size(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
            // Appended as they are: the default would zero-fill the bytes
            // first (a call to memset per item).
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
wire_numbers!(
    i8, u8, i16, u16, i32, u32, i64, u64, i128, u128, isize, usize, f32, f64
);

impl Wire for bool {
    const WIDTH: Option<usize> = Some(1);
    #[inline]
    fn size(&self) -> usize {
        1
    }
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out[0] = u8::from(*self);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

impl Wire for () {
    const WIDTH: Option<usize> = Some(0);
    const ANY_BYTES: bool = true;
    #[inline]
    fn size(&self) -> usize {
        0
    }
    #[inline]
    fn put(&self, _out: &mut [u8]) {}
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        bytes.is_empty().then_some(())
    }
}

impl<const N: usize> Wire for [u8; N] {
    const WIDTH: Option<usize> = Some(N);
    const ANY_BYTES: bool = true;
    #[inline]
    fn size(&self) -> usize {
        N
    }
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok()
    }
}

impl Wire for Vec<u8> {
    const WIDTH: Option<usize> = None;
    #[inline]
    fn size(&self) -> usize {
        self.len()
    }
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Wire for String {
    const WIDTH: Option<usize> = None;
    #[inline]
    fn size(&self) -> usize {
        self.len()
    }
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self.as_bytes());
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

/// Bytes of the length in front of a tuple field of no fixed width.
const FIELD_LEN: usize = 4;

/// The wire size of a tuple field: its bytes, and its length in front when
/// it has no fixed width.
#[inline]
fn field_size<T: Wire>(v: &T) -> usize {
    match T::WIDTH {
        Some(w) => w,
        None => FIELD_LEN.saturating_add(v.size()),
    }
}

/// Write a tuple field at `at` in `out`; returns where the next one starts.
#[inline]
fn put_field<T: Wire>(v: &T, out: &mut [u8], at: usize) -> usize {
    let mut at = at;
    let n = v.size();
    if T::WIDTH.is_none() {
        // Sizes past u32 never reach here: a frame holds at most 1 GiB,
        // checked before anything is written.
        let len = u32::try_from(n).unwrap_or(u32::MAX);
        out[at..at + FIELD_LEN].copy_from_slice(&len.to_le_bytes());
        at += FIELD_LEN;
    }
    v.put(&mut out[at..at + n]);
    at + n
}

/// Read a tuple field at `*at` in `bytes`, and move `*at` past it.
#[inline]
fn get_field<T: Wire>(bytes: &[u8], at: &mut usize) -> Option<T> {
    let n = match T::WIDTH {
        Some(w) => w,
        None => {
            let n = read::<u32>(bytes, *at)? as usize;
            *at += FIELD_LEN;
            n
        }
    };
    let end = at.checked_add(n)?;
    let v = T::get(bytes.get(*at..end)?)?;
    *at = end;
    Some(v)
}

/// The fixed width of fields of widths `a` and `b` side by side.
const fn both(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    }
}

macro_rules! wire_tuples {
    ($(($($T:ident $i:tt),+))*) => {$(
        impl<$($T: Wire),+> Wire for ($($T,)+) {
            const WIDTH: Option<usize> = {
                let w = Some(0);
                $(let w = both(w, $T::WIDTH);)+
                w
            };
            // Fixed-width parts, each a value whatever its bytes.
            const ANY_BYTES: bool = Self::WIDTH.is_some() $(&& $T::ANY_BYTES)+;
            #[inline]
            fn size(&self) -> usize {
                0usize $(.saturating_add(field_size(&self.$i)))+
            }
            #[inline]
            fn put(&self, out: &mut [u8]) {
                let at = 0;
                $(let at = put_field(&self.$i, out, at);)+
                debug_assert_eq!(at, out.len());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                let mut at = 0;
                let v = ($(get_field::<$T>(bytes, &mut at)?,)+);
                (at == bytes.len()).then_some(v)
            }
        }
    )*};
}
wire_tuples! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
}

/// The little-endian `T` at byte `at` of `b`, if it is all there.
#[inline]
pub(crate) fn read<T: Wire>(b: &[u8], at: usize) -> Option<T> {
    let w = T::WIDTH?;
    T::get(b.get(at..at.checked_add(w)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(v: T) -> Vec<u8> {
        let mut bytes = Vec::new();
        v.encode(&mut bytes);
        assert_eq!(bytes.len(), v.size(), "{v:?}");
        if let Some(w) = T::WIDTH {
            assert_eq!(bytes.len(), w, "{v:?}");
        }
        assert_eq!(T::get(&bytes), Some(v));
        bytes
    }

    #[test]
    fn numbers_and_arrays_are_their_little_endian_bytes() {
        assert_eq!(round_trip(-2i32), (-2i32).to_le_bytes());
        assert_eq!(round_trip(1.5f64), 1.5f64.to_le_bytes());
        assert_eq!(round_trip([7u8, 8, 9]), [7, 8, 9]);
        assert_eq!(round_trip(u128::MAX), [0xFF; 16]);
        assert_eq!(round_trip(true), [1]);
        assert!(round_trip(()).is_empty());
        assert_eq!(i32::get(&[1, 2, 3]), None);
        assert_eq!(bool::get(&[2]), None);
        assert_eq!(<()>::get(&[0]), None);
        assert_eq!(<[u8; 3]>::WIDTH, Some(3));
    }

    #[test]
    fn strings_and_byte_vectors_are_their_bytes() {
        assert_eq!(round_trip("héllo".to_string()), "héllo".as_bytes());
        assert_eq!(round_trip(String::new()), b"");
        assert_eq!(round_trip(vec![0u8, 255]), [0, 255]);
        assert_eq!(String::get(&[0xFF, 0xFE]), None, "not UTF-8");
        assert_eq!(String::WIDTH, None);
    }

    #[test]
    fn a_tuple_of_fixed_fields_packs_and_others_carry_lengths() {
        assert_eq!(<(u8, i64)>::WIDTH, Some(9));
        assert_eq!(<(u8, String)>::WIDTH, None);
        let packed = round_trip((1u8, -1i64));
        assert_eq!(packed, [&[1u8][..], &(-1i64).to_le_bytes()].concat());
        let mixed = round_trip(("ab".to_string(), 7u16, vec![9u8]));
        assert_eq!(mixed, [2, 0, 0, 0, b'a', b'b', 7, 0, 1, 0, 0, 0, 9]);
        round_trip((1u8, 2u16, 3u32, 4u64, 5.0f32, "six".to_string()));
        round_trip(((1u8, "nested".to_string()), String::new()));
        round_trip((true,));
    }

    #[test]
    fn a_tuple_refuses_bytes_that_do_not_add_up() {
        let good = round_trip(("ab".to_string(), 7u16));
        for cut in 0..good.len() {
            assert_eq!(<(String, u16)>::get(&good[..cut]), None, "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(<(String, u16)>::get(&long), None, "trailing byte");
        let mut lying = good;
        lying[0] = 200;
        assert_eq!(<(String, u16)>::get(&lying), None, "length past the end");
    }

    #[test]
    fn read_takes_a_fixed_width_value_at_an_offset() {
        let b = [0u8, 1, 0, 0, 0, 9];
        assert_eq!(read::<u32>(&b, 1), Some(1));
        assert_eq!(read::<u32>(&b, 3), None);
        assert_eq!(read::<u32>(&b, usize::MAX), None);
        assert_eq!(read::<String>(&b, 0), None, "no fixed width");
    }
}
