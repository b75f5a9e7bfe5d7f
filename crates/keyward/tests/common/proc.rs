//! A child `keyward` process with its stderr collected in the background, shared by the
//! integration tests (`tests/it`) and `tests/otel.rs` (`#[path]` module: each binary uses part).
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `c` with its stderr piped and collected (stdin and stdout as `c` sets them).
    pub fn spawn(mut c: Command) -> Proc {
        let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc { child, stderr }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// How many bytes of stderr there are so far (a mark for [`Proc::wait_for`]).
    pub fn seen(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    /// Waits (30 s at most) until stderr, from byte `after` on, holds a line with `needle`;
    /// returns that line.
    pub fn wait_for(&self, needle: &str, after: usize) -> String {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let all = self.stderr();
            if let Some(line) = all[after.min(all.len())..].lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {needle:?}; stderr: {}", self.stderr());
    }

    /// Sends a signal (`-HUP`, `-TERM`) with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then waits (30 s at most) for the process to exit; its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the process did not stop on SIGTERM; stderr: {}", self.stderr());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address after `marker` in a log line (`keyward: gateway on http://127.0.0.1:1234, …`).
pub fn url_after(line: &str, marker: &str) -> String {
    let i = line.find(marker).unwrap() + marker.len();
    line[i..].split([',', ' ', '"']).next().unwrap().to_owned()
}

/// Creates the app `cats` and a key for it through the admin API at `admin`; the key.
pub async fn cats_key(admin: &str, admin_token: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/v1/apps"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({"name": "cats"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = http
        .post(format!("{admin}/v1/keys"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({"app": "cats"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["key"].as_str().unwrap().to_owned()
}
