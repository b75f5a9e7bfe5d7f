//! Unit tests of the matcher and decoders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::decode::*;
use super::report::*;
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
