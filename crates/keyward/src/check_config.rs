//! `keyward check-config FILE`: every problem of a configuration file, each with its line.
//!
//! Three passes, each going on past the first problem:
//!
//! 1. **syntax** (TOML): the parser's error span gives the line; the offending lines are
//!    blanked (line numbers kept) and the file parsed again, until it parses;
//! 2. **structure** (unknown keys, wrong types, missing fields): the same, deserializing into
//!    [`Config`]; a problem in a table header blanks the whole table;
//! 3. **meaning** (what `keyward serve` would refuse at start): each route checked on its own
//!    (reported at the line of its `[[routes]]` header), duplicate route names, then every
//!    other section; a message that names a key (`gateway.publishable_rate: …`) is reported at
//!    that key's line.
//!
//! `KEYWARD_*` overrides from the environment apply in pass 3, as in `keyward serve`.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{apply_env, Config, ConfigError};
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
    let text =
        std::fs::read_to_string(file).map_err(|e| CliError::Io(format!("cannot read {}: {e}", file.display())))?;
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
    // Pass 3: meaning, on what is left, with the environment's overrides.
    let work = lines.join("\n");
    let cfg = match load(&work, file, env) {
        Ok(c) => c,
        Err(m) => {
            findings.push(Finding { line: None, message: m });
            return findings;
        }
    };
    findings.extend(semantic(&cfg, &work));
    findings
}

fn load(text: &str, file: &Path, env: &[(String, String)]) -> std::result::Result<Config, String> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.message().to_owned())?;
    apply_env(&mut table, env).map_err(|e| e.to_string())?;
    let mut cfg: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("environment override: {}", e.message()))?;
    if let Some(base) = file.parent() {
        cfg.resolve_paths(base);
    }
    Ok(cfg)
}

fn semantic(cfg: &Config, text: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let push = |out: &mut Vec<Finding>, line: Option<usize>, message: String| {
        if !out.iter().any(|f| f.message == message) {
            out.push(Finding { line, message });
        }
    };
    let route_lines = headers(text, "[[routes]]");
    // Everything but the routes, once.
    let mut bare = cfg.clone();
    bare.routes = Vec::new();
    let global = bare.gateway_config().err().map(|e| e.to_string());
    // Each route on its own, against gateway settings that pass (a gateway-level problem is
    // reported once, below, and must not hide the routes' own).
    let mut base = cfg.clone();
    if global.is_some() {
        let client_auth = base.gateway.tls_client_auth;
        base.gateway = Default::default();
        base.gateway.tls_client_auth = client_auth;
        base.security = Default::default();
    }
    for (i, r) in cfg.routes.iter().enumerate() {
        let mut one = base.clone();
        one.routes = vec![r.clone()];
        let line = route_lines.get(i).copied();
        if let Err(e) = one.gateway_config() {
            let m = e.to_string();
            if Some(&m) != global.as_ref() {
                push(&mut out, line, m.replacen("routes[0]", &format!("routes[{i}]"), 1));
            }
        }
        if cfg.oauth.enabled {
            if let Err(e) = one.oauth_config() {
                let m = e.to_string();
                if bare.oauth_config().err().map(|e| e.to_string()) != Some(m.clone()) {
                    push(&mut out, line, format!("routes[{i}] ({:?}): {m}", r.name));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        if !r.name.is_empty() && !seen.insert(r.name.as_str()) {
            push(
                &mut out,
                route_lines.get(i).copied(),
                format!("routes[{i}] ({:?}): route names must be unique", r.name),
            );
        }
    }
    let webhook_lines = headers(text, "[[webhooks]]");
    let mut others: Vec<std::result::Result<(), ConfigError>> = vec![
        bare.key_format().map(drop),
        bare.gateway_config().map(drop),
        bare.tls_settings().map(drop),
        bare.forward_auth_config().map(drop),
        bare.limiter().map(drop),
    ];
    if cfg.oauth.enabled {
        others.push(bare.oauth_config().map(drop));
    }
    // Whatever else `serve` checks at start (one problem at most from here).
    others.push(bare.validate());
    for e in others.into_iter().filter_map(|r| r.err()) {
        let m = e.to_string();
        let line = match webhook_index(&m) {
            Some(i) => webhook_lines.get(i).copied(),
            None => key_line(text, &m),
        };
        push(&mut out, line, m);
    }
    out
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

fn webhook_index(m: &str) -> Option<usize> {
    let rest = m.strip_prefix("webhooks[")?;
    rest.split(']').next()?.parse().ok()
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
        assert!(check(text, Path::new("/tmp/k.toml"), &[]).is_empty());
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
