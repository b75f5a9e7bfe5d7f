//! Base62 with the alphabet `0-9A-Za-z` (ASCII order, so encoded numbers sort like the numbers).

/// The 62 symbols, in value order.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Value of one base62 symbol, or `None` for anything outside the alphabet.
#[inline]
pub fn value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

/// Encodes `n` in exactly `width` symbols (big-endian, zero padded).
/// Returns `None` when `n` does not fit in `width` symbols.
pub fn encode_fixed(mut n: u64, width: usize) -> Option<String> {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    if n != 0 {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Decodes a fixed-width base62 number. `None` on a symbol outside the alphabet or on overflow.
pub fn decode(s: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &c in s {
        n = n.checked_mul(62)?.checked_add(u64::from(value(c)?))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_boundaries() {
        for n in [0u64, 1, 61, 62, 3843, u64::from(u32::MAX)] {
            let s = encode_fixed(n, 6).unwrap();
            assert_eq!(s.len(), 6);
            assert_eq!(decode(s.as_bytes()), Some(n));
        }
        assert_eq!(encode_fixed(62u64.pow(6), 6), None);
        assert_eq!(encode_fixed(u64::from(u32::MAX), 6).unwrap(), "4gfFC3");
    }

    #[test]
    fn rejects_outside_alphabet() {
        for bad in ["-", "_", " ", "é", "\0", "+", "/"] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(b"zzzzzzzzzzzzzzzzzzzzzzzz"), None, "overflow is refused");
    }
}
