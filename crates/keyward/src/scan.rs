//! `keyward scan PATH...`: finds keyward keys in files (sources, minified bundles, source maps)
//! and, with admin access, asks the key service what each one is (issue 4 point 8, issue 11
//! point 5). See docs/SCANNING.md.
//!
//! - The walk honours `.gitignore`, `.ignore` and hidden-file rules like ripgrep (the `ignore`
//!   crate), also outside a Git checkout; binary files (a NUL byte in the first 8 KiB) and files
//!   over the size cap are skipped.
//! - A finding is a string that parses as a key with a valid CRC32 checksum (secret and
//!   publishable keys) or has the shape of a client secret, on token boundaries (the bytes
//!   around it are not `[A-Za-z0-9_]`), where an escape such as `\n`, `\u0022`, `\x22` or `%22`
//!   right before a key counts as a boundary (JSON strings, source maps).
//! - Escapes that stand for word characters (`\u005f`, `\u{5f}`, `\x5f`, `%5F`, also behind more
//!   backslashes) are decoded first, in one linear pass that records only the escapes it decoded,
//!   so positions are reported in the file as written.
//! - The strings of a `sourcesContent` array (source maps, also inline base64 ones in a
//!   `sourceMappingURL=data:` comment) are JSON-decoded and scanned as the source text they are:
//!   findings carry `sources[i]` and the line and column in that source.
//! - Publishable keys are information (they are meant for client code); secret keys and client
//!   secrets fail the run. Only masked hints are printed, never a key.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use keyward_core::key::display_hint;
use keyward_core::secret::SecretString;
use keyward_core::KeyFormat;
use keyward_engine::admin_tokens::{ADMIN_TOKEN_PREFIX, ADMIN_TOKEN_RANDOM};
use memchr::memmem;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Cli;
use crate::client::{seg, AdminClient};
use crate::config::Config;
use crate::error::{CliError, Result};

/// Default size cap, in MiB.
pub const DEFAULT_MAX_SIZE_MIB: u64 = 10;
/// A NUL byte within this many leading bytes marks a file as binary.
const BINARY_PROBE: usize = 8 * 1024;
/// Keys per `POST /v1/keys/check` call (the admin API's limit).
const CHECK_BATCH: usize = 1000;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively).
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Key prefix (default: `keys.prefix` from the configuration when one loads, else `kw`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Revoke every live (active or disabled) key found; the reason names the file and line.
    #[arg(long, conflicts_with = "offline")]
    pub revoke: bool,
    /// Do not ask the admin API, even when it is configured (every status is unknown-status).
    #[arg(long)]
    pub offline: bool,
    /// Also scan hidden files and directories (`.git` itself is always skipped).
    #[arg(long)]
    pub hidden: bool,
    /// Do not honour .gitignore, .ignore and Git exclude files.
    #[arg(long)]
    pub no_ignore: bool,
    /// Skip files larger than this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_SIZE_MIB)]
    pub max_size: u64,
    /// One JSON document with the findings on stdout.
    #[arg(long)]
    pub json: bool,
    /// Publishable keys fail the run too (by default they are information: they are meant to
    /// sit in client code).
    #[arg(long)]
    pub fail_on_publishable: bool,
}

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
    fn is_key(self) -> bool {
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
const CLIENT_SECRET_LEN: usize = 43;
/// Client secrets and admin tokens have no checksum: a run of 43 base62 symbols drawn at random
/// holds about 31 distinct symbols; fewer than this many marks a placeholder (`kwcs_xxxx…`),
/// not a secret.
const CLIENT_SECRET_MIN_DISTINCT: usize = 16;

/// Finds keys of one format in byte buffers.
pub struct Matcher {
    format: KeyFormat,
    finder: memmem::Finder<'static>,
    cs_finder: memmem::Finder<'static>,
    adm_finder: memmem::Finder<'static>,
    prefix_len: usize,
    key_len: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn all_hex(b: &[u8]) -> bool {
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

    fn candidate_at(&self, hay: &[u8], i: usize) -> Option<Match> {
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
fn random_token_at(hay: &[u8], i: usize, needle_len: usize, random_len: usize, kind: KeyKind) -> Option<Match> {
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
fn boundary_before(hay: &[u8], i: usize) -> bool {
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
// Layers: a buffer with escapes decoded, and the way back to the outer buffer's offsets.

/// One decoded escape: `inner_len` bytes at `inner` in the decoded buffer stand for
/// `outer_len` bytes at `outer` in the outer one.
#[derive(Debug, Clone, Copy)]
struct Span {
    inner: usize,
    inner_len: usize,
    outer: usize,
    outer_len: usize,
}

/// A decoded view of a buffer. Only decoded escapes are recorded (sparse), so the memory is
/// the decoded copy plus one `Span` per escape, both bounded by the input's size; without any
/// escape to decode the view borrows the input.
struct Layer<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    spans: Vec<Span>,
}

impl Layer<'_> {
    /// The offset in the outer buffer of the byte at `inner` (O(log escapes)).
    fn to_outer(&self, inner: usize) -> usize {
        let idx = self.spans.partition_point(|s| s.inner <= inner);
        let Some(s) = idx.checked_sub(1).and_then(|i| self.spans.get(i)) else {
            return inner;
        };
        if inner < s.inner + s.inner_len {
            s.outer
        } else {
            s.outer + s.outer_len + (inner - s.inner - s.inner_len)
        }
    }
}

fn hex_value(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !all_hex(b) {
        return None;
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

/// The escape at `hay[p..]` (`p` on the first of a run of backslashes, or on `%`) when it
/// stands for a word character: `\u005f`, `\u{5f}`, `\x5f`, `%5F`, after any number of
/// backslashes (`\\u005f` is the same escape inside a JSON string inside a JS string). Returns
/// the character and the escape's length; otherwise the number of bytes to copy unchanged.
fn word_escape_at(hay: &[u8], p: usize) -> std::result::Result<(u8, usize), usize> {
    let word = |v: u32| u8::try_from(v).ok().filter(|&b| is_word(b));
    if hay[p] == b'%' {
        return match hay.get(p + 1..p + 3).and_then(hex_value).and_then(word) {
            Some(b) => Ok((b, 3)),
            None => Err(1),
        };
    }
    let slashes = hay[p..].iter().take_while(|&&b| b == b'\\').count();
    let e = p + slashes;
    let decoded = match hay.get(e) {
        Some(b'x') => hay.get(e + 1..e + 3).and_then(hex_value).map(|v| (v, 3)),
        Some(b'u') if hay.get(e + 1) == Some(&b'{') => {
            let digits = hay
                .get(e + 2..)
                .map_or(0, |r| r.iter().take(7).take_while(|b| b.is_ascii_hexdigit()).count());
            (hay.get(e + 2 + digits) == Some(&b'}'))
                .then(|| hay.get(e + 2..e + 2 + digits).and_then(hex_value))
                .flatten()
                .map(|v| (v, digits + 3))
        }
        Some(b'u') => hay.get(e + 1..e + 5).and_then(hex_value).map(|v| (v, 5)),
        _ => None,
    };
    match decoded.and_then(|(v, n)| word(v).map(|b| (b, n))) {
        Some((b, n)) => Ok((b, slashes + n)),
        // Copy the whole run of backslashes, so that its last one is never read as the start
        // of an escape on its own.
        None => Err(slashes),
    }
}

/// Decodes the JavaScript (and URL) escapes that stand for word characters, so that
/// `kw\u005flive\x5f…` reads as a key. Escapes of other characters (`\"`, `\n`, `\u0022`) stay:
/// they are boundaries. Linear in the input.
fn js_unescape(hay: &[u8]) -> Layer<'_> {
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = memchr::memchr2(b'\\', b'%', hay.get(i..).unwrap_or_default()).map(|p| p + i) {
        match word_escape_at(hay, p) {
            Ok((b, n)) => {
                if spans.is_empty() {
                    out.reserve(hay.len());
                }
                out.extend_from_slice(&hay[copied..p]);
                spans.push(Span {
                    inner: out.len(),
                    inner_len: 1,
                    outer: p,
                    outer_len: n,
                });
                out.push(b);
                copied = p + n;
                i = copied;
            }
            Err(n) => i = p + n.max(1),
        }
    }
    if spans.is_empty() {
        return Layer {
            bytes: std::borrow::Cow::Borrowed(hay),
            spans,
        };
    }
    out.extend_from_slice(&hay[copied..]);
    Layer {
        bytes: std::borrow::Cow::Owned(out),
        spans,
    }
}

/// Decodes the contents of a JSON string literal (without its quotes). Malformed escapes are
/// kept as they are. Linear in the input.
fn json_unescape(raw: &[u8]) -> Layer<'_> {
    let mut out = Vec::with_capacity(raw.len());
    let mut spans = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', raw.get(i..).unwrap_or_default()).map(|p| p + i) {
        let unit = |at: usize| {
            (raw.get(at) == Some(&b'\\') && raw.get(at + 1) == Some(&b'u'))
                .then(|| raw.get(at + 2..at + 6).and_then(hex_value))
                .flatten()
        };
        let (ch, n): (Option<char>, usize) = match raw.get(p + 1) {
            Some(b'"') => (Some('"'), 2),
            Some(b'\\') => (Some('\\'), 2),
            Some(b'/') => (Some('/'), 2),
            Some(b'b') => (Some('\u{8}'), 2),
            Some(b'f') => (Some('\u{c}'), 2),
            Some(b'n') => (Some('\n'), 2),
            Some(b'r') => (Some('\r'), 2),
            Some(b't') => (Some('\t'), 2),
            Some(b'u') => match unit(p) {
                Some(hi @ 0xD800..=0xDBFF) => match unit(p + 6) {
                    Some(lo @ 0xDC00..=0xDFFF) => (char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)), 12),
                    _ => (Some(char::REPLACEMENT_CHARACTER), 6),
                },
                Some(v) => (Some(char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER)), 6),
                None => (None, 1),
            },
            _ => (None, 1),
        };
        match ch {
            Some(c) => {
                out.extend_from_slice(&raw[copied..p]);
                let mut buf = [0u8; 4];
                let s = c.encode_utf8(&mut buf);
                spans.push(Span {
                    inner: out.len(),
                    inner_len: s.len(),
                    outer: p,
                    outer_len: n,
                });
                out.extend_from_slice(s.as_bytes());
                copied = p + n;
                i = copied;
            }
            None => i = p + n,
        }
    }
    out.extend_from_slice(&raw[copied..]);
    Layer {
        bytes: std::borrow::Cow::Owned(out),
        spans,
    }
}

// ---------------------------------------------------------------------------------------------
// Source maps.

/// Where in an original source (a source map's `sources[i]` / `sourcesContent[i]`) a key is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePos {
    /// `sources[i]`, or `sourcesContent[i]` when the map does not name it.
    pub name: String,
    /// 1-based line inside the source.
    pub line: usize,
    /// 1-based byte column inside the source.
    pub column: usize,
}

/// One key found in a buffer, before it is located in a file.
struct Hit {
    /// Offset in the outermost buffer.
    offset: usize,
    kind: KeyKind,
    key: String,
    source: Option<SourcePos>,
}

fn skip_ws(hay: &[u8], mut i: usize) -> usize {
    while hay.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// End (the closing quote) of the JSON string whose contents start at `s`.
fn json_string_end(hay: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    loop {
        let p = memchr::memchr2(b'"', b'\\', hay.get(i..)?)? + i;
        if hay[p] == b'"' {
            return Some(p);
        }
        i = p + 2;
    }
}

/// The contents spans (start, end) of the elements of a JSON array; `None` for `null`.
type StringSpans = Vec<Option<(usize, usize)>>;

/// Every array of strings under `"<key>":` in a JSON document, in document order: for each
/// array, the raw contents span (without quotes) of each element that is a string. Parsing
/// stops at the first element that is not a string or `null`. Linear in the input.
fn json_string_arrays(hay: &[u8], key: &str) -> Vec<StringSpans> {
    let needle = format!("\"{key}\"");
    let finder = memmem::Finder::new(needle.as_bytes());
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = hay.get(from..).and_then(|h| finder.find(h)).map(|p| p + from) {
        from = at + needle.len();
        let mut i = skip_ws(hay, from);
        if hay.get(i) != Some(&b':') {
            continue;
        }
        i = skip_ws(hay, i + 1);
        if hay.get(i) != Some(&b'[') {
            continue;
        }
        let mut items = Vec::new();
        i += 1;
        loop {
            i = skip_ws(hay, i);
            match hay.get(i) {
                Some(b'"') => match json_string_end(hay, i + 1) {
                    Some(e) => {
                        items.push(Some((i + 1, e)));
                        i = e + 1;
                    }
                    None => break,
                },
                Some(b'n') if hay.get(i..i + 4) == Some(b"null") => {
                    items.push(None);
                    i += 4;
                }
                _ => break,
            }
            i = skip_ws(hay, i);
            if hay.get(i) == Some(&b',') {
                i += 1;
            } else {
                break;
            }
        }
        from = from.max(i);
        out.push(items);
    }
    out
}

/// Finds keys in a text buffer (source file, bundle, JSON), decoding the JS escapes of word
/// characters; offsets in `hay`.
fn scan_text(m: &Matcher, hay: &[u8]) -> Vec<Hit> {
    let layer = js_unescape(hay);
    m.find_all(&layer.bytes)
        .into_iter()
        .map(|h| Hit {
            offset: layer.to_outer(h.offset),
            kind: h.kind,
            // Keys are ASCII (checked by the matcher).
            key: String::from_utf8_lossy(&layer.bytes[h.offset..h.offset + h.len]).into_owned(),
            source: None,
        })
        .collect()
}

/// Finds keys in a buffer that may be (or hold) a source map: the keys inside the strings of a
/// `sourcesContent` array are found in the decoded source text and carry the source's name and
/// their line and column in it; everything else as in [`scan_text`].
fn scan_doc(m: &Matcher, hay: &[u8]) -> Vec<Hit> {
    let mut hits = scan_text(m, hay);
    if memmem::find(hay, b"\"sourcesContent\"").is_none() {
        return hits;
    }
    let names = json_string_arrays(hay, "sources");
    let contents = json_string_arrays(hay, "sourcesContent");
    let spans: Vec<(usize, usize)> = contents
        .iter()
        .flat_map(|items| items.iter().flatten().copied())
        .collect();
    // The keys inside sourcesContent strings are found again below, with their source.
    hits.retain(|h| {
        let i = spans.partition_point(|&(s, _)| s <= h.offset);
        !i.checked_sub(1)
            .and_then(|i| spans.get(i))
            .is_some_and(|&(s, e)| h.offset >= s && h.offset < e)
    });
    for (k, items) in contents.iter().enumerate() {
        // The n-th `sources` goes with the n-th `sourcesContent` (one map, or one per section
        // of an index map).
        let names = names.get(k).map(Vec::as_slice).unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let Some((s, e)) = *item else { continue };
            let text = json_unescape(&hay[s..e]);
            let found = scan_text(m, &text.bytes);
            if found.is_empty() {
                continue;
            }
            let name = names
                .get(i)
                .copied()
                .flatten()
                .and_then(|(ns, ne)| hay.get(ns.saturating_sub(1)..ne + 1))
                .and_then(|q| serde_json::from_slice::<String>(q).ok())
                .unwrap_or_else(|| format!("sourcesContent[{i}]"));
            let mut lines = Lines::new(&text.bytes);
            for mut h in found {
                let (line, column) = lines.at(h.offset);
                h.source = Some(SourcePos {
                    name: name.clone(),
                    line,
                    column,
                });
                h.offset = s + text.to_outer(h.offset);
                hits.push(h);
            }
        }
    }
    hits.sort_by_key(|h| h.offset);
    hits
}

/// The inline source maps of a file (`//# sourceMappingURL=data:application/json;base64,…`,
/// also in CSS comments): the offset of each data URL and its decoded JSON. Data URLs that are
/// not base64 are plain (percent-encoded) text, read by the ordinary scan.
fn inline_source_maps(hay: &[u8]) -> Vec<(usize, Vec<u8>)> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let needle = b"sourceMappingURL=data:";
    let mut out = Vec::new();
    for at in memmem::find_iter(hay, needle) {
        let url = at + needle.len();
        let Some(comma) = hay
            .get(url..)
            .and_then(|r| memchr::memchr(b',', &r[..r.len().min(200)]))
        else {
            continue;
        };
        let params = &hay[url..url + comma];
        if !params.ends_with(b";base64") || memchr::memchr(b'\n', params).is_some() {
            continue;
        }
        let start = url + comma + 1;
        let len = hay[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            .count();
        if let Ok(json) = engine.decode(&hay[start..start + len]) {
            out.push((at, json));
        }
    }
    out
}

/// Line and column of increasing offsets in one buffer, in linear time overall (a minified
/// bundle is one line of megabytes with many findings).
struct Lines<'a> {
    hay: &'a [u8],
    pos: usize,
    line: usize,
    line_start: usize,
}

impl<'a> Lines<'a> {
    fn new(hay: &'a [u8]) -> Lines<'a> {
        Lines {
            hay,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// 1-based line and 1-based byte column of `offset`.
    fn at(&mut self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.hay.len());
        if offset < self.pos {
            *self = Lines::new(self.hay);
        }
        let seg = &self.hay[self.pos..offset];
        if let Some(last) = memchr::memrchr(b'\n', seg) {
            self.line += memchr::memchr_iter(b'\n', seg).count();
            self.line_start = self.pos + last + 1;
        }
        self.pos = offset;
        (self.line, offset - self.line_start + 1)
    }
}

/// A key found in a file. The plaintext stays inside a [`SecretString`] and is only sent to the
/// admin API; everything printed uses the hint.
pub struct RawFinding {
    pub file: PathBuf,
    /// 1-based line in the file; for a key in an inline source map, that of the map's data URL.
    pub line: usize,
    /// 1-based byte column in the file (as `line`).
    pub column: usize,
    pub kind: KeyKind,
    pub key: SecretString,
    /// For a key inside a source map's `sourcesContent`: the original source and the position.
    pub source: Option<SourcePos>,
    /// The key is inside an inline (base64 data URL) source map.
    pub inline_source_map: bool,
}

/// Finds keys in one file's bytes and locates them.
pub fn scan_bytes(m: &Matcher, file: &Path, hay: &[u8]) -> Vec<RawFinding> {
    let mut hits: Vec<(Hit, bool)> = scan_doc(m, hay).into_iter().map(|h| (h, false)).collect();
    for (at, json) in inline_source_maps(hay) {
        hits.extend(scan_doc(m, &json).into_iter().map(|mut h| {
            h.offset = at;
            (h, true)
        }));
    }
    hits.sort_by_key(|(h, _)| h.offset);
    let mut lines = Lines::new(hay);
    hits.into_iter()
        .map(|(h, inline)| {
            let (line, column) = lines.at(h.offset);
            RawFinding {
                file: file.to_owned(),
                line,
                column,
                kind: h.kind,
                key: SecretString::new(h.key),
                source: h.source,
                inline_source_map: inline,
            }
        })
        .collect()
}

#[derive(Default)]
struct Stats {
    files: AtomicU64,
    bytes: AtomicU64,
    binary: AtomicU64,
    too_large: AtomicU64,
}

struct WalkOutcome {
    findings: Vec<RawFinding>,
    warnings: Vec<String>,
    files: u64,
    bytes: u64,
    binary: u64,
    too_large: u64,
}

enum FileResult {
    Scanned(u64, Vec<RawFinding>),
    Binary,
    TooLarge,
}

fn scan_file(m: &Matcher, path: &Path, cap: u64) -> std::io::Result<FileResult> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > cap {
        return Ok(FileResult::TooLarge);
    }
    let data = std::fs::read(path)?;
    if data.len() as u64 > cap {
        return Ok(FileResult::TooLarge);
    }
    if memchr::memchr(0, &data[..data.len().min(BINARY_PROBE)]).is_some() {
        return Ok(FileResult::Binary);
    }
    Ok(FileResult::Scanned(data.len() as u64, scan_bytes(m, path, &data)))
}

fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} scanning: {binary_bytes} ({binary_bytes_per_sec}) {wide_msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn walk(args: &ScanArgs, matcher: Arc<Matcher>) -> WalkOutcome {
    let cap = args.max_size.saturating_mul(1024 * 1024);
    let (first, rest) = args
        .paths
        .split_first()
        .map_or((Path::new("."), &[][..]), |(f, r)| (f.as_path(), r));
    let mut builder = ignore::WalkBuilder::new(first);
    for p in rest {
        builder.add(p);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    builder
        .hidden(!args.hidden)
        .ignore(!args.no_ignore)
        .git_ignore(!args.no_ignore)
        .git_exclude(!args.no_ignore)
        .git_global(!args.no_ignore)
        .parents(!args.no_ignore)
        // Honour .gitignore files also outside a Git checkout (a release tarball, a CI artefact).
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .threads(threads);
    let findings = Mutex::new(Vec::new());
    let warnings = Mutex::new(Vec::new());
    let stats = Stats::default();
    let pb = progress_bar();
    builder.build_parallel().run(|| {
        let (matcher, findings, warnings, stats, pb) = (matcher.clone(), &findings, &warnings, &stats, pb.clone());
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    if let Ok(mut w) = warnings.lock() {
                        w.push(e.to_string());
                    }
                    return ignore::WalkState::Continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let path = entry.path();
            match scan_file(&matcher, path, cap) {
                Ok(FileResult::Scanned(n, found)) => {
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(n, Ordering::Relaxed);
                    pb.inc(n);
                    if !pb.is_hidden() {
                        pb.set_message(path.display().to_string());
                    }
                    if !found.is_empty() {
                        if let Ok(mut f) = findings.lock() {
                            f.extend(found);
                        }
                    }
                }
                Ok(FileResult::Binary) => {
                    stats.binary.fetch_add(1, Ordering::Relaxed);
                }
                Ok(FileResult::TooLarge) => {
                    stats.too_large.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut w) = warnings.lock() {
                        w.push(format!("{}: skipped, larger than {} MiB", path.display(), cap >> 20));
                    }
                }
                Err(e) => {
                    if let Ok(mut w) = warnings.lock() {
                        w.push(format!("{}: {e}", path.display()));
                    }
                }
            }
            ignore::WalkState::Continue
        })
    });
    pb.finish_and_clear();
    let mut findings = findings.into_inner().unwrap_or_default();
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    let mut warnings = warnings.into_inner().unwrap_or_default();
    warnings.sort();
    WalkOutcome {
        findings,
        warnings,
        files: stats.files.into_inner(),
        bytes: stats.bytes.into_inner(),
        binary: stats.binary.into_inner(),
        too_large: stats.too_large.into_inner(),
    }
}

/// What the key service says about one finding.
#[derive(Debug, Clone, Default)]
struct Verdict {
    status: String,
    id: Option<String>,
}

const UNKNOWN_STATUS: &str = "unknown-status";

/// Whether a finding fails the run: anything that may still work (active, disabled), that
/// nobody could vouch for (unknown-status, unknown to this deployment, malformed to it), and
/// every client secret (the key service cannot tell their state). Revoked, expired and canary
/// keys do not, nor do publishable keys unless `fail_on_publishable`.
fn fails_run(kind: KeyKind, status: &str, fail_on_publishable: bool) -> bool {
    let dead = matches!(status, "revoked" | "expired" | "canary");
    match kind {
        KeyKind::Secret => !dead,
        KeyKind::ClientSecret | KeyKind::AdminToken => true,
        KeyKind::Publishable => fail_on_publishable && !dead,
    }
}

/// What a finding's kind means for whoever reads the report.
fn note(kind: KeyKind) -> Option<&'static str> {
    match kind {
        KeyKind::Secret => None,
        KeyKind::Publishable => Some("publishable key: fine in client code"),
        KeyKind::ClientSecret => {
            Some("OAuth client secret: rotate it (keyward client rotate-secret) and keep it on servers")
        }
        KeyKind::AdminToken => Some(
            "keyward admin token: revoke it (keyward admin-token revoke) and issue a new one; it manages your keys",
        ),
    }
}

fn is_live(status: &str) -> bool {
    matches!(status, "active" | "disabled")
}

/// Asks `POST /v1/keys/check` about each distinct key, in batches.
async fn check(client: &AdminClient, keys: &[&str]) -> Result<Vec<Verdict>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(CHECK_BATCH) {
        let v = client
            .call(Method::POST, "/v1/keys/check", Some(json!({ "keys": batch })))
            .await?;
        let mut verdicts = vec![
            Verdict {
                status: UNKNOWN_STATUS.into(),
                id: None
            };
            batch.len()
        ];
        for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
            let idx = item
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok());
            if let Some(slot) = idx.and_then(|i| verdicts.get_mut(i)) {
                slot.status = item
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or(UNKNOWN_STATUS)
                    .to_owned();
                slot.id = item.get("id").and_then(Value::as_str).map(str::to_owned);
            }
        }
        out.extend(verdicts);
    }
    Ok(out)
}

fn key_format(cli: &Cli, args: &ScanArgs) -> Result<KeyFormat> {
    let usage = |e: keyward_core::CoreError| CliError::Usage(format!("--prefix: {e}"));
    if let Some(p) = &args.prefix {
        return KeyFormat::new(p).map_err(usage);
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("keyward.toml");
        p.exists().then_some(p)
    });
    Ok(Config::load(path.as_deref(), &env)
        .ok()
        .and_then(|c| c.key_format().ok())
        .unwrap_or_default())
}

#[derive(Serialize)]
struct FindingOut {
    file: String,
    line: usize,
    column: usize,
    hint: String,
    kind: KeyKind,
    /// `error` when the finding fails the run, `info` otherwise.
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
    status: String,
    id: Option<String>,
    /// Inside a source map's `sourcesContent`: the original source and the position in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourcePos>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inline_source_map: bool,
    /// Set when this run revoked the key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    revoked_now: bool,
}

/// `keyward scan`.
pub async fn run(cli: &Cli, args: &ScanArgs) -> Result<()> {
    for p in &args.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(CliError::Usage(format!("{}: no such file or directory", p.display())));
        }
    }
    if args.max_size == 0 {
        return Err(CliError::Usage("--max-size must be at least 1 (MiB)".into()));
    }
    let matcher = Arc::new(key_format(cli, args).map(Matcher::new)?);
    // Admin access: flags, environment or configuration, like the management commands.
    let client = if args.offline {
        None
    } else {
        match crate::commands::admin_client(cli) {
            Ok(c) => Some(c),
            Err(e) if args.revoke => {
                return Err(CliError::Usage(format!("--revoke needs admin access: {e}")));
            }
            Err(_) => None,
        }
    };

    let walk_args = ScanArgs {
        paths: args.paths.clone(),
        prefix: None,
        revoke: false,
        offline: true,
        hidden: args.hidden,
        no_ignore: args.no_ignore,
        max_size: args.max_size,
        json: false,
        fail_on_publishable: false,
    };
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || walk(&walk_args, matcher))
        .await
        .map_err(|e| CliError::Io(format!("scan: {e}")))?;
    let elapsed = started.elapsed();

    // One status per distinct key.
    let mut distinct: Vec<&str> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    // Client secrets and admin tokens are not keys: the key service cannot tell anything about them.
    for f in outcome.findings.iter().filter(|f| f.kind.is_key()) {
        let k = f.key.expose();
        if !index_of.contains_key(k) {
            index_of.insert(k, distinct.len());
            distinct.push(k);
        }
    }
    let mut verdicts = vec![
        Verdict {
            status: UNKNOWN_STATUS.into(),
            id: None
        };
        distinct.len()
    ];
    let mut notes = Vec::new();
    match &client {
        Some(c) if !distinct.is_empty() => match check(c, &distinct).await {
            Ok(v) => verdicts = v,
            Err(e) if args.revoke => return Err(e),
            Err(e) => notes.push(format!(
                "cannot check the keys with the admin API ({e}); status unknown-status"
            )),
        },
        None if !distinct.is_empty() => {
            notes.push("no admin access (KEYWARD_ADMIN_TOKEN or a configuration): status unknown-status".into())
        }
        _ => {}
    }

    // Revoke live keys, once each, naming the first place each was found.
    let mut revoked_now = vec![false; distinct.len()];
    if let (true, Some(c)) = (args.revoke, &client) {
        // Publishable keys are public by design: never revoked for being found.
        for f in outcome.findings.iter().filter(|f| f.kind == KeyKind::Secret) {
            let Some(&i) = index_of.get(f.key.expose()) else {
                continue;
            };
            let Some(v) = verdicts.get(i) else { continue };
            if revoked_now[i] || !is_live(&v.status) {
                continue;
            }
            let Some(id) = &v.id else { continue };
            let reason = format!("found by keyward scan in {}:{}", f.file.display(), f.line);
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/revoke", seg(id)),
                Some(json!({ "reason": reason })),
            )
            .await?;
            revoked_now[i] = true;
            if !args.json {
                eprintln!("revoked {id} ({}), {reason}", display_hint(f.key.expose()));
            }
        }
    }

    let out: Vec<FindingOut> = outcome
        .findings
        .iter()
        .map(|f| {
            let i = index_of.get(f.key.expose()).copied();
            let v = i.and_then(|i| verdicts.get(i)).cloned().unwrap_or_else(|| Verdict {
                status: UNKNOWN_STATUS.into(),
                id: None,
            });
            let fails = fails_run(f.kind, &v.status, args.fail_on_publishable);
            FindingOut {
                file: f.file.display().to_string(),
                line: f.line,
                column: f.column,
                hint: display_hint(f.key.expose()),
                kind: f.kind,
                severity: if fails { "error" } else { "info" },
                note: note(f.kind),
                status: v.status,
                id: v.id,
                source: f.source.clone(),
                inline_source_map: f.inline_source_map,
                revoked_now: i.and_then(|i| revoked_now.get(i)).copied().unwrap_or(false),
            }
        })
        .collect();
    let failing = out.iter().filter(|f| f.severity == "error").count();

    if args.json {
        let doc = json!({
            "findings": out,
            "failing": failing,
            "files_scanned": outcome.files,
            "bytes_scanned": outcome.bytes,
            "skipped": {"binary": outcome.binary, "too_large": outcome.too_large},
            "warnings": outcome.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for f in &out {
            let mut what = f.status.clone();
            if let Some(id) = &f.id {
                what.push_str(&format!(", {id}"));
            }
            if f.revoked_now {
                what.push_str(", revoked now");
            }
            if let Some(n) = f.note {
                what.push_str(&format!("; {n}"));
            }
            let mut place = String::new();
            if let Some(s) = &f.source {
                place.push_str(&format!(" in {}:{}:{}", s.name, s.line, s.column));
            }
            if f.inline_source_map {
                place.push_str(" (inline source map)");
            }
            println!(
                "{}:{}:{}: {}: {} ({what}){place}",
                f.file, f.line, f.column, f.severity, f.hint
            );
        }
        for w in &outcome.warnings {
            eprintln!("warning: {w}");
        }
        for n in &notes {
            eprintln!("note: {n}");
        }
        eprintln!(
            "keyward scan: {} files ({}) in {:.2?}, skipped {} binary and {} over {} MiB; {} findings, {} failing",
            outcome.files,
            indicatif::HumanBytes(outcome.bytes),
            elapsed,
            outcome.binary,
            outcome.too_large,
            args.max_size,
            out.len(),
            failing
        );
    }
    if failing > 0 {
        return Err(CliError::Io(format!(
            "{failing} finding(s) may be live keys: revoke them (keyward key revoke, or scan --revoke) \
             and remove them from the files"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keyward_core::key::{KeyEnv, CHECKSUM_LEN, RANDOM_LEN};

    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=";

    /// SplitMix64: seeded, fast even unoptimised.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn fill(&mut self, out: &mut Vec<u8>, alphabet: &[u8], n: usize) {
            let mut bits = 0u64;
            let mut left = 0;
            for _ in 0..n {
                if left == 0 {
                    bits = self.next();
                    left = 8;
                }
                out.push(alphabet[(bits & 0xff) as usize % alphabet.len()]);
                bits >>= 8;
                left -= 1;
            }
        }
    }

    fn key() -> String {
        KeyFormat::default().generate(KeyEnv::Live).unwrap().expose().to_owned()
    }

    fn found(hay: &str) -> Vec<String> {
        let m = Matcher::new(KeyFormat::default());
        m.find_all(hay.as_bytes())
            .into_iter()
            .map(|x| hay[x.offset..x.offset + x.len].to_owned())
            .collect()
    }

    #[test]
    fn finds_keys_in_minified_js_json_and_source_maps() {
        let k = key();
        let contexts = [
            k.clone(),
            format!("var a=\"{k}\",b=1;"),
            format!("{{\"apiKey\":\"{k}\"}}"),
            format!("headers:{{'x-api-key':'{k}'}}"),
            format!("\"sourcesContent\":[\"const k = 1;\\n{k}\\nmore\"]"),
            format!("\"const KEY = \\u0022{k}\\u0022;\""),
            format!("s=\"\\x22{k}\\x22\""),
            format!("https://x.test/?key=%22{k}%22&a=1"),
            format!("KEY={k}\n"),
            format!("`${{a}}{k}`"),
        ];
        for c in &contexts {
            assert_eq!(found(c), vec![k.clone()], "{c}");
        }
        let test_key = KeyFormat::default().generate(KeyEnv::Test).unwrap().expose().to_owned();
        assert_eq!(found(&format!("{k} {test_key}")), vec![k.clone(), test_key]);
    }

    #[test]
    fn refuses_near_misses() {
        let k = key();
        let mut flipped = k.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        for c in [
            format!("x{k}"),
            format!("_{k}"),
            format!("{k}x"),
            format!("{k}_"),
            k[..k.len() - 1].to_owned(),
            flipped,
            k.replacen("kw_", "kx_", 1),
            k.replacen("_live_", "_prod_", 1),
            k.replacen("_live_", "_pk_live_", 1),
        ] {
            assert!(found(&c).is_empty(), "{c}");
        }
    }

    #[test]
    fn other_prefixes() {
        let f = KeyFormat::new("acme").unwrap();
        let k = f.generate(KeyEnv::Live).unwrap();
        let m = Matcher::new(f);
        assert_eq!(m.find_all(format!("'{}'", k.expose()).as_bytes()).len(), 1);
        // The default format does not report another deployment's keys.
        assert!(found(k.expose()).is_empty());
    }

    #[test]
    fn locates_line_and_column() {
        let k = key();
        let text = format!("one\ntwo {k}\n\nx=\"{k}\"");
        let m = Matcher::new(KeyFormat::default());
        let f = scan_bytes(&m, Path::new("a.js"), text.as_bytes());
        let at: Vec<(usize, usize)> = f.iter().map(|f| (f.line, f.column)).collect();
        assert_eq!(at, vec![(2, 5), (4, 4)]);
        assert_eq!(
            format!("{:?}", f[0].key),
            format!("{:?}", SecretString::new(String::new()))
        );
    }

    /// Issue 4 point 8: no false positive on a million random high-entropy strings, half of
    /// them of the exact shape of a key (prefix, environment, 49 base62 symbols; only the
    /// checksum tells them apart), half random base62/base64 blobs with key-like prefixes mixed in.
    #[test]
    fn no_false_positives_on_a_million_random_strings() {
        let m = Matcher::new(KeyFormat::default());
        let mut rng = Rng(0x6b65_7977_6172_6421);
        let mut buf = Vec::with_capacity(256);
        let mut hits = 0usize;
        let started = std::time::Instant::now();
        for i in 0..1_000_000u32 {
            buf.clear();
            match i % 4 {
                0 | 1 => {
                    buf.extend_from_slice(if i % 8 < 4 { b"kw_live_" } else { b"kw_test_" });
                    rng.fill(&mut buf, B62, RANDOM_LEN + CHECKSUM_LEN);
                }
                2 => {
                    let n = 40 + (rng.next() % 120) as usize;
                    rng.fill(&mut buf, B62, n);
                }
                _ => {
                    rng.fill(&mut buf, B64, 20);
                    buf.extend_from_slice(b"\"kw_live_");
                    rng.fill(&mut buf, B64, 60);
                }
            }
            hits += m.find_all(&buf).len();
        }
        assert_eq!(hits, 0);
        // Sanity: the same loop does find a real key.
        assert_eq!(m.find_all(key().as_bytes()).len(), 1);
        eprintln!("1,000,000 random strings in {:?}", started.elapsed());
    }

    #[test]
    fn exit_rules() {
        for s in ["active", "disabled", "unknown", "malformed", UNKNOWN_STATUS] {
            assert!(fails_run(KeyKind::Secret, s, false), "{s}");
            assert!(fails_run(KeyKind::ClientSecret, s, false), "{s}");
            assert!(fails_run(KeyKind::AdminToken, s, false), "{s}");
            assert!(!fails_run(KeyKind::Publishable, s, false), "{s}");
            assert!(fails_run(KeyKind::Publishable, s, true), "{s}");
        }
        for s in ["revoked", "expired", "canary"] {
            assert!(!fails_run(KeyKind::Secret, s, false), "{s}");
            assert!(!fails_run(KeyKind::Publishable, s, true), "{s}");
        }
    }

    /// A publishable key `<prefix>_pk_<env>_<random><crc>` with the body of [`key`].
    fn publishable(env: &str) -> String {
        let body = &key()[8..8 + RANDOM_LEN];
        let env = if env == "live" { KeyEnv::Live } else { KeyEnv::Test };
        KeyFormat::default()
            .assemble_kind(keyward_core::KeyKind::Publishable, env, body)
            .expose()
            .to_owned()
    }

    fn hits(hay: &str) -> Vec<(usize, KeyKind, String, Option<SourcePos>, bool)> {
        let m = Matcher::new(KeyFormat::default());
        scan_bytes(&m, Path::new("a.js"), hay.as_bytes())
            .into_iter()
            .map(|f| (f.line, f.kind, f.key.expose().to_owned(), f.source, f.inline_source_map))
            .collect()
    }

    #[test]
    fn publishable_keys_have_their_kind_and_a_checksum() {
        for env in ["live", "test"] {
            let pk = publishable(env);
            let m = Matcher::new(KeyFormat::default());
            let got = m.find_all(format!("const k='{pk}';").as_bytes());
            assert_eq!(got.len(), 1, "{pk}");
            assert_eq!(got[0].kind, KeyKind::Publishable);
            assert_eq!(got[0].len, pk.len());
            let mut bad = pk.clone().into_bytes();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'a' { b'b' } else { b'a' };
            assert!(m.find_all(&bad).is_empty());
            assert!(m.find_all(format!("{pk}x").as_bytes()).is_empty());
            // A secret key with `pk_` inserted is not a publishable key (the checksum covers it).
            assert!(found(&key().replacen("_live_", "_pk_live_", 1)).is_empty());
        }
    }

    #[test]
    fn client_secrets_by_shape_placeholders_refused() {
        let body = &key()[8..8 + RANDOM_LEN];
        let cs = format!("kwcs_{body}");
        let got = hits(&format!("secret:\"{cs}\""));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].1, got[0].2.as_str()), (KeyKind::ClientSecret, cs.as_str()));
        for near in [
            format!("kwcs_{}", "x".repeat(43)),
            format!("kwcs_{}", "abc123".repeat(8)[..43].to_owned()),
            format!("{cs}x"),
            format!("a{cs}"),
            cs[..cs.len() - 1].to_owned(),
        ] {
            assert!(hits(&near).is_empty(), "{near}");
        }
    }

    #[test]
    fn admin_tokens_by_shape_whatever_the_key_prefix() {
        let body = &key()[8..8 + RANDOM_LEN];
        let adm = format!("{ADMIN_TOKEN_PREFIX}{body}");
        let got = hits(&format!(
            "export KEYWARD_ADMIN_TOKEN={adm}\nAuthorization: Bearer {adm}\n"
        ));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|g| g.1 == KeyKind::AdminToken && g.2 == adm));
        assert_eq!((got[0].0, got[1].0), (1, 2));
        // Another key prefix changes nothing: admin tokens always start with `kwadm_`.
        let m = Matcher::new(KeyFormat::new("acme").unwrap());
        assert_eq!(m.find_all(adm.as_bytes()).len(), 1);
        // JSON-escaped, as in a bundle.
        assert_eq!(hits(&format!("\"t\":\"\\u0022{adm}\\u0022\"")).len(), 1);
        for near in [
            format!("{ADMIN_TOKEN_PREFIX}{}", "x".repeat(43)),
            format!("{adm}x"),
            format!("a{adm}"),
            adm[..adm.len() - 1].to_owned(),
            adm.replacen('_', "-", 1),
        ] {
            assert!(hits(&near).is_empty(), "{near}");
        }
        assert!(note(KeyKind::AdminToken).is_some() && !KeyKind::AdminToken.is_key());
    }

    #[test]
    fn escaped_keys_in_js_strings() {
        let k = key();
        let esc = |sep: &str| k.replace('_', sep);
        for c in [
            format!("var a=\"{}\";", esc("\\u005f")),
            format!("var a='{}';", esc("\\x5f")),
            format!("var a=`{}`;", esc("\\u{5f}")),
            format!("var a=\"{}\";", esc("\\u005F")),
            format!("fetch('/x?k={}')", esc("%5F")),
            // JSON inside a JS string: the escape is escaped again.
            format!("JSON.parse(\"{{\\\"k\\\":\\\"{}\\\"}}\")", esc("\\\\u005f")),
            format!("JSON.parse(\"{{\\\"k\\\":\\\"{k}\\\"}}\")"),
            // Every character escaped.
            format!("\"{}\"", k.bytes().map(|b| format!("\\x{b:02x}")).collect::<String>()),
        ] {
            let got = hits(&c);
            assert_eq!(got.len(), 1, "{c}");
            assert_eq!(got[0].2, k, "{c}");
        }
        // Not a boundary: a word character before, escaped or not.
        assert!(hits(&format!("\"\\x41{k}\"")).is_empty());
        assert!(hits(&format!("\"{k}\\u0041\"")).is_empty());
        // Escapes of other characters are left alone.
        assert!(hits(&format!("\"{}\"", esc("\\u0020"))).is_empty());
    }

    #[test]
    fn positions_are_in_the_file_as_written() {
        let k = key();
        let text = format!("one\n  x=\"{}\";y=\"{k}\"\n", k.replace('_', "\\u005f"));
        let m = Matcher::new(KeyFormat::default());
        let f = scan_bytes(&m, Path::new("a.js"), text.as_bytes());
        let at: Vec<(usize, usize)> = f.iter().map(|f| (f.line, f.column)).collect();
        let second = 5 + (k.len() + 2 * 5) + 5;
        assert_eq!(at, vec![(2, 6), (2, second + 1)], "{text}");
    }

    #[test]
    fn layers_map_back_to_outer_offsets() {
        let raw = br#"ab\n\u00e9c\"d"#;
        let l = json_unescape(raw);
        assert_eq!(&*l.bytes, "ab\né c\"d".replace(' ', "").as_bytes());
        // a b \n é(2 bytes) c " d
        let outer: Vec<usize> = (0..l.bytes.len()).map(|i| l.to_outer(i)).collect();
        assert_eq!(outer, vec![0, 1, 2, 4, 4, 10, 11, 13]);
        let l = js_unescape(br"x\x41y\\\u0042z");
        assert_eq!(&*l.bytes, b"xAyBz");
        let outer: Vec<usize> = (0..l.bytes.len()).map(|i| l.to_outer(i)).collect();
        assert_eq!(outer, vec![0, 1, 5, 6, 14]);
        assert!(matches!(
            js_unescape(b"no escapes %zz \\n").bytes,
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn source_map(sources: &[&str], contents: &[&str]) -> String {
        json!({"version": 3, "file": "app.min.js", "sources": sources,
               "sourcesContent": contents, "names": [], "mappings": "AAAA"})
        .to_string()
    }

    #[test]
    fn source_maps_name_the_source_and_the_line_in_it() {
        let k = key();
        let pk = publishable("live");
        let a = format!("// app\nconst KEY = \"{k}\";\n");
        let b = format!(
            "export const pk = '{pk}';\n\n\nconst s = \"{}\";\n",
            k.replace('_', "\\u005f")
        );
        let map = source_map(&["webpack:///src/a.js", "webpack:///src/b.js"], &[&a, &b]);
        let got = hits(&map);
        type Summary = (KeyKind, Option<(String, usize, usize)>);
        let summary: Vec<Summary> = got
            .iter()
            .map(|h| (h.1, h.3.clone().map(|s| (s.name, s.line, s.column))))
            .collect();
        assert_eq!(
            summary,
            vec![
                (KeyKind::Secret, Some(("webpack:///src/a.js".into(), 2, 14))),
                (KeyKind::Publishable, Some(("webpack:///src/b.js".into(), 1, 20))),
                (KeyKind::Secret, Some(("webpack:///src/b.js".into(), 4, 12))),
            ]
        );
        assert!(got.iter().all(|h| h.0 == 1 && !h.4));
        // A key elsewhere in the map (here: `names`) is found once, without a source.
        let map = map.replace("\"names\":[]", &format!("\"names\":[\"{k}\"]"));
        assert_eq!(hits(&map).iter().filter(|h| h.3.is_none()).count(), 1);
        // A null entry and a map without `sources`.
        let map = json!({"sourcesContent": [null, format!("\n{k}")]}).to_string();
        let got = hits(&map);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].3.clone().map(|s| (s.name, s.line)),
            Some(("sourcesContent[1]".into(), 2))
        );
    }

    #[test]
    fn inline_source_maps_are_decoded() {
        use base64::Engine as _;
        let k = key();
        let map = source_map(&["src/app.ts"], &[&format!("let x = 1;\nlet k = \"{k}\";\n")]);
        for b64 in [
            base64::engine::general_purpose::STANDARD.encode(&map),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&map),
        ] {
            for (head, tail) in [
                ("//# sourceMappingURL=data:application/json;base64,", "\n"),
                ("//# sourceMappingURL=data:application/json;charset=utf-8;base64,", ""),
                ("/*# sourceMappingURL=data:application/json;base64,", " */\n"),
            ] {
                let js = format!("!function(){{}}();\n{head}{b64}{tail}");
                let got = hits(&js);
                assert_eq!(got.len(), 1, "{js}");
                assert_eq!((got[0].0, got[0].4), (2, true));
                assert_eq!(got[0].2, k);
                assert_eq!(
                    got[0].3.clone().map(|s| (s.name, s.line, s.column)),
                    Some(("src/app.ts".into(), 2, 10))
                );
            }
        }
        // Broken base64: nothing, no panic.
        assert!(hits("//# sourceMappingURL=data:application/json;base64,@@@").is_empty());
    }

    #[test]
    fn one_long_line_with_many_findings_is_linear() {
        let k = key();
        let unit = format!("a(\"{k}\"),b(\"{}\"),", k.replace('_', "\\x5f"));
        let n = 5 * 1024 * 1024 / unit.len();
        let hay = unit.repeat(n);
        let m = Matcher::new(KeyFormat::default());
        let started = std::time::Instant::now();
        let f = scan_bytes(&m, Path::new("a.js"), hay.as_bytes());
        assert_eq!(f.len(), 2 * n);
        let last = (n - 1) * unit.len() + 3 + k.len() + 6;
        assert_eq!(f.last().map(|f| (f.line, f.column)), Some((1, last + 1)));
        eprintln!(
            "{} findings on one {} byte line in {:?}",
            f.len(),
            hay.len(),
            started.elapsed()
        );
    }
}
