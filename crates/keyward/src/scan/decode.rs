//! Escape layers, JSON strings and source maps: what is decoded before matching, and the way
//! back to positions in the file as written.

use super::*;

// Layers: a buffer with escapes decoded, and the way back to the outer buffer's offsets.

/// One decoded escape: `inner_len` bytes at `inner` in the decoded buffer stand for
/// `outer_len` bytes at `outer` in the outer one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) inner: usize,
    pub(super) inner_len: usize,
    pub(super) outer: usize,
    pub(super) outer_len: usize,
}

/// A decoded view of a buffer. Only decoded escapes are recorded (sparse), so the memory is
/// the decoded copy plus one `Span` per escape, both bounded by the input's size; without any
/// escape to decode the view borrows the input.
pub(super) struct Layer<'a> {
    pub(super) bytes: std::borrow::Cow<'a, [u8]>,
    pub(super) spans: Vec<Span>,
}

impl Layer<'_> {
    /// The offset in the outer buffer of the byte at `inner` (O(log escapes)).
    pub(super) fn to_outer(&self, inner: usize) -> usize {
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

pub(super) fn hex_value(b: &[u8]) -> Option<u32> {
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
pub(super) fn word_escape_at(hay: &[u8], p: usize) -> std::result::Result<(u8, usize), usize> {
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
pub(super) fn js_unescape(hay: &[u8]) -> Layer<'_> {
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
pub(super) fn json_unescape(raw: &[u8]) -> Layer<'_> {
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
pub(super) struct Hit {
    /// Offset in the outermost buffer.
    pub(super) offset: usize,
    pub(super) kind: KeyKind,
    pub(super) key: String,
    pub(super) source: Option<SourcePos>,
}

pub(super) fn skip_ws(hay: &[u8], mut i: usize) -> usize {
    while hay.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// End (the closing quote) of the JSON string whose contents start at `s`.
pub(super) fn json_string_end(hay: &[u8], s: usize) -> Option<usize> {
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
pub(super) fn json_string_arrays(hay: &[u8], key: &str) -> Vec<StringSpans> {
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
pub(super) fn scan_text(m: &Matcher, hay: &[u8]) -> Vec<Hit> {
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
pub(super) fn scan_doc(m: &Matcher, hay: &[u8]) -> Vec<Hit> {
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
pub(super) fn inline_source_maps(hay: &[u8]) -> Vec<(usize, Vec<u8>)> {
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
pub(super) struct Lines<'a> {
    pub(super) hay: &'a [u8],
    pub(super) pos: usize,
    pub(super) line: usize,
    pub(super) line_start: usize,
}

impl<'a> Lines<'a> {
    pub(super) fn new(hay: &'a [u8]) -> Lines<'a> {
        Lines {
            hay,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// 1-based line and 1-based byte column of `offset`.
    pub(super) fn at(&mut self, offset: usize) -> (usize, usize) {
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
