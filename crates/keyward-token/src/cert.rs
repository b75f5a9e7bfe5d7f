//! Client certificates (RFC 8705): what the token service and the gateway need to know of the
//! certificate a client presented in the TLS handshake — its `x5t#S256` thumbprint, subject DN
//! (RFC 4514 form), subject alternative names, validity and public key as a JWK.
//!
//! The TLS layer (rustls) has already checked the handshake signature, so the presenter holds
//! the certificate's private key; whether the certificate chains to a trusted CA is a separate
//! fact the caller passes along.

use std::fmt::Write as _;
use std::net::IpAddr;

use aws_lc_rs::digest::{digest, SHA256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Name;

use crate::{b64, Jwk};

/// Why a certificate or a distinguished name could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("the certificate is not valid DER X.509")]
    Malformed,
    #[error("the distinguished name is malformed: {0}")]
    BadDn(&'static str),
    /// `O = X, OU = Y, CN = z`: openssl's default subject output, in the reverse of RFC 4514
    /// order, which would never match a certificate.
    #[error(
        "the distinguished name has spaces around '=', as in openssl's default subject output \
         (\"O = X, OU = Y, CN = z\"), which also lists the RDNs in the reverse of RFC 4514 order \
         and would never match; give the RFC 4514 form that \
         `openssl x509 -noout -subject -nameopt RFC2253` prints (e.g. \"CN=z,OU=Y,O=X\")"
    )]
    OpensslForm,
}

/// One attribute of a distinguished name: type (upper-case short name or dotted OID) and value.
pub type DnAttribute = (String, String);

/// A distinguished name in RFC 4514 order (most specific RDN first); each RDN is a sorted set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<Vec<DnAttribute>>);

/// What keyward reads from a client certificate.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// RFC 8705 §3.1 `x5t#S256`: base64url SHA-256 of the DER.
    pub x5t_s256: String,
    pub subject: DistinguishedName,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_email: Vec<String>,
    pub san_ip: Vec<IpAddr>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The subject public key as a JWK, for the key types JOSE knows (EC P-256/P-384/P-521,
    /// Ed25519, RSA).
    pub public_key: Option<Jwk>,
}

/// `x5t#S256` of a DER certificate.
pub fn cert_thumbprint(der: &[u8]) -> String {
    b64::encode(digest(&SHA256, der).as_ref())
}

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "SERIALNUMBER",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        _ => return None,
    })
}

fn dn_of(name: &X509Name<'_>) -> Result<DistinguishedName, CertError> {
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut set = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let ty = short_name(&oid).map_or(oid, str::to_owned);
            let value = atv
                .as_str()
                .map_err(|_| CertError::BadDn("an attribute value is not a string"))?;
            set.push((ty, value.to_owned()));
        }
        set.sort();
        rdns.push(set);
    }
    // Certificates hold the most general RDN first; RFC 4514 writes the most specific first.
    rdns.reverse();
    Ok(DistinguishedName(rdns))
}

impl DistinguishedName {
    /// Parses the RFC 4514 string form (`CN=svc,O=Example Corp,C=DE`): `,` between RDNs, `+`
    /// between the attributes of one RDN, backslash escapes (`\,`, `\ ` or hex `\2C`, several
    /// hex escapes in a row spelling one UTF-8 character: `\C3\A9`). Unescaped spaces around a
    /// value are not part of it; escaped ones are. Attribute types are short names
    /// (case-insensitive) or dotted OIDs; hex-encoded values (an unescaped leading `#`) are refused.
    pub fn parse(s: &str) -> Result<DistinguishedName, CertError> {
        if s.len() > 4096 {
            return Err(CertError::BadDn("longer than 4096 bytes"));
        }
        let mut rdns = Vec::new();
        let mut set: Vec<DnAttribute> = Vec::new();
        let mut ty = String::new();
        // The value's characters, each with whether it was escaped.
        let mut value: Vec<(char, bool)> = Vec::new();
        // Bytes of consecutive hex escapes, decoded as UTF-8 when the run ends.
        let mut hex: Vec<u8> = Vec::new();
        let mut in_value = false;
        let mut chars = s.chars().peekable();
        let flush_hex = |hex: &mut Vec<u8>, value: &mut Vec<(char, bool)>| -> Result<(), CertError> {
            if hex.is_empty() {
                return Ok(());
            }
            let text = std::str::from_utf8(hex).map_err(|_| CertError::BadDn("hex escapes that are not UTF-8"))?;
            value.extend(text.chars().map(|c| (c, true)));
            hex.clear();
            Ok(())
        };
        let finish =
            |ty: &mut String, value: &mut Vec<(char, bool)>, set: &mut Vec<DnAttribute>| -> Result<(), CertError> {
                let t = ty.trim().to_ascii_uppercase();
                if t.is_empty() {
                    return Err(CertError::BadDn("an attribute type is empty"));
                }
                let oid_like = t.chars().all(|c| c.is_ascii_digit() || c == '.');
                if !(oid_like || t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) {
                    return Err(CertError::BadDn("an attribute type is not a name or an OID"));
                }
                // Unescaped spaces around the value are not part of it (RFC 4514 §3: a value's own
                // leading and trailing spaces are escaped).
                let unescaped_space = |&(c, escaped): &(char, bool)| c == ' ' && !escaped;
                let first = value.iter().position(|x| !unescaped_space(x)).unwrap_or(value.len());
                let last = value.iter().rposition(|x| !unescaped_space(x)).map_or(first, |i| i + 1);
                let v = &value[first..last.max(first)];
                if v.first() == Some(&('#', false)) {
                    return Err(CertError::BadDn("hex-encoded values are not supported"));
                }
                set.push((t, v.iter().map(|&(c, _)| c).collect()));
                ty.clear();
                value.clear();
                Ok(())
            };
        while let Some(c) = chars.next() {
            if !in_value {
                match c {
                    '=' => in_value = true,
                    ',' | '+' | '\\' => return Err(CertError::BadDn("an attribute has no '='")),
                    c => ty.push(c),
                }
                continue;
            }
            if c == '\\' {
                let Some(n) = chars.next() else {
                    return Err(CertError::BadDn("a trailing backslash"));
                };
                if n.is_ascii_hexdigit() {
                    let Some(m) = chars.next().filter(char::is_ascii_hexdigit) else {
                        return Err(CertError::BadDn("a bad hex escape"));
                    };
                    let pair = [n, m].iter().collect::<String>();
                    hex.push(u8::from_str_radix(&pair, 16).map_err(|_| CertError::BadDn("a bad hex escape"))?);
                    continue;
                }
                flush_hex(&mut hex, &mut value)?;
                value.push((n, true));
                continue;
            }
            flush_hex(&mut hex, &mut value)?;
            match c {
                ',' | '+' => {
                    finish(&mut ty, &mut value, &mut set)?;
                    in_value = false;
                    if c == ',' {
                        set.sort();
                        rdns.push(std::mem::take(&mut set));
                    }
                }
                c => value.push((c, false)),
            }
        }
        if !in_value {
            return Err(CertError::BadDn(
                if rdns.is_empty() && set.is_empty() && ty.trim().is_empty() {
                    "empty"
                } else {
                    "an attribute has no '='"
                },
            ));
        }
        flush_hex(&mut hex, &mut value)?;
        finish(&mut ty, &mut value, &mut set)?;
        set.sort();
        rdns.push(set);
        Ok(DistinguishedName(rdns))
    }

    /// Parses a DN that registers a client ([`DistinguishedName::parse`]), refusing the form
    /// openssl prints by default (`O = X, OU = Y, CN = z`: spaces around `=`, RDNs in reverse
    /// order) with a message naming the command that prints the RFC 4514 form. Spaces inside
    /// values (`CN=John Smith`) and after a comma (`CN=svc, O=Example`) are fine.
    pub fn parse_registration(s: &str) -> Result<DistinguishedName, CertError> {
        if spaced_equals(s) {
            return Err(CertError::OpensslForm);
        }
        DistinguishedName::parse(s)
    }

    /// The RFC 4514 string form.
    pub fn to_rfc4514(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, (t, v)) in rdn.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                out.push_str(t);
                out.push('=');
                for (k, c) in v.chars().enumerate() {
                    let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
                        || (k == 0 && (c == ' ' || c == '#'))
                        || (k + 1 == v.chars().count() && c == ' ');
                    if c.is_control() {
                        let mut buf = [0u8; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            let _ = write!(out, "\\{b:02X}");
                        }
                    } else {
                        if special {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
            }
        }
        out
    }
}

/// Whether an `=` that separates an attribute type from its value has white space on either
/// side (escapes skipped: `\=` and `\ ` in a value are data).
fn spaced_equals(s: &str) -> bool {
    let mut in_value = false;
    let mut prev: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
                prev = None;
                continue;
            }
            '=' if !in_value => {
                if prev.is_some_and(char::is_whitespace) || chars.peek().is_some_and(|n| n.is_whitespace()) {
                    return true;
                }
                in_value = true;
            }
            ',' | '+' | ';' if in_value => in_value = false,
            _ => {}
        }
        prev = Some(c);
    }
    false
}

impl std::fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc4514())
    }
}

fn public_jwk(cert: &X509Certificate<'_>) -> Option<Jwk> {
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    if alg == OID_ED25519 {
        let raw = spki.subject_public_key.data.as_ref();
        return (raw.len() == 32).then(|| Jwk::ed25519(raw));
    }
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => Some(Jwk::rsa(rsa.modulus, rsa.exponent)),
        PublicKey::EC(point) if alg == OID_EC => {
            let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?.to_id_string();
            let (crv, width) = match curve.as_str() {
                "1.2.840.10045.3.1.7" => ("P-256", 32),
                "1.3.132.0.34" => ("P-384", 48),
                "1.3.132.0.35" => ("P-521", 66),
                _ => return None,
            };
            let data = point.data();
            // Uncompressed points only: 0x04 || x || y.
            if data.len() != 1 + 2 * width || data.first() != Some(&4) {
                return None;
            }
            Some(Jwk::ec(crv, &data[1..=width], &data[1 + width..]))
        }
        _ => None,
    }
}

impl ClientCert {
    /// Reads a DER certificate. Fails on anything that is not a single well-formed certificate.
    pub fn parse(der: &[u8]) -> Result<ClientCert, CertError> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
        if !rest.is_empty() {
            return Err(CertError::Malformed);
        }
        let subject = dn_of(cert.subject()).unwrap_or(DistinguishedName(Vec::new()));
        let (mut san_dns, mut san_uri, mut san_email, mut san_ip) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => san_dns.push((*d).to_owned()),
                    GeneralName::URI(u) => san_uri.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => san_email.push((*e).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            san_ip.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            san_ip.push(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(ClientCert {
            x5t_s256: cert_thumbprint(der),
            subject,
            san_dns,
            san_uri,
            san_email,
            san_ip,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            public_key: public_jwk(&cert),
        })
    }

    /// Whether the certificate is within its validity period at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_round_trip_and_normalisation() {
        let a = DistinguishedName::parse("CN=svc, O=Example Corp ,C=DE").unwrap();
        let b = DistinguishedName::parse("cn=svc,o=Example Corp,c=DE").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc4514(), "CN=svc,O=Example Corp,C=DE");
        let multi = DistinguishedName::parse("OU=b+CN=a,O=x").unwrap();
        assert_eq!(multi, DistinguishedName::parse("CN=a+OU=b,O=x").unwrap());
        let esc = DistinguishedName::parse(r"CN=Doe\, John,O=a\2Cb").unwrap();
        assert_eq!(esc.0[0][0].1, "Doe, John");
        assert_eq!(esc.0[1][0].1, "a,b");
        assert_eq!(DistinguishedName::parse(&esc.to_rfc4514()).unwrap(), esc);
        assert_ne!(a, DistinguishedName::parse("CN=svc,O=Example Corp").unwrap());
        assert_ne!(a, DistinguishedName::parse("CN=SVC,O=Example Corp,C=DE").unwrap());
    }

    #[test]
    fn malformed_dns_are_refused() {
        for bad in [
            "",
            "CN",
            "=x",
            "CN=a,",
            "CN=a,,O=b",
            "CN=a\\",
            "CN=\\4",
            "CN=#0403",
            "C N=a",
            "CN=\\C3",
            "CN=\\FF\\FE",
            "CN=\\C3\\A9\\A9",
        ] {
            assert!(DistinguishedName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DistinguishedName::parse(&"CN=a,".repeat(2000)).is_err());
    }

    /// Issue 22, point 16: openssl's default subject output is refused with the command that
    /// prints the RFC 4514 form; spaces inside values and after commas are not.
    #[test]
    fn openssl_default_subjects_are_refused_for_registration() {
        for bad in [
            "O = X, OU = Y, CN = z",
            "CN = z",
            "CN =z",
            "CN= z",
            "C = DE, O = Example Corp, CN = billing",
            "CN=ok,O =x",
            "CN=ok+OU\t=x",
        ] {
            let e = DistinguishedName::parse_registration(bad).unwrap_err();
            assert_eq!(e, CertError::OpensslForm, "{bad:?}");
            let m = e.to_string();
            assert!(m.contains("openssl x509 -noout -subject -nameopt RFC2253"), "{m}");
        }
        for good in [
            "CN=John Smith",
            "CN=John Smith,O=Example Corp,C=DE",
            "CN=billing-svc, O=Example Corp",
            "CN=a\\ =b",
            "CN=x\\=y",
            "CN=a=b,O=c",
            "CN=Doe\\, John,O=a\\2Cb",
        ] {
            assert_eq!(
                DistinguishedName::parse_registration(good),
                DistinguishedName::parse(good),
                "{good:?}"
            );
            assert!(DistinguishedName::parse_registration(good).is_ok(), "{good:?}");
        }
        assert_eq!(
            DistinguishedName::parse_registration("CN=John Smith")
                .unwrap()
                .to_rfc4514(),
            "CN=John Smith"
        );
        // Still malformed is still malformed.
        assert!(matches!(
            DistinguishedName::parse_registration("CN"),
            Err(CertError::BadDn(_))
        ));
    }

    /// What the `client_cert` fuzz target found (fuzz/regressions/client_cert/): values that
    /// `to_rfc4514` printed but `parse` read back differently or refused.
    #[test]
    fn dn_round_trips_what_the_fuzzer_found() {
        let dn = |v: &str| DistinguishedName(vec![vec![("CN".to_owned(), v.to_owned())]]);
        for v in [
            " admin ",
            "svc\u{a0}",
            "\u{a0}x",
            "#0403",
            "a\u{80}b",
            "\u{9f}",
            "a\u{1}b",
            "é",
            "  ",
            "x,+y",
        ] {
            let printed = dn(v).to_rfc4514();
            assert_eq!(
                DistinguishedName::parse(&printed),
                Ok(dn(v)),
                "{v:?} printed as {printed:?}"
            );
        }
        // Escaped spaces are part of the value, unescaped ones around it are not.
        assert_eq!(DistinguishedName::parse("CN=\\ admin\\ "), Ok(dn(" admin ")));
        assert_eq!(
            DistinguishedName::parse("CN=  admin  ,O=x").unwrap().0[0],
            dn("admin").0[0]
        );
        // Only an unescaped leading '#' is the (refused) hex form.
        assert_eq!(DistinguishedName::parse("CN=\\#0403"), Ok(dn("#0403")));
        assert_eq!(DistinguishedName::parse("CN=\\C3\\A9"), Ok(dn("é")));
        // U+00A0 is not a space RFC 4514 trims.
        assert_eq!(DistinguishedName::parse("CN=svc\u{a0}"), Ok(dn("svc\u{a0}")));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(ClientCert::parse(b"").unwrap_err(), CertError::Malformed);
        assert_eq!(
            ClientCert::parse(&[0x30, 0x82, 0xff, 0xff]).unwrap_err(),
            CertError::Malformed
        );
        assert_eq!(ClientCert::parse(&[0u8; 64]).unwrap_err(), CertError::Malformed);
    }
}

#[cfg(test)]
mod real_certificates {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName as RcDn, DnType, KeyPair, SanType};

    fn make(alg: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
        let mut dn = RcDn::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "Example, Corp");
        dn.push(DnType::CommonName, "billing-svc");
        p.distinguished_name = dn;
        p.subject_alt_names
            .push(SanType::URI("spiffe://example.org/billing".try_into().unwrap()));
        p.subject_alt_names
            .push(SanType::IpAddress("10.0.0.7".parse().unwrap()));
        p.subject_alt_names
            .push(SanType::Rfc822Name("ops@example.org".try_into().unwrap()));
        let cert = p.self_signed(&key).unwrap();
        (cert.der().to_vec(), key)
    }

    #[test]
    fn reads_subject_sans_validity_and_key() {
        let (der, key) = make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = ClientCert::parse(&der).unwrap();
        assert_eq!(c.subject.to_rfc4514(), r"CN=billing-svc,O=Example\, Corp,C=DE");
        assert_eq!(
            c.subject,
            DistinguishedName::parse(r"CN=billing-svc, O=Example\2C Corp, C=DE").unwrap()
        );
        assert_eq!(c.san_dns, vec!["svc.example"]);
        assert_eq!(c.san_uri, vec!["spiffe://example.org/billing"]);
        assert_eq!(c.san_email, vec!["ops@example.org"]);
        assert_eq!(c.san_ip, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.x5t_s256, cert_thumbprint(&der));
        assert!(c.not_before < c.not_after);
        // The JWK is the certificate's key: same point as the key pair's SPKI.
        let jwk = c.public_key.unwrap();
        assert_eq!(jwk.crv(), Some("P-256"));
        let raw = key.public_key_raw();
        assert_eq!(raw[0], 4);
        assert_eq!(jwk.x().unwrap(), b64::encode(&raw[1..33]));
        assert_eq!(jwk.y().unwrap(), b64::encode(&raw[33..]));
        // Trailing bytes after the certificate are refused.
        let mut long = der.clone();
        long.push(0);
        assert!(ClientCert::parse(&long).is_err());
    }

    #[test]
    fn ed25519_and_rsa_keys_become_jwks() {
        let (der, key) = make(&rcgen::PKCS_ED25519);
        let jwk = ClientCert::parse(&der).unwrap().public_key.unwrap();
        assert_eq!(jwk.crv(), Some("Ed25519"));
        assert_eq!(jwk.x().unwrap(), b64::encode(key.public_key_raw()));
        let (der, _) = make(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            ClientCert::parse(&der).unwrap().public_key.unwrap().crv(),
            Some("P-384")
        );
    }
}
