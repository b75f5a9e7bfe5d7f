//! Packaging (issue 20, point 5): the shipped systemd unit passes `systemd-analyze verify`
//! (and its offline security review), the Containerfile's RUN commands run in a plain shell and
//! everything it copies exists, completion scripts parse in their shells and complete, and the
//! man pages render without warnings.
//!
//! Tools: bash (always), and `systemd-analyze`, `zsh`, `fish`, `groff`. With
//! `KEYWARD_TEST_PACKAGING=1` (set by `.ci/run`, which installs them) a missing tool fails the
//! test; without it, a missing tool skips that part with a printed line naming what was not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::proc::{url_after, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A tool on the PATH; `None` (with a printed line) when it is missing and not required.
fn tool(name: &str, what: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or(None);
    if found.is_none() {
        assert!(
            std::env::var_os("KEYWARD_TEST_PACKAGING").is_none(),
            "KEYWARD_TEST_PACKAGING is set but {name} is not installed ({what})"
        );
        println!("NOT RUN: {what}: {name} is not installed (apt-get install it, or set KEYWARD_TEST_PACKAGING=1 to require it)");
    }
    found
}

fn keyward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- completions and man pages ---------------------------------------------------------------

#[test]
fn completion_scripts_parse_and_complete_in_their_shells() {
    let dir = tempfile::tempdir().unwrap();
    let mut scripts = BTreeMap::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = keyward(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("keyward"), "{shell}: {out}");
        // Every subcommand is in the script, the new ones included.
        for sub in ["apply", "export", "completions", "check-config", "admin-token"] {
            assert!(out.contains(sub), "{shell} completion lacks {sub}");
        }
        let p = dir.path().join(format!("keyward.{shell}"));
        std::fs::write(&p, &out).unwrap();
        scripts.insert(shell, p);
    }
    // A shell it does not know: a usage error naming the accepted ones.
    let (code, _, err) = keyward(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );

    // bash: parses, registers, and completes subcommands and their own subcommands.
    let bash = &scripts["bash"];
    let (ok, _, err) = run(Command::new("bash").arg("-n").arg(bash));
    assert!(ok, "bash -n: {err}");
    let complete = |words: &str| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _keyward keyward \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            bash.display()
        );
        let (ok, out, err) = run(Command::new("bash").arg("-c").arg(script));
        assert!(ok, "{err}");
        out
    };
    let out = complete("keyward ap");
    assert!(out.split_whitespace().any(|w| w == "apply"), "{out}");
    assert!(out.split_whitespace().any(|w| w == "app"), "{out}");
    let out = complete("keyward apply --dr");
    assert!(out.contains("--dry-run"), "{out}");
    let out = complete("keyward completions f");
    assert!(out.contains("fish"), "{out}");

    if let Some(zsh) = tool("zsh", "zsh completion check") {
        let (ok, _, err) = run(Command::new(zsh).arg("-n").arg(&scripts["zsh"]));
        assert!(ok, "zsh -n: {err}");
    }
    if let Some(fish) = tool("fish", "fish completion check") {
        let (ok, _, err) = run(Command::new(&fish).arg("-n").arg(&scripts["fish"]));
        assert!(ok, "fish -n: {err}");
        let script = format!("source {}; complete -C 'keyward ap'", scripts["fish"].display());
        let (ok, out, err) = run(Command::new(&fish).arg("-c").arg(script));
        assert!(ok, "{err}");
        assert!(out.lines().any(|l| l.starts_with("apply\t")), "{out}");
    }
}

#[test]
fn man_pages_cover_every_command_and_render_without_warnings() {
    let (code, out, err) = keyward(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH keyward 1"), "{}", &out[..out.len().min(300)]);
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man1");
    let (code, out, err) = keyward(&["man", "--dir", man1.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let pages: Vec<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(out.contains(&format!("{} man pages", pages.len())), "{out}");
    for p in [
        "keyward.1",
        "keyward-apply.1",
        "keyward-export.1",
        "keyward-serve.1",
        "keyward-key-create.1",
        "keyward-client-create.1",
        "keyward-admin-token-create.1",
        "keyward-completions.1",
        "keyward-man.1",
    ] {
        assert!(pages.iter().any(|n| n == p), "{p} missing from {pages:?}");
    }
    if let Some(groff) = tool("groff", "man page rendering check") {
        for p in &pages {
            let (ok, _, err) = run(Command::new(&groff)
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(man1.join(p)));
            assert!(ok && err.trim().is_empty(), "{p}: {err}");
        }
    }
    // A directory that cannot be made: a clear error, exit 1.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = keyward(&["man", "--dir", file.join("sub").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a-file"), "{err}");
}

// ---- the systemd unit --------------------------------------------------------------------------

/// The shipped unit with its binary path pointing at the binary under test (verify wants the
/// executables to exist).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo().join("contrib/systemd/keyward.service")).unwrap();
    let p = dir.join("keyward.service");
    std::fs::write(&p, unit.replace("/usr/local/bin/keyward", BIN)).unwrap();
    p
}

#[test]
fn the_systemd_unit_is_hardened_and_matches_the_init_layout() {
    let unit = std::fs::read_to_string(repo().join("contrib/systemd/keyward.service")).unwrap();
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| directives.iter().any(|(a, b)| *a == k && *b == v);
    for (k, v) in [
        ("User", "keyward"),
        ("StateDirectory", "keyward"),
        ("StateDirectoryMode", "0700"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(has(k, v), "{k}={v} missing from the unit");
    }
    // The layout of `keyward init --dir /etc/keyward --data-dir /var/lib/keyward`: the unit
    // reads /etc/keyward/keyward.toml and may write only its state directory /var/lib/keyward.
    assert!(has(
        "ExecStart",
        "/usr/local/bin/keyward serve --config /etc/keyward/keyward.toml"
    ));
    assert!(
        !directives.iter().any(|(k, _)| *k == "ReadWritePaths"),
        "StateDirectory is the one writable path"
    );
    let etc = tempfile::tempdir().unwrap();
    let var = tempfile::tempdir().unwrap();
    let (code, _, err) = keyward(&[
        "init",
        "--dir",
        etc.path().to_str().unwrap(),
        "--data-dir",
        var.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let cfg = std::fs::read_to_string(etc.path().join("keyward.toml")).unwrap();
    assert!(
        cfg.contains(&format!("url = \"{}\"", var.path().join("keyward.db").display())),
        "{cfg}"
    );
    // The docs ship the file instead of a copy that could drift.
    let deployment = std::fs::read_to_string(repo().join("docs/DEPLOYMENT.md")).unwrap();
    assert!(deployment.contains("contrib/systemd/keyward.service"));
    assert!(
        !deployment.contains("[Service]"),
        "docs/DEPLOYMENT.md holds an inline unit again"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("contrib/systemd/keyward.service"));

    let Some(analyze) = tool("systemd-analyze", "systemd unit verification") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = unit_for_test(dir.path());
    // Documentation=man:keyward(1) is checked too: the generated pages are on MANPATH.
    let man = dir.path().join("man");
    let (code, _, err) = keyward(&["man", "--dir", man.join("man1").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let verify = |unit: &Path| run(Command::new(&analyze).arg("verify").arg(unit).env("MANPATH", &man));
    let (ok, out, err) = verify(&p);
    assert!(
        ok && out.trim().is_empty() && err.trim().is_empty(),
        "verify: {out}{err}"
    );
    // The check can fail: a misspelt value is reported (as a warning, which fails the test above).
    let broken = dir.path().join("broken").join("keyward.service");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("ProtectSystem=strict", "ProtectSystem=stricter"),
    )
    .unwrap();
    let (_, out, err) = verify(&broken);
    assert!(format!("{out}{err}").contains("stricter"), "{out}{err}");
    // systemd's own exposure score of the unit (0 best, 10 worst): 1.x is "OK".
    let (ok, out, err) = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&p)
        .env("MANPATH", &man));
    assert!(ok, "{out}{err}");
    let score: f64 = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {out}"));
    println!("systemd-analyze security: overall exposure {score}");
    assert!(score <= 2.0, "exposure {score}: {out}");
}

// ---- the Containerfile ------------------------------------------------------------------------

/// The Containerfile's instructions (continuation lines joined, comments dropped).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (op, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    out
}

/// Every file under `root` (relative path → size and modification time).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    (m.len(), m.modified().unwrap()),
                );
            }
        }
    }
    out
}

#[test]
fn the_container_recipe_runs_in_a_plain_shell_and_copies_what_exists() {
    let root = repo();
    let text = std::fs::read_to_string(root.join("Containerfile")).unwrap();
    let ins = instructions(&text);
    let froms: Vec<&String> = ins.iter().filter(|(op, _)| op == "FROM").map(|(_, a)| a).collect();
    assert_eq!(
        froms.len(),
        2,
        "multi-stage: a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    let runtime_start = ins.iter().rposition(|(op, _)| op == "FROM").unwrap();
    // Non-root, by number (no name lookup needed at run time).
    let user = ins.iter().rev().find(|(op, _)| op == "USER").map(|(_, a)| a.as_str());
    assert_eq!(user, Some("10001:10001"));
    assert!(
        !ins[runtime_start..].iter().any(|(op, _)| op == "RUN"),
        "the runtime stage runs nothing (no shell needed, read-only root)"
    );
    assert!(text.contains("VOLUME [\"/var/lib/keyward\"]"));
    // The build context leaves target/ out.
    let ignore = std::fs::read_to_string(root.join(".containerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");

    // Every RUN parses in a plain shell; then they run, the release build excepted (CI builds
    // the same package with --locked; here the binary under test stands in for its output).
    let stage = tempfile::tempdir().unwrap();
    let rootfs = stage.path().join("rootfs");
    let runs: Vec<&String> = ins.iter().filter(|(op, _)| op == "RUN").map(|(_, a)| a).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for cmd in &runs {
        let (ok, _, err) = run(Command::new("sh").arg("-n").arg("-c").arg(cmd.as_str()));
        assert!(ok, "sh -n {cmd}: {err}");
    }
    assert_eq!(runs[0].as_str(), "cargo build --release --locked -p keyward");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"keyward\""));
    let staged = runs[1]
        .replace("/rootfs", rootfs.to_str().unwrap())
        .replace("target/release/keyward", BIN);
    // Files the RUN commands name exist in the build context.
    for word in runs[1].split_whitespace().filter(|w| w.starts_with("contrib/")) {
        assert!(root.join(word).is_file(), "{word} does not exist");
    }
    let (ok, out, err) = run(Command::new("sh").arg("-c").arg(&staged).current_dir(&root));
    assert!(ok, "{staged}: {out}{err}");
    assert!(out.contains("keyward"), "--version: {out}");

    // Every COPY source exists: in the build context, or in what the build stage made.
    for (op, args) in &ins {
        if op != "COPY" {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let (srcs, _dest) = words.split_at(words.len() - 1);
        for src in srcs {
            if args.contains("--from=build") {
                match src.strip_prefix("/rootfs/") {
                    Some(rel) => assert!(rootfs.join(rel).exists(), "COPY {src}: not staged"),
                    // The CA bundle of the Debian build image (here when this machine is Debian).
                    None if Path::new("/etc/debian_version").exists() => {
                        assert!(Path::new(src).exists(), "COPY {src}: not on a Debian system")
                    }
                    None => println!("NOT RUN: {src} exists only on a Debian build image"),
                }
            } else {
                assert!(root.join(src).exists(), "COPY {src}: not in the build context");
            }
        }
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("keyward:x:10001:10001:keyward:/var/lib/keyward:/usr/sbin/nologin"),
        "{passwd}"
    );
    assert!(rootfs.join("usr/share/man/man1/keyward.1").is_file());

    // The image's environment and layout work: a configuration written for it checks clean
    // with the image's KEYWARD_* variables, and `serve` writes nothing outside
    // /var/lib/keyward (the volume), so the root filesystem may be read-only.
    let env: Vec<(String, String)> = ins
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, a)| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert!(env.iter().any(|(k, _)| k == "KEYWARD_GATEWAY__LISTEN"), "{env:?}");
    let bin = rootfs.join("usr/local/bin/keyward");
    let etc = rootfs.join("etc/keyward");
    let var = rootfs.join("var/lib/keyward");
    let out = Command::new(&bin)
        .args(["init", "--dir"])
        .arg(&etc)
        .arg("--data-dir")
        .arg(&var)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = snapshot(&rootfs);
    let mut c = Command::new(&bin);
    c.args(["serve", "--config"]).arg(etc.join("keyward.toml"));
    c.current_dir(&rootfs).stdout(Stdio::null()).stdin(Stdio::null());
    for (k, v) in &env {
        c.env(k, v);
    }
    // Loopback ports of our own instead of the image's 0.0.0.0:8080/8081.
    c.env("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("KEYWARD_ADMIN__LISTEN", "127.0.0.1:0")
        .env("KEYWARD_LOG_FORMAT", "json")
        .env_remove("KEYWARD_ADMIN_TOKEN")
        .env_remove("KEYWARD_PEPPER")
        .env_remove("KEYWARD_CONFIG");
    let mut server = Proc::spawn(c);
    let line = server.wait_for("keyward: gateway on", 0);
    let admin = url_after(&line, "admin API on http://");
    let health = plain_http::get(&format!("http://{admin}/healthz"));
    assert!(health.contains("\"ok\""), "{health}");
    assert!(server.terminate().success(), "{}", server.stderr());
    let after = snapshot(&rootfs);
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, m)| before.get(*p) != Some(m))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .collect();
    assert!(!changed.is_empty(), "the store was not written");
    for p in changed {
        assert!(
            p.starts_with("var/lib/keyward"),
            "serve wrote {} outside the volume",
            p.display()
        );
    }
}

mod plain_http {
    /// A GET over a plain TCP socket (the test is synchronous); the response body.
    pub fn get(url: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    }
}
