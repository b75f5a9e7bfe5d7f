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
//! Known gaps in `cert.rs` (reported, see docs/FUZZING.md "Findings not yet fixed"), excluded from the
//! assertions so that the run explores past them; set `KEYWARD_FUZZ_STRICT_DN=1` to assert them
//! too (e.g. to check a fix with the `known-*` seeds of `corpus/client_cert/`):
//! 1. `parse` drops leading/trailing whitespace even when escaped (`CN=\ a`, `CN=a\20`), and any
//!    Unicode whitespace (U+00A0, U+3000, ...), not only U+0020 as RFC 4514 says;
//! 2. `parse` refuses a value starting with an escaped `\#` (the hex-value check runs after
//!    unescaping), so values starting with `#` are refused;
//! 3. `to_rfc4514` escapes the C1 controls U+0080..U+009F (`char::is_control`) as UTF-8 hex
//!    pairs (`\C2\80`), which `parse` refuses ("non-ASCII hex escapes are not supported").
#![no_main]

use std::sync::OnceLock;

use keyward_token::{cert_thumbprint, ClientCert, DistinguishedName};
use libfuzzer_sys::fuzz_target;

/// `parse` refuses longer text (documented limit).
const MAX_DN: usize = 4096;

fn strict() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| std::env::var_os("KEYWARD_FUZZ_STRICT_DN").is_some_and(|v| v == "1"))
}

/// Whether the round trip is promised for a certificate subject printed as `text`:
/// - not for an empty subject (no RDN: `to_rfc4514` gives "", which `parse` refuses by design;
///   `ClientCert::parse` also gives an empty subject when an attribute value is not a string);
/// - not beyond `MAX_DN` bytes (escapes can make the text longer than the DER);
/// - not for attribute types that are neither short names nor dotted OIDs: `asn1-rs` prints an
///   OID with an arc beyond u64 as hex bytes ("2a 86 ..."), which is no RFC 4514 type;
/// - and, unless strict, not for the known gaps 1-3 of the module comment.
fn printable(text: &str, values: &[String]) -> bool {
    if text.is_empty() || text.len() > MAX_DN {
        return false;
    }
    if !strict() && values.iter().any(|v| known_gap(v)) {
        return false;
    }
    true
}

/// Values that hit a known gap (1-3 of the module comment).
fn known_gap(v: &str) -> bool {
    let edge_space = v.starts_with(char::is_whitespace) || v.ends_with(char::is_whitespace);
    let hash = v.starts_with('#');
    edge_space || hash || has_c1(v)
}

/// Gap 3: a C1 control character.
fn has_c1(v: &str) -> bool {
    v.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c))
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
    let (types, values) = split(&text);
    if !types_ok(&types) || !printable(&text, &values) {
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
    // The parsed DN has no empty RDN, no empty type and no edge blanks (gap 1 even drops
    // escaped ones), so only the length limit and gap 3 remain.
    if printed.len() > MAX_DN {
        return;
    }
    let (_, values) = split(&printed);
    if !strict() && values.iter().any(|v| has_c1(v)) {
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
