//! `KeyFormat::parse` (and `looks_like_key`, `display_hint`) on arbitrary text.
#![no_main]

use keyward_core::key::display_hint;
use keyward_core::KeyFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let formats = [
        KeyFormat::default(),
        KeyFormat::new("acme").unwrap(),
        KeyFormat::new("abcdefghij012345").unwrap(),
    ];
    for f in &formats {
        let parsed = f.parse(s);
        let looks = f.looks_like_key(s);
        // Every valid key looks like a key (the gateway's Bearer routing depends on it).
        if parsed.is_ok() {
            assert!(looks, "parsed but does not look like a key: {s:?}");
            assert!(s.starts_with(f.prefix()));
        }
    }
    // A prefix taken from the input: `new` validates it; parse under it must not panic.
    if let Some((prefix, rest)) = s.split_once('|') {
        if let Ok(f) = KeyFormat::new(prefix) {
            let _ = f.parse(rest);
            let _ = f.looks_like_key(rest);
        }
    }
    let _ = display_hint(s);
});
