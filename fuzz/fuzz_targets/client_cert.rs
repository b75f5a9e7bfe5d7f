//! Client certificates and distinguished names (`keyward_token::cert`, RFC 8705 mTLS):
//! `ClientCert::parse` on DER, and `DistinguishedName::parse` / `to_rfc4514` on RFC 4514 text.
//! `tls_client_auth` matches a client by `DistinguishedName::parse(configured) == cert.subject`,
//! so a certificate subject that no string parses to can never be registered.
//!
//! Input: byte 0 selects the mode (bit 0):
//! - clear (A): the rest is a DER certificate. When it parses: the subject, printed with
//!   `to_rfc4514` and parsed back, is the subject (see `printable` for the subjects excluded);
//!   `x5t_s256` is `cert_thumbprint` of the input; `valid_at` agrees with the validity bounds.
//! - set (B): the rest is a DN in RFC 4514 text. When it parses: `parse(to_rfc4514(dn)) == dn`,
//!   and `to_rfc4514` is a fixed point (printing the re-parsed DN gives the same text).
//!
//! Found by this target and fixed (regression inputs in fuzz/regressions/client_cert/, unit test
//! `cert::tests::dn_round_trips_what_the_fuzzer_found`): `parse` dropped escaped edge spaces and
//! trimmed any Unicode whitespace; refused values starting with an escaped `\#`; refused the
//! multi-byte hex escapes (`\C2\80`) that `to_rfc4514` prints for C1 controls.
#![no_main]

use keyward_token::{cert_thumbprint, ClientCert, DistinguishedName};
use libfuzzer_sys::fuzz_target;

/// `parse` refuses longer text (documented limit).
const MAX_DN: usize = 4096;

/// Whether the round trip is promised for a certificate subject printed as `text`:
/// - not for an empty subject (no RDN: `to_rfc4514` gives "", which `parse` refuses by design;
///   `ClientCert::parse` also gives an empty subject when an attribute value is not a string);
/// - not beyond `MAX_DN` bytes (escapes can make the text longer than the DER);
/// - not for attribute types that are neither short names nor dotted OIDs: `asn1-rs` prints an
///   OID with an arc beyond u64 as hex bytes ("2a 86 ..."), which is no RFC 4514 type.
fn printable(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_DN
}

fn types_ok(types: &[String]) -> bool {
    types.iter().all(|t| {
        !t.is_empty()
            && (t.chars().all(|c| c.is_ascii_digit() || c == '.')
                || t.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if sel & 1 == 0 {
        certificate(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        dn_text(text);
    }
});

fn certificate(der: &[u8]) {
    let Ok(c) = ClientCert::parse(der) else { return };
    assert_eq!(c.x5t_s256, cert_thumbprint(der));
    assert_eq!(c.x5t_s256.len(), 43, "base64url of 32 bytes");
    // `valid_at` is the closed interval [not_before, not_after].
    assert_eq!(c.valid_at(c.not_before), c.not_before <= c.not_after);
    assert_eq!(c.valid_at(c.not_after), c.not_before <= c.not_after);
    if let Some(t) = c.not_before.checked_sub(1) {
        assert!(!c.valid_at(t));
    }
    if let Some(t) = c.not_after.checked_add(1) {
        assert!(!c.valid_at(t));
    }
    let _ = c.valid_at(keyward_fuzz::NOW);
    let text = c.subject.to_rfc4514();
    let (types, _) = split(&text);
    if !types_ok(&types) || !printable(&text) {
        return;
    }
    match DistinguishedName::parse(&text) {
        Ok(back) => assert_eq!(back, c.subject, "subject {text:?} does not round-trip"),
        Err(e) => panic!("subject printed as {text:?} is refused by parse: {e}"),
    }
}

fn dn_text(text: &str) {
    let Ok(dn) = DistinguishedName::parse(text) else { return };
    let printed = dn.to_rfc4514();
    // The parsed DN has no empty RDN and no empty type, so only the length limit remains.
    if printed.len() > MAX_DN {
        return;
    }
    let back = match DistinguishedName::parse(&printed) {
        Ok(b) => b,
        Err(e) => panic!("{text:?} parsed, but its RFC 4514 form {printed:?} is refused: {e}"),
    };
    assert_eq!(back, dn, "{text:?} → {printed:?} parses to another DN");
    assert_eq!(
        back.to_rfc4514(),
        printed,
        "to_rfc4514 is not a fixed point for {text:?}"
    );
}

/// The attribute types and (unescaped) values of a printed DN, read as RFC 4514 text: `,` and `+`
/// separate attributes, `\XX` is a hex byte, `\c` the character c. Only to decide the
/// exclusions; the round trip itself is checked with `DistinguishedName::parse`.
fn split(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut types, mut values) = (Vec::new(), Vec::new());
    let (mut ty, mut bytes) = (String::new(), Vec::<u8>::new());
    let mut in_value = false;
    let mut it = text.chars().peekable();
    let mut flush = |ty: &mut String, bytes: &mut Vec<u8>| {
        types.push(std::mem::take(ty));
        values.push(String::from_utf8_lossy(&std::mem::take(bytes)).into_owned());
    };
    while let Some(c) = it.next() {
        if !in_value {
            if c == '=' {
                in_value = true;
            } else {
                ty.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                let Some(n) = it.next() else { break };
                let hex = it
                    .peek()
                    .filter(|m| n.is_ascii_hexdigit() && m.is_ascii_hexdigit())
                    .copied();
                if let Some(m) = hex {
                    it.next();
                    bytes.push(u8::from_str_radix(&format!("{n}{m}"), 16).unwrap());
                } else {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(n.encode_utf8(&mut buf).as_bytes());
                }
            }
            ',' | '+' => {
                flush(&mut ty, &mut bytes);
                in_value = false;
            }
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if in_value || !ty.is_empty() {
        flush(&mut ty, &mut bytes);
    }
    (types, values)
}
