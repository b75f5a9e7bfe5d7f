//! Finding keys, client secrets and admin tokens in a byte buffer (token boundaries, checksums,
//! shapes).

use super::*;

/// What kind of credential a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A secret key, `<prefix>_<env>_...`: belongs on servers only.
    Secret,
    /// A publishable key, `<prefix>_pk_<env>_...` (issue 11): safe in a web page by design,
    /// reported as information, fails a run only with `--fail-on-publishable`.
    Publishable,
    /// An OAuth client secret, `<prefix>cs_<43 base62>`: belongs on servers only.
    ClientSecret,
    /// A scoped admin token, `kwadm_<43 base62>` (whatever the key prefix): it manages keys.
    AdminToken,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
            KeyKind::ClientSecret => "client_secret",
            KeyKind::AdminToken => "admin_token",
        }
    }

    /// Not an API key: the key service cannot tell its state, so it is not checked.
    pub(super) fn is_key(self) -> bool {
        matches!(self, KeyKind::Secret | KeyKind::Publishable)
    }
}

/// One key found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Byte offset of the key's first byte.
    pub offset: usize,
    /// Length of the key in bytes.
    pub len: usize,
    pub kind: KeyKind,
}

/// Length of the random part of a client secret (`keyward-engine`'s `new_client_secret`).
pub(super) const CLIENT_SECRET_LEN: usize = 43;
/// Client secrets and admin tokens have no checksum: a run of 43 base62 symbols drawn at random
/// holds about 31 distinct symbols; fewer than this many marks a placeholder (`kwcs_xxxx…`),
/// not a secret.
pub(super) const CLIENT_SECRET_MIN_DISTINCT: usize = 16;

/// Finds keys of one format in byte buffers.
pub struct Matcher {
    format: KeyFormat,
    finder: memmem::Finder<'static>,
    cs_finder: memmem::Finder<'static>,
    adm_finder: memmem::Finder<'static>,
    prefix_len: usize,
    key_len: usize,
}

pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

pub(super) fn all_hex(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_hexdigit)
}

impl Matcher {
    pub fn new(format: KeyFormat) -> Matcher {
        let needle = format!("{}_", format.prefix());
        let finder = memmem::Finder::new(needle.as_bytes()).into_owned();
        let cs_needle = format!("{}cs_", format.prefix());
        let cs_finder = memmem::Finder::new(cs_needle.as_bytes()).into_owned();
        Matcher {
            adm_finder: memmem::Finder::new(ADMIN_TOKEN_PREFIX.as_bytes()).into_owned(),
            prefix_len: format.prefix().len(),
            key_len: format.key_len(),
            finder,
            cs_finder,
            format,
        }
    }

    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// Every key in `hay` as it stands (no escape decoded), in order.
    pub fn find_all(&self, hay: &[u8]) -> Vec<Match> {
        let mut out: Vec<Match> = self
            .finder
            .find_iter(hay)
            .filter_map(|i| self.candidate_at(hay, i))
            .collect();
        let before = out.len();
        let cs_len = self.prefix_len + 3;
        out.extend(
            self.cs_finder
                .find_iter(hay)
                .filter_map(|i| random_token_at(hay, i, cs_len, CLIENT_SECRET_LEN, KeyKind::ClientSecret)),
        );
        out.extend(self.adm_finder.find_iter(hay).filter_map(|i| {
            random_token_at(
                hay,
                i,
                ADMIN_TOKEN_PREFIX.len(),
                ADMIN_TOKEN_RANDOM,
                KeyKind::AdminToken,
            )
        }));
        if out.len() > before {
            out.sort_by_key(|m| m.offset);
        }
        out
    }

    pub(super) fn candidate_at(&self, hay: &[u8], i: usize) -> Option<Match> {
        if !boundary_before(hay, i) {
            return None;
        }
        let rest = hay.get(i + self.prefix_len + 1..)?;
        let (kind, len) = if rest.starts_with(b"live_") || rest.starts_with(b"test_") {
            (KeyKind::Secret, self.key_len)
        } else if rest.starts_with(b"pk_live_") || rest.starts_with(b"pk_test_") {
            (KeyKind::Publishable, self.key_len + 3)
        } else {
            return None;
        };
        let end = i + len;
        let candidate = hay.get(i..end)?;
        if hay.get(end).is_some_and(|&b| is_word(b)) {
            return None;
        }
        // The key format's own parser: length, prefix, kind marker, alphabet and checksum.
        let parsed = std::str::from_utf8(candidate)
            .ok()
            .and_then(|c| self.format.parse(c).ok());
        let ok = matches!(
            (kind, parsed.map(|p| p.kind)),
            (KeyKind::Secret, Some(keyward_core::KeyKind::Secret))
                | (KeyKind::Publishable, Some(keyward_core::KeyKind::Publishable))
        );
        ok.then_some(Match { offset: i, len, kind })
    }
}

/// A client secret or an admin token at `i`: `needle_len` bytes of prefix, then `random_len`
/// base62 symbols that look random, on word boundaries.
pub(super) fn random_token_at(
    hay: &[u8],
    i: usize,
    needle_len: usize,
    random_len: usize,
    kind: KeyKind,
) -> Option<Match> {
    if !boundary_before(hay, i) {
        return None;
    }
    let len = needle_len + random_len;
    let body = hay.get(i + needle_len..i + len)?;
    if hay.get(i + len).is_some_and(|&b| is_word(b)) || !body.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let mut seen = [false; 128];
    let mut distinct = 0;
    for &b in body {
        if !std::mem::replace(&mut seen[usize::from(b & 0x7f)], true) {
            distinct += 1;
        }
    }
    (distinct >= CLIENT_SECRET_MIN_DISTINCT).then_some(Match { offset: i, len, kind })
}

/// Whether a key may start at `i`: at the start, after a non-word byte, or right after an
/// escape sequence (`\n`, `\u0022`, `\x22`, `%22`), as found in JSON strings and source maps.
pub(super) fn boundary_before(hay: &[u8], i: usize) -> bool {
    let Some(&b) = i.checked_sub(1).and_then(|j| hay.get(j)) else {
        return true;
    };
    if !is_word(b) {
        return true;
    }
    let before = &hay[..i];
    let n = before.len();
    // `\n`, `\t`, `\r` ... (one escaped character)
    (n >= 2 && before[n - 2] == b'\\')
        // `\u0022`
        || (n >= 6 && &before[n - 6..n - 4] == b"\\u" && all_hex(&before[n - 4..]))
        // `\x22`
        || (n >= 4 && &before[n - 4..n - 2] == b"\\x" && all_hex(&before[n - 2..]))
        // `%22` (URL encoding)
        || (n >= 3 && before[n - 3] == b'%' && all_hex(&before[n - 2..]))
}

// ---------------------------------------------------------------------------------------------
