//! `keyward check-config FILE`: every problem of a configuration file, each with its line.
//!
//! Three passes, each going on past the first problem:
//!
//! 1. **syntax** (TOML): the parser's error span gives the line; the offending lines are
//!    blanked (line numbers kept) and the file parsed again, until it parses;
//! 2. **structure** (unknown keys, wrong types, missing fields): the same, deserializing into
//!    [`Config`]; a problem in a table header blanks the whole table;
//! 3. **meaning**: [`Config::check`], the very function `keyward serve` runs before it binds
//!    a listener (secrets present and mode 0600, one address per listener, routes, TLS,
//!    webhooks, …), which collects every problem; a route's problems are reported at the line
//!    of its `[[routes]]` header, a webhook's at its `[[webhooks]]`, and a message that names a
//!    key (`gateway.publishable_rate: …`) at that key's line.
//!
//! `KEYWARD_*` overrides from the environment apply in pass 3, as in `keyward serve`.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{Config, ConfigError, Place};
use crate::error::{CliError, Result};

/// One problem: its line (1-based) when known, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: Option<usize>,
    pub message: String,
}

/// Most problems reported per pass (a file of garbage does not print a million lines).
const MAX_PER_PASS: usize = 100;

/// Runs the command: prints every problem (`FILE:LINE: message`), exit status 2 when there is
/// one, 0 when the file is valid.
pub fn run(file: &Path, env: &[(String, String)]) -> Result<()> {
    // A file that is not there is a usage error (exit status 2), like a file with problems.
    let text = std::fs::read_to_string(file).map_err(|source| {
        let e = ConfigError::Read {
            path: file.into(),
            source,
        };
        if e.is_missing_file() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Config(e)
        }
    })?;
    let findings = check(&text, file, env);
    let name = file.display();
    if findings.is_empty() {
        println!("{name}: ok");
        return Ok(());
    }
    let mut out = String::new();
    for f in &findings {
        let _ = match f.line {
            Some(l) => writeln!(out, "{name}:{l}: {}", f.message),
            None => writeln!(out, "{name}: {}", f.message),
        };
    }
    print!("{out}");
    Err(CliError::Usage(format!(
        "{name}: {} problem{}",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    )))
}

/// Every problem of `text` (the content of `file`).
pub fn check(text: &str, file: &Path, env: &[(String, String)]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Pass 1: syntax.
    for _ in 0..MAX_PER_PASS {
        let work = lines.join("\n");
        match work.parse::<toml::Table>() {
            Ok(_) => break,
            Err(e) => {
                let span = e.span();
                let line = span.as_ref().map(|s| line_of(&work, s.start));
                // Name the key when the problem is on a `key = value` line.
                let key = line
                    .and_then(|l| lines.get(l - 1))
                    .filter(|t| !is_header(t))
                    .and_then(|t| t.split_once('='))
                    .map(|(k, _)| k.trim().to_owned())
                    .filter(|k| !k.is_empty());
                let message = match key {
                    Some(k) if !e.message().contains(&format!("`{k}`")) => format!("{k}: {}", e.message()),
                    _ => e.message().to_owned(),
                };
                findings.push(Finding { line, message });
                if !span.is_some_and(|s| blank(&mut lines, &work, s)) {
                    return findings;
                }
            }
        }
    }
    // Pass 2: structure.
    for _ in 0..MAX_PER_PASS {
        let work = lines.join("\n");
        match toml::from_str::<Config>(&work) {
            Ok(_) => break,
            Err(e) => {
                let span = e.span();
                let line = span.as_ref().map(|s| line_of(&work, s.start));
                // Name the key when the problem is on a `key = value` line.
                let key = line
                    .and_then(|l| lines.get(l - 1))
                    .filter(|t| !is_header(t))
                    .and_then(|t| t.split_once('='))
                    .map(|(k, _)| k.trim().to_owned())
                    .filter(|k| !k.is_empty());
                let message = match key {
                    Some(k) if !e.message().contains(&format!("`{k}`")) => format!("{k}: {}", e.message()),
                    _ => e.message().to_owned(),
                };
                findings.push(Finding { line, message });
                if !span.is_some_and(|s| blank(&mut lines, &work, s)) {
                    return findings;
                }
            }
        }
    }
    // Pass 3: meaning, on what is left, with the environment's overrides: exactly what
    // `keyward serve` checks before it binds a listener (`Config::check`).
    let work = lines.join("\n");
    let cfg = match Config::from_text(&work, Some(file), env) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding {
                line: None,
                message: e.to_string(),
            });
            return findings;
        }
    };
    let route_lines = headers(&work, "[[routes]]");
    let webhook_lines = headers(&work, "[[webhooks]]");
    for p in cfg.check(env) {
        let line = match p.place {
            Place::Route(i) => route_lines.get(i).copied(),
            Place::Webhook(i) => webhook_lines.get(i).copied(),
            Place::Key => key_line(&work, &p.message),
        };
        if !findings.iter().any(|f| f.message == p.message) {
            findings.push(Finding {
                line,
                message: p.message,
            });
        }
    }
    findings
}

/// Line (1-based) of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len())).map_or(0, |t| t.matches('\n').count()) + 1
}

fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// Blanks the lines of `span` (the whole table when it starts at a table header). False when
/// nothing changed (then the caller stops, rather than loop on the same problem).
fn blank(lines: &mut [String], text: &str, span: std::ops::Range<usize>) -> bool {
    let first = line_of(text, span.start).saturating_sub(1);
    let mut last = line_of(text, span.end.max(span.start + 1) - 1).saturating_sub(1);
    if lines.get(first).is_some_and(|l| is_header(l)) {
        last = first;
        while lines.get(last + 1).is_some_and(|l| !is_header(l)) {
            last += 1;
        }
    }
    let mut changed = false;
    for l in lines.iter_mut().take(last + 1).skip(first) {
        if !l.is_empty() {
            l.clear();
            changed = true;
        }
    }
    changed
}

/// Lines of every `header` (e.g. `[[routes]]`), in order.
fn headers(text: &str, header: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            t == header || (t.starts_with(header) && t[header.len()..].trim_start().starts_with('#'))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// The line of `section.key` when the message starts with it (`gateway.publishable_rate: …`).
fn key_line(text: &str, message: &str) -> Option<usize> {
    let name: String = message
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '.')
        .collect();
    let (section, key) = name.split_once('.')?;
    let key = key.split('.').next()?;
    let mut in_section = false;
    let mut section_line = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if is_header(t) {
            in_section = t.trim_start_matches('[').trim_end_matches(']').trim() == section;
            if in_section {
                section_line = Some(i + 1);
            }
            continue;
        }
        if in_section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
    }
    section_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &[Finding]) -> Vec<(Option<usize>, String)> {
        f.iter().map(|f| (f.line, f.message.clone())).collect()
    }

    #[test]
    fn a_valid_file_has_no_finding() {
        let text = "[gateway]\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n";
        let env = [
            (
                "KEYWARD_PEPPER".to_owned(),
                "test-pepper-0123456789abcdef0123456789abcdef".to_owned(),
            ),
            ("KEYWARD_ADMIN_TOKEN".to_owned(), "admin-token-0123456789".to_owned()),
        ];
        assert_eq!(check(text, Path::new("/tmp/k.toml"), &env), vec![]);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"[gateway]
listen = "127.0.0.1:1"
lisen = 3
publishable_rate = "lots"

[cache]
ttl = 5

[[routes]]
name = "ok"
path_prefix = "/ok"
upstream = "http://127.0.0.1:9"

[[routes]]
name = "bad-prefix"
path_prefix = "nope"
upstream = "http://127.0.0.1:9"

[[routes]]
name = "bad-upstream"
path_prefix = "/u"
upstream = "ftp://x"

[[routes]]
name = "ok"
path_prefix = "/dup"
upstream = "http://127.0.0.1:9"
rate = "many"

[[routes]]
name = "no-upstream"
path_prefix = "/n"
"#;
        let f = check(text, Path::new("/tmp/k.toml"), &[]);
        let got = lines(&f);
        let at = |line: usize, needle: &str| {
            assert!(
                got.iter().any(|(l, m)| *l == Some(line) && m.contains(needle)),
                "no {needle:?} at line {line} in {got:#?}"
            )
        };
        at(3, "lisen");
        at(7, "ttl: invalid type");
        at(30, "missing field `upstream`");
        at(14, "path_prefix");
        at(19, "ftp");
        at(24, "many");
        at(24, "unique");
        at(4, "publishable_rate");
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let text = "[gateway]\nlisten = \n[cache]\nttl = \"5s\n";
        let f = check(text, Path::new("/tmp/k.toml"), &[]);
        assert!(f.len() >= 2, "{f:?}");
        assert_eq!(f[0].line, Some(2));
        assert_eq!(f[1].line, Some(4));
    }
}
