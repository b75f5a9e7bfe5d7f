//! Command-line interface (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keyward", version, about = "API keys done right, and a way past them.", long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Default: $KEYWARD_CONFIG, else ./keyward.toml when it exists.
    // KEYWARD_CONFIG is read by `support::config_path`, not by clap: clap would print an
    // argument that came from the environment in its usage lines (`--config <FILE>`), as if
    // it had to be given.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Admin API base URL for management commands. Default: $KEYWARD_ADMIN_URL, else from the
    /// configuration.
    // Read by `support::admin_client`, not by clap (see `config`).
    #[arg(long, global = true, value_name = "URL")]
    pub admin_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a configuration file, a fresh pepper, an admin token and a key-encryption key
    /// (the three secrets mode 0600); the store goes to --data-dir.
    Init {
        /// Directory to write the configuration and the secrets into (e.g. /etc/keyward).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Directory of the store (the SQLite file), written into the configuration as an
        /// absolute path, e.g. /var/lib/keyward; created when missing. Default: --dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run the gateway and the admin API (SIGHUP reloads routes and limits; SIGTERM drains).
    Serve,
    /// Check a configuration file as `serve` does before it starts (secrets included): every
    /// problem with its line; exit 0 when valid, 2 when not or missing.
    #[command(name = "check-config")]
    CheckConfig {
        /// The configuration file (TOML). Default: the one `serve` would read (--config,
        /// $KEYWARD_CONFIG, ./keyward.toml).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Run a complete demo on a temporary SQLite store: cat-facts upstream, gateway, admin API.
    Demo {
        /// Gateway address (the other listeners take free ports).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Print one JSON line with the URLs, the admin token and the keys once ready.
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in cat-facts API (the upstream of the demo).
    CatFacts {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Serve HTTPS (HTTP/1.1 and h2 by ALPN) with this PEM certificate chain (with
        /// --tls-key). Plain listeners take HTTP/1.1 and h2c (prior knowledge).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// Manage applications.
    #[command(subcommand)]
    App(AppCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage OAuth 2.0 clients (client credentials grant).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the token signing keys.
    #[command(subcommand, name = "signing-key")]
    SigningKey(SigningKeyCommand),
    /// Manage scoped admin tokens (read-only or read-write); needs the bootstrap admin token.
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCommand),
    /// The upstream groups in force and the health of their targets (read-only).
    #[command(subcommand)]
    Upstream(UpstreamCommand),
    /// Usage of a key or an app: requests by outcome over time.
    Usage {
        /// A key id.
        #[arg(long, required_unless_present = "app", conflicts_with = "app")]
        key: Option<String>,
        /// An app (name or id).
        #[arg(long)]
        app: Option<String>,
        /// How far back: a duration (24h, 7d) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// The audit log: admin changes and security events, newest first; `audit verify` checks
    /// its hash chain.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        #[command(flatten)]
        list: AuditListArgs,
    },
    /// Retention of usage rows, audit events and revoked keys ([retention]); the server runs
    /// it every retention.interval.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// A consistent online copy of the SQLite store (SQLite's VACUUM INTO, while the server
    /// runs) into FILE, mode 0600. PostgreSQL: prints the pg_dump procedure. The copy is
    /// useless without the pepper and the key-encryption key: keep them too.
    Backup {
        /// The copy to write (must not exist).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Install a backup as the configured SQLite store. Refused while any process has the
    /// store open (a running `keyward serve`): stop it first. PostgreSQL: prints the
    /// pg_restore procedure.
    Restore {
        /// The backup (made by `keyward backup`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace an existing store (it is moved aside to <store>.replaced-<unix time>).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Find keyward keys in files and directories (honours .gitignore; reads hidden files such
    /// as .env, never .git/; skips binary files and files over 10 MiB); with admin access,
    /// report and optionally revoke live ones.
    /// Exit status 1 when a key may be live, 0 when clean, 2 for usage errors.
    Scan {
        #[command(flatten)]
        args: crate::scan::ScanArgs,
    },
    /// Apply the store's pending migrations (SQLite or PostgreSQL; `serve` also applies them).
    Migrate,
    /// Make apps (and their policies), keys, OAuth clients, scoped admin tokens and managed
    /// webhooks match a state file (TOML), through the admin API: prints the plan as a diff,
    /// then applies it. Idempotent: a second run plans nothing. Keys declared in the file are
    /// created with their plaintext printed once; keys are never in the file.
    Apply {
        /// The state file (TOML; see `keyward export` for its format).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Print the plan only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove what the file does not name, in the collections it declares: keys and
        /// apps are disabled, admin tokens revoked, clients and webhooks deleted.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Write the current apps, keys (names and policies, never secrets), OAuth clients, scoped
    /// admin tokens and managed webhooks as a state file for `keyward apply`.
    Export {
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Leave the admin tokens out (their listing needs the bootstrap admin token).
        #[arg(long)]
        no_admin_tokens: bool,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of keyward, or write one page per command into --dir.
    Man {
        /// Write keyward.1 and one keyward-<command>.1 per subcommand into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Development and benchmarking tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Load many real keys (digests under the configured pepper) straight into the store, in
    /// batched transactions, with a progress bar. Prints no secret.
    Seed {
        /// How many keys.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// The app that gets them (created when missing).
        #[arg(long, default_value = "seed")]
        app: String,
        /// Write the plaintext of seeded keys to this file (mode 0600), for benchmarks.
        #[arg(long, value_name = "FILE")]
        sample_out: Option<PathBuf>,
        /// How many keys `--sample-out` writes (one per line; at most one batch).
        #[arg(long, default_value_t = 1, requires = "sample_out")]
        samples: usize,
        /// Keys per transaction.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// `keyward audit` without a subcommand: the events.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// A duration back from now (24h) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events about this key (or app) id.
    #[arg(long)]
    pub key: Option<String>,
    /// Exact kind (key.revoked) or a prefix ending in '.' (security.).
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many events (1–1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub out: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit log's hash chain (straight from the store; needs the pepper for the
    /// signed checkpoints) and report the first broken link. Exit 0 when intact, 1 when broken.
    Verify {
        /// An event recorded earlier (SEQ:HASH, the head printed by an earlier verify, kept
        /// outside the database) that must still have that hash (repeatable).
        #[arg(long = "expect", value_name = "SEQ:HASH")]
        expect: Vec<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// One retention pass now, straight on the store (the server need not run): prints what
    /// went, or with --dry-run what would go.
    Run {
        /// Count what would go; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Limits on a key or an app.
#[derive(Debug, Args, Default)]
pub struct LimitFlags {
    /// Allowed client address or CIDR (repeatable); none = from anywhere.
    #[arg(long = "ip", value_name = "CIDR")]
    pub ips: Vec<String>,
    /// GCRA rate limit, N/UNIT with UNIT s, min, hour, day, week (7 days) or a duration:
    /// e.g. 100/min, 10/s, 5000/hour, 20/30s.
    #[arg(long, value_name = "N/UNIT", allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// Burst allowed by --rate (default: the rate's count).
    #[arg(long, value_name = "N", requires = "rate")]
    pub burst: Option<u64>,
    /// Quota with refill: N/day (00:00 UTC), N/week (Mondays 00:00 UTC), N/month (the 1st)
    /// or N/<interval> (s, min, hour or a duration such as 12h), e.g. 10000/month, 500/12h.
    #[arg(long, value_name = "N/PERIOD", allow_hyphen_values = true)]
    pub quota: Option<String>,
}

/// Mutual TLS for a key or an app (RFC 8705 certificates registered to the app's clients).
#[derive(Debug, Args, Default)]
pub struct MtlsFlags {
    /// Only accept the key (every key of the app) over a TLS connection whose client
    /// certificate is registered to one of the app's clients (`client create --auth tls_client_auth`).
    #[arg(long)]
    pub require_mtls: bool,
    /// Lift --require-mtls.
    #[arg(long, conflicts_with = "require_mtls")]
    pub no_require_mtls: bool,
}

/// An app's rules for its keys.
#[derive(Debug, Args, Default)]
pub struct KeyRuleFlags {
    /// Longest lifetime of a new key (e.g. 90d): keys without an expiry or beyond it are
    /// capped to it ("none" lifts it on update).
    #[arg(long, value_name = "DURATION")]
    pub max_key_lifetime: Option<String>,
    /// Secret keys must be created with an expiry.
    #[arg(long)]
    pub require_expiry: bool,
    /// Lift --require-expiry.
    #[arg(long, conflicts_with = "require_expiry")]
    pub no_require_expiry: bool,
    /// A kind of key the app may have (repeatable): secret, publishable.
    #[arg(long = "allowed-kind", value_name = "KIND", value_parser = ["secret", "publishable"])]
    pub allowed_kinds: Vec<String>,
}

/// Clearing limits on update.
#[derive(Debug, Args, Default)]
pub struct ClearFlags {
    /// Remove the IP allowlist.
    #[arg(long, conflicts_with = "ips")]
    pub no_ips: bool,
    /// Remove the rate limit.
    #[arg(long, conflicts_with = "rate")]
    pub no_rate: bool,
    /// Remove the quota.
    #[arg(long, conflicts_with = "quota")]
    pub no_quota: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an application.
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        mtls: MtlsFlags,
        #[command(flatten)]
        rules: KeyRuleFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Change an application's limits (shared by all of its keys); applies to the next request.
    Update {
        app: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        mtls: MtlsFlags,
        #[command(flatten)]
        rules: KeyRuleFlags,
        #[command(flatten)]
        clear: ClearFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List applications.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show one application (by id or name).
    Show {
        app: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its plaintext is printed once.
    Create {
        /// Application (name or id).
        #[arg(long)]
        app: String,
        /// A name for the key.
        #[arg(long)]
        name: Option<String>,
        /// A scope the key carries (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Expiry: a duration from now (90d, 12h) or an RFC 3339 time.
        #[arg(long, value_name = "90d|RFC3339")]
        expires: Option<String>,
        /// Environment of the key.
        #[arg(long, value_parser = ["live", "test"], default_value = "live")]
        env: String,
        /// A canary: refused like an unknown key; any use raises a high-severity security event.
        #[arg(long)]
        canary: bool,
        /// The key only works at the token endpoint (exchanged for short-lived tokens), never on an API route.
        #[arg(long, conflicts_with = "canary")]
        exchange_only: bool,
        /// A publishable key (`<prefix>_pk_…`): safe in web pages, only on routes marked
        /// publishable, only from the --origin pages.
        #[arg(long, conflicts_with_all = ["canary", "exchange_only"], requires = "origins")]
        publishable: bool,
        /// An exact web origin allowed to use a publishable key (repeatable), e.g. https://shop.example.
        #[arg(long = "origin", value_name = "URL", requires = "publishable")]
        origins: Vec<String>,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        mtls: MtlsFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Change a key's scopes or limits; applies to the next request.
    Update {
        id: String,
        /// Replace the key's scopes with these (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Remove every scope.
        #[arg(long, conflicts_with = "scopes")]
        no_scopes: bool,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        mtls: MtlsFlags,
        #[command(flatten)]
        clear: ClearFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Import an existing static secret (read from standard input, never from the command
    /// line): keyward stores only its digest, marks it legacy and gives it a sunset.
    Import {
        /// Application (name or id).
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// When the legacy secret stops working (duration or RFC 3339), default 90d; "never" to keep it.
        #[arg(long, default_value = "90d", allow_hyphen_values = true)]
        sunset: String,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List keys.
    List {
        /// Only the keys of this application (name or id).
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show a key's record (never its secret).
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a key, for good. Takes effect on the next request.
    Revoke {
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Disable a key until `key enable`. Takes effect on the next request.
    Disable {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Enable a disabled key again.
    Enable {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replace a key by a successor with the same app, scopes and limits; the old key keeps
    /// working for the grace period, then answers 401 "expired".
    Rotate {
        id: String,
        /// How long the old key keeps working (7d, 12h, 0s).
        #[arg(long, default_value = "7d", allow_hyphen_values = true)]
        grace: String,
        /// The successor's expiry (90d or RFC 3339); by default it keeps the old key's lifetime.
        #[arg(
            long,
            value_name = "90d|RFC3339",
            conflicts_with = "no_expiry",
            allow_hyphen_values = true
        )]
        expires: Option<String>,
        /// The successor never expires (drops the old key's expiry policy).
        #[arg(long)]
        no_expiry: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
}

// One value per process run (parsed from the command line): size differences between the
// variants cost nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client; a client secret is printed once.
    Create {
        /// Application (name or id).
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: Option<String>,
        /// A scope the client may be granted (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// How the client authenticates at the token endpoint.
        #[arg(long = "auth", value_parser = ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"], default_value = "client_secret_basic")]
        auth: String,
        /// The client's public keys (a JWK Set file) for private_key_jwt or
        /// self_signed_tls_client_auth.
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<std::path::PathBuf>,
        /// self_signed_tls_client_auth: the client's certificate (PEM); registered as a JWK with `x5c`.
        #[arg(long, value_name = "PEM", conflicts_with = "jwks_file")]
        cert_file: Option<std::path::PathBuf>,
        /// tls_client_auth: the certificate's subject DN in RFC 4514 form, e.g. "CN=billing,O=Example",
        /// as `openssl x509 -noout -subject -nameopt RFC2253 -in cert.pem` prints it (openssl's
        /// default "O = Example, CN = billing" is in reverse order and refused).
        #[arg(long, value_name = "DN", group = "tls_name")]
        tls_subject_dn: Option<String>,
        /// tls_client_auth: a DNS name in the certificate's subject alternative names.
        #[arg(long, value_name = "NAME", group = "tls_name")]
        tls_san_dns: Option<String>,
        /// tls_client_auth: a URI in the certificate's SANs (e.g. a SPIFFE id).
        #[arg(long, value_name = "URI", group = "tls_name")]
        tls_san_uri: Option<String>,
        /// tls_client_auth: an IP address in the certificate's SANs.
        #[arg(long, value_name = "IP", group = "tls_name")]
        tls_san_ip: Option<String>,
        /// tls_client_auth: an e-mail address in the certificate's SANs.
        #[arg(long, value_name = "EMAIL", group = "tls_name")]
        tls_san_email: Option<String>,
        /// Access-token lifetime (1s to 24h).
        #[arg(long, default_value = "5m")]
        token_ttl: String,
        /// Every token of this client must be DPoP-bound.
        #[arg(long)]
        dpop_bound: bool,
        #[command(flatten)]
        limits: LimitFlags,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List clients.
    List {
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Show a client (never its secret).
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Stop issuing tokens to a client.
    Disable {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Issue tokens to a disabled client again.
    Enable {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Delete a client and its secrets.
    Delete { id: String },
    /// Give a client a new secret; the previous one keeps working for the grace period.
    RotateSecret {
        id: String,
        #[arg(long, default_value = "24h", allow_hyphen_values = true)]
        grace: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Every upstream group (`[[upstreams]]`, and one `route.<name>.<i>` per URL route) and
    /// each target's health, requests in flight and recent failures.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// The signing keys in the JWKS (public parts only) and their state.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// A new signing key: published now, signing after `oauth.publish_delay`; the current one
    /// is then retired.
    Rotate {
        /// EdDSA, ES256 or RS256 (default: `oauth.signing_alg`).
        #[arg(long, value_parser = ["EdDSA", "ES256", "RS256"])]
        alg: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Stop signing with a key; it stays in the JWKS until its last token has expired.
    Retire { kid: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// A new admin token, printed once (only its digest is stored).
    Create {
        /// A unique name; the audit log records its changes as `admin:<name>`.
        #[arg(long)]
        name: String,
        /// `read`: GET only; `write`: everything except managing admin tokens.
        #[arg(long, value_parser = ["read", "write"])]
        role: String,
        /// Lifetime (`90d`); default: no expiry.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// The admin tokens (hints only) and their state.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke an admin token (by id or name); its next request is refused.
    Revoke { id: String },
}
