//! The field formatter of spans in the JSON log lines.
//!
//! tracing-subscriber's JSON formatter keeps each span's fields as a formatted JSON object
//! (read back when a line is logged inside the span). Its `JsonFields` builds that object by
//! collecting every field into a `BTreeMap` of `serde_json::Value`s and serializing the map, and,
//! for a field recorded after the span's creation, parses the object, adds the field and writes
//! it anew. The gateway records its request span's fields (route, outcome, status, path, client
//! address, app, key or client) one by one on every request, at the default level too, whether
//! or not a line is then logged: that made the span the most expensive part of a proxied
//! request (issue 19; `bench/instructions.sh` with `LOG=info`).
//!
//! [`SpanJsonFields`] writes each field straight into the object as JSON, and appends a field
//! recorded later to the object instead of re-parsing it. What a line shows is unchanged: the
//! same names and values (strings as JSON strings, `Debug` values as strings of their `Debug`
//! form, numbers and booleans as JSON numbers and booleans, bytes as arrays, `r#` stripped from
//! names). A field recorded twice appears twice in the span's object; the line's reader
//! (serde_json, in the JSON formatter) keeps the last, as the re-parsing did.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SpanJsonFields;

impl<'writer> FormatFields<'writer> for SpanJsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut v = Entries {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // `current` is a JSON object this formatter wrote (`{}` or `{"k":v,...}`), or nothing
        // yet.
        let s = &mut current.fields;
        let first = s.len() <= 2;
        if first {
            s.clear();
            s.push('{');
        } else {
            s.pop();
        }
        let mut v = Entries {
            out: s,
            first,
            result: Ok(()),
        };
        fields.record(&mut v);
        let result = v.result;
        s.push('}');
        result
    }
}

/// Writes fields as `"name":value` entries of a JSON object, separated by commas.
struct Entries<'a, W: fmt::Write> {
    out: &'a mut W,
    /// No entry written yet (no comma before the next).
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Entries<'_, W> {
    /// Starts the entry of `field`: `,"name":`.
    fn key(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !self.first {
            self.out.write_char(',')?;
        }
        self.first = false;
        write_json_str(self.out, name)?;
        self.out.write_char(':')
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| value(self.out));
    }
}

impl<W: fmt::Write> Visit for Entries<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value:?}")
            } else {
                // As serde_json: a number JSON cannot hold is null.
                w.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_json_str(w, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field, |w| {
            w.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write!(w, "{b}")?;
            }
            w.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaping(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `s` as a JSON string, quotes included.
fn write_json_str<W: fmt::Write + ?Sized>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaping(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string (RFC 8259 §7: `"`, `\` and the
/// control characters), as serde_json does.
struct Escaping<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Most values (ids, routes, paths, addresses) have nothing to escape: one scan, one write.
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(s);
        }
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};

    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// The lines a JSON subscriber with `fields` as its span formatter writes for `f`.
    fn lines<N>(fields: N, f: impl FnOnce()) -> Vec<serde_json::Value>
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || out.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .without_time()
            .fmt_fields(fields);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Thing {
        name: &'static str,
        n: u8,
    }

    fn scenario() {
        let hostile = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é 🐈 </script>";
        let span = tracing::info_span!(
            "request",
            request_id = "abc",
            method = %"GET",
            r#type = "raw",
            route = tracing::field::Empty,
            status = tracing::field::Empty,
            n = tracing::field::Empty,
            ratio = tracing::field::Empty,
            ok = tracing::field::Empty,
            thing = tracing::field::Empty,
            hostile = tracing::field::Empty,
            nan = tracing::field::Empty,
        );
        let _g = span.enter();
        tracing::info!("before");
        span.record("route", "facts");
        span.record("status", 200u16);
        span.record("n", -42i64);
        span.record("ratio", 0.25f64);
        span.record("ok", true);
        span.record("thing", tracing::field::debug(&Thing { name: "a\"b", n: 7 }));
        span.record("hostile", hostile);
        span.record("nan", f64::NAN);
        // Recorded twice: the last value wins.
        span.record("route", "cats");
        tracing::info!(extra = 1, "after");
        let inner = tracing::info_span!("inner", depth = 2u64);
        let _i = inner.enter();
        tracing::warn!("nested");
    }

    #[test]
    fn lines_are_what_tracing_subscribers_json_fields_write() {
        let ours = lines(SpanJsonFields, scenario);
        let theirs = lines(tracing_subscriber::fmt::format::JsonFields::default(), scenario);
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, theirs);
        // And what they are, so that both agreeing on nothing cannot pass.
        let span = &ours[1]["span"];
        assert_eq!(span["route"], "cats");
        assert_eq!(span["status"], 200);
        assert_eq!(span["n"], -42);
        assert_eq!(span["ratio"], 0.25);
        assert_eq!(span["ok"], true);
        assert_eq!(span["type"], "raw");
        assert_eq!(span["method"], "GET");
        assert_eq!(span["thing"], "Thing { name: \"a\\\"b\", n: 7 }");
        assert!(span["nan"].is_null());
        assert_eq!(
            span["hostile"],
            "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} é 🐈 </script>"
        );
        assert_eq!(ours[0]["span"]["request_id"], "abc");
        assert!(ours[0]["span"].get("route").is_none(), "{}", ours[0]);
        assert_eq!(ours[2]["span"]["depth"], 2);
        assert_eq!(ours[2]["spans"][0]["route"], "cats");
    }

    #[test]
    fn escaping_matches_serde_json_for_every_ascii_byte() {
        let all: String = (0u8..=127).map(char::from).collect();
        let mut ours = String::new();
        write_json_str(&mut ours, &all).unwrap();
        assert_eq!(ours, serde_json::to_string(&all).unwrap());
    }
}
