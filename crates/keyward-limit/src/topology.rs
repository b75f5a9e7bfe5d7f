//! How keyward reaches Redis: one endpoint, Redis Cluster or Sentinel, each with or without TLS.
//!
//! - **One endpoint** (`redis.url`): a [`ConnectionManager`] that reconnects by itself.
//! - **Redis Cluster** (`redis.cluster_nodes`): the redis crate's cluster client (`MOVED` and
//!   `ASK` redirects, slot map refreshed when the cluster changes, a promoted replica followed).
//!   Pub/sub goes through one node (classic `PUBLISH` reaches every node of a cluster), the next
//!   seed when that node is lost.
//! - **Sentinel** (`redis.sentinel_nodes` + `redis.sentinel_master`): the master is asked from
//!   the sentinels (and its role checked), and asked again after a call on it failed (lost
//!   connection, timeout, `READONLY` from a demoted master), so a failover is followed without
//!   a restart.
//!
//! TLS (`rediss://`) is rustls with the graph's one provider (aws-lc-rs): the CA of
//! `redis.ca_file` (else the system's roots), the server name checked, an optional client
//! certificate. [`Link::startup_check`] is what `serve` runs before it accepts traffic: a
//! certificate that does not verify, a cluster that no seed answers for or whose slots are not all
//! served, sentinels that do not know the master: each is a clear start-up error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// `redis.url`: one endpoint.
    Single(String),
    /// `redis.cluster_nodes`: seeds of a Redis Cluster.
    Cluster(Vec<String>),
    /// `redis.sentinel_nodes` and `redis.sentinel_master`.
    Sentinel { nodes: Vec<String>, master: String },
}

impl Default for Topology {
    fn default() -> Self {
        Topology::Single("redis://127.0.0.1:6379/".into())
    }
}

impl Topology {
    /// The URLs of the configuration (for the scheme checks).
    fn urls(&self) -> Vec<&str> {
        match self {
            Topology::Single(u) => vec![u.as_str()],
            Topology::Cluster(n) | Topology::Sentinel { nodes: n, .. } => n.iter().map(String::as_str).collect(),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }

    /// `"single"`, `"cluster"` or `"sentinel"` (health output).
    pub fn kind(&self) -> &'static str {
        match self {
            Topology::Single(_) => "single",
            Topology::Cluster(_) => "cluster",
            Topology::Sentinel { .. } => "sentinel",
        }
    }
}

/// TLS material for `rediss://` URLs, as PEM (read by the configuration layer).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// `redis.ca_file`: the roots to verify the servers with (none: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// `redis.client_cert_file` and `redis.client_key_file`: a client certificate chain and
    /// its private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client.is_none()
    }

    /// Checks the PEM up front, so that a bad file is named at start rather than failing each
    /// connection later.
    fn check(&self) -> Result<(), String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        if let Some(ca) = &self.ca_pem {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(ca).collect();
            match certs {
                Ok(c) if !c.is_empty() => {}
                Ok(_) => return Err("redis.ca_file holds no PEM certificate".into()),
                Err(e) => return Err(format!("redis.ca_file is not valid PEM: {e}")),
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca).flatten() {
                roots
                    .add(c)
                    .map_err(|e| format!("redis.ca_file holds a certificate that is not a valid trust anchor: {e}"))?;
            }
        }
        if let Some((cert, key)) = &self.client {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(cert).collect();
            match certs {
                Ok(c) if !c.is_empty() => {}
                Ok(_) => return Err("redis.client_cert_file holds no PEM certificate".into()),
                Err(e) => return Err(format!("redis.client_cert_file is not valid PEM: {e}")),
            }
            // The parser's error names the PEM section, never the key's bytes.
            PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("redis.client_key_file holds no usable private key: {e}"))?;
        }
        Ok(())
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client.as_ref().map(|(c, k)| ClientTlsConfig {
                client_cert: c.clone(),
                client_key: k.clone(),
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// The kind of a Redis error only: a Redis error's text may quote a key or a URL.
pub(crate) fn kind_of(e: &RedisError) -> String {
    format!("{:?}", e.kind())
}

/// How rustls' errors begin (`rustls::Error`'s `Display`), to recognise one turned into text.
const TLS_MARKERS: &[&str] = &[
    "invalid peer certificate",
    "received fatal alert",
    "peer is incompatible",
    "peer misbehaved",
    "no certificates presented",
    "invalid certificate",
];

/// Why a connection could not be made or a call failed, fit for logs and `/readyz`: the TLS
/// problem when there is one (`tls: invalid peer certificate: UnknownIssuer`), else the
/// error's kind. Never a URL or a password.
pub fn describe(e: &RedisError) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<rustls::Error>() {
            return format!("tls: {t}");
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return format!("tls: {t}");
            }
            // The connection manager hands out copies of a failed reconnection's error, with
            // the rustls error turned into text ("…: invalid peer certificate: UnknownIssuer").
            let text = io.to_string();
            for marker in TLS_MARKERS {
                if let Some(at) = text.find(marker) {
                    return format!("tls: {}", &text[at..]);
                }
            }
        }
        source = s.source();
    }
    if e.kind() == ErrorKind::IoError {
        let text = e.to_string();
        for marker in TLS_MARKERS {
            if let Some(at) = text.find(marker) {
                return format!("tls: {}", &text[at..]);
            }
        }
    }
    // A server error's code (`NOAUTH`, `READONLY`, `CLUSTERDOWN` …), never its message (which
    // may quote a key).
    if let Some(code) = e.code() {
        let code: String = code.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
        return format!("server error {code}");
    }
    match e.kind() {
        ErrorKind::IoError => {
            let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
            match io {
                Some(io) => format!("io: {}", io.kind()),
                None => "io".into(),
            }
        }
        ErrorKind::AuthenticationFailed => "authentication failed".into(),
        ErrorKind::InvalidClientConfig => "invalid client configuration".into(),
        k => format!("{k:?}"),
    }
}

/// Whether `e` is a TLS failure (certificate, name, handshake): a configuration problem that
/// waiting does not cure.
pub fn is_tls(e: &RedisError) -> bool {
    describe(e).starts_with("tls:")
}

/// One connection, whatever the topology; cheap to clone (all are multiplexed).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The master found through the sentinels, with the generation it was found in.
    Sentinel(u64, MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(_, c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(_, c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_, c) => c.get_db(),
        }
    }
}

enum Backend {
    Single {
        client: Client,
        conn: tokio::sync::OnceCell<ConnectionManager>,
    },
    Cluster {
        client: ClusterClient,
        conn: tokio::sync::OnceCell<ClusterConnection>,
        /// One client per seed, for pub/sub.
        seeds: Vec<Client>,
    },
    Sentinel {
        master: String,
        sentinels: tokio::sync::Mutex<SentinelClient>,
        current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
        generation: AtomicU64,
    },
}

/// Bound on making the denylist's pub/sub connection (see [`Link::pubsub`]).
const PUBSUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A way to Redis (see the module documentation).
pub(crate) struct Link {
    backend: Backend,
    topology: Topology,
    /// Bound on connecting (at least 200 ms: a TLS handshake on a loaded machine).
    connect_timeout: Duration,
}

/// Parses one URL of the configuration, naming the key it came from.
fn parse(url: &str, key: &str) -> Result<ConnectionInfo, String> {
    let info = url
        .into_connection_info()
        .map_err(|e| format!("{key}: not a redis:// or rediss:// URL ({})", kind_of(&e)))?;
    match &info.addr {
        ConnectionAddr::Unix(_) => Err(format!("{key}: a unix socket is not supported here")),
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(format!(
            "{key}: #insecure (no certificate verification) is refused; give the CA in redis.ca_file"
        )),
        _ => Ok(info),
    }
}

impl Link {
    pub(crate) fn new(topology: &Topology, tls: &RedisTls, timeout: Duration) -> Result<Link, String> {
        let key = match topology {
            Topology::Single(_) => "redis.url",
            Topology::Cluster(_) => "redis.cluster_nodes",
            Topology::Sentinel { .. } => "redis.sentinel_nodes",
        };
        let urls = topology.urls();
        if urls.is_empty() {
            return Err(format!("{key} is empty"));
        }
        let infos = urls.iter().map(|u| parse(u, key)).collect::<Result<Vec<_>, _>>()?;
        let secure = |i: &ConnectionInfo| matches!(i.addr, ConnectionAddr::TcpTls { .. });
        let tls_on = secure(&infos[0]);
        if infos.iter().any(|i| secure(i) != tls_on) {
            return Err(format!("{key}: mixes redis:// and rediss:// URLs"));
        }
        if !tls_on && !tls.is_empty() {
            return Err(format!(
                "redis.ca_file and redis.client_cert_file apply to rediss:// URLs only ({key} is redis://)"
            ));
        }
        tls.check()?;
        let connect_timeout = timeout.max(Duration::from_millis(200));
        let certs = (tls_on && !tls.is_empty()).then(|| tls.certificates());
        let client_for = |info: ConnectionInfo| -> Result<Client, String> {
            match &certs {
                Some(c) => Client::build_with_tls(info, c.clone()),
                None => Client::open(info),
            }
            .map_err(|e| format!("{key}: {}", describe(&e)))
        };
        let backend = match topology {
            Topology::Single(_) => Backend::Single {
                client: client_for(infos[0].clone())?,
                conn: tokio::sync::OnceCell::new(),
            },
            Topology::Cluster(_) => {
                let mut b = ClusterClientBuilder::new(infos.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(connect_timeout)
                    // Redirects and a refreshed slot map are followed at once; past a couple
                    // of quick retries the call fails and the route's failure mode answers.
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(c) = &certs {
                    b = b.certs(c.clone());
                }
                Backend::Cluster {
                    client: b.build().map_err(|e| format!("{key}: {}", describe(&e)))?,
                    conn: tokio::sync::OnceCell::new(),
                    seeds: infos.into_iter().map(client_for).collect::<Result<_, _>>()?,
                }
            }
            Topology::Sentinel { master, .. } => {
                if master.is_empty() {
                    return Err("redis.sentinel_master must name the master the sentinels watch".into());
                }
                // The first URL's user, password and database apply to the sentinels and to
                // the master alike.
                let first = &infos[0].redis;
                let mut b = SentinelClientBuilder::new(
                    infos.iter().map(|i| i.addr.clone()),
                    master.clone(),
                    SentinelServerType::Master,
                )
                .map_err(|e| format!("{key}: {}", describe(&e)))?
                .set_client_to_redis_db(first.db);
                if let Some(u) = &first.username {
                    b = b
                        .set_client_to_redis_username(u.clone())
                        .set_client_to_sentinel_username(u.clone());
                }
                if let Some(p) = &first.password {
                    b = b
                        .set_client_to_redis_password(p.clone())
                        .set_client_to_sentinel_password(p.clone());
                }
                if tls_on {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(c) = &certs {
                        b = b
                            .set_client_to_redis_certificates(c.clone())
                            .set_client_to_sentinel_certificates(c.clone());
                    }
                }
                Backend::Sentinel {
                    master: master.clone(),
                    sentinels: tokio::sync::Mutex::new(b.build().map_err(|e| format!("{key}: {}", describe(&e)))?),
                    current: std::sync::Mutex::new(None),
                    generation: AtomicU64::new(0),
                }
            }
        };
        Ok(Link {
            backend,
            topology: topology.clone(),
            connect_timeout,
        })
    }

    fn node_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.connect_timeout)
    }

    /// A connection (made on first use, then shared).
    pub(crate) async fn get(&self) -> RedisResult<Conn> {
        match &self.backend {
            Backend::Single { client, conn } => conn
                .get_or_try_init(|| {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_number_of_retries(2)
                        .set_max_delay(200);
                    ConnectionManager::new_with_config(client.clone(), cfg)
                })
                .await
                .cloned()
                .map(Conn::Single),
            Backend::Cluster { client, conn, .. } => conn
                .get_or_try_init(|| client.get_async_connection())
                .await
                .cloned()
                .map(Conn::Cluster),
            Backend::Sentinel {
                sentinels,
                current,
                generation,
                ..
            } => {
                if let Some((g, c)) = lock(current).clone() {
                    return Ok(Conn::Sentinel(g, c));
                }
                // One lookup at a time; whoever waited finds the new connection.
                let mut s = sentinels.lock().await;
                if let Some((g, c)) = lock(current).clone() {
                    return Ok(Conn::Sentinel(g, c));
                }
                let client = s.async_get_client().await?;
                drop(s);
                let c = client
                    .get_multiplexed_async_connection_with_config(&self.node_config())
                    .await?;
                let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                *lock(current) = Some((g, c.clone()));
                tracing::debug!(generation = g, "redis master found through the sentinels");
                Ok(Conn::Sentinel(g, c))
            }
        }
    }

    /// A call on `conn` failed (`err`, or a timeout when `None`). With Sentinel, a lost
    /// connection, a timeout or a `READONLY` answer (a demoted master) makes the next call ask
    /// the sentinels again. The other topologies reconnect by themselves.
    pub(crate) fn failed(&self, generation: u64, err: Option<&RedisError>) {
        let Backend::Sentinel { current, .. } = &self.backend else {
            return;
        };
        let forget = match err {
            None => true,
            Some(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(
                        e.kind(),
                        ErrorKind::ReadOnly | ErrorKind::MasterDown | ErrorKind::TryAgain
                    )
            }
        };
        if forget {
            let mut cur = lock(current);
            if cur.as_ref().is_some_and(|(g, _)| *g == generation) {
                *cur = None;
                tracing::debug!(
                    generation,
                    "redis master connection dropped; asking the sentinels again"
                );
            }
        }
    }

    /// A pub/sub connection: to the endpoint, to the first cluster seed that answers, or to
    /// the master the sentinels name. Bounded by [`PUBSUB_CONNECT_TIMEOUT`] (or the connect
    /// timeout when longer), not by the request path's budget: the denylist's subscriber runs
    /// in the background, and a subscription that failed waits a second before it is tried
    /// again, so a bound that a busy node cannot meet (a few round trips, a TLS handshake)
    /// would keep revocations from reaching it for as long as the node is busy.
    pub(crate) async fn pubsub(&self) -> RedisResult<::redis::aio::PubSub> {
        let bound = self.connect_timeout.max(PUBSUB_CONNECT_TIMEOUT);
        let bounded = |c: Client| async move {
            match tokio::time::timeout(bound, c.get_async_pubsub()).await {
                Ok(r) => r,
                Err(_) => Err(RedisError::from((ErrorKind::IoError, "pub/sub connection timed out"))),
            }
        };
        match &self.backend {
            Backend::Single { client, .. } => bounded(client.clone()).await,
            Backend::Cluster { seeds, .. } => {
                let mut last = RedisError::from((ErrorKind::IoError, "no cluster seed"));
                for s in seeds {
                    match bounded(s.clone()).await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Backend::Sentinel { sentinels, .. } => {
                let client = sentinels.lock().await.async_get_client().await?;
                bounded(client).await
            }
        }
    }

    /// `SCAN` over the keys of `tag` (all in one slot): under Cluster, on the master that
    /// serves the slot of the tag.
    pub(crate) async fn scan(
        &self,
        conn: &mut Conn,
        tag: &str,
        cursor: u64,
        pattern: &str,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
        match conn {
            Conn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                    key_slot(tag.as_bytes()),
                    SlotAddr::Master,
                )));
                let v = c.route_command(&cmd, route).await?;
                ::redis::from_redis_value(&v)
            }
            other => cmd.query_async(other).await,
        }
    }

    /// What `serve` checks before it accepts traffic, within `budget`:
    ///
    /// - every topology: a TLS failure (unknown CA, wrong name, expired certificate, refused
    ///   client certificate) is an error;
    /// - Cluster: some seed must answer, and every one of the 16384 slots must be served;
    /// - Sentinel: some sentinel must answer and know a healthy master by that name.
    ///
    /// One endpoint that cannot be reached is not an error (keyward starts and follows the
    /// routes' failure modes until it is back); `Ok` carries a warning then.
    pub(crate) async fn startup_check(&self, budget: Duration) -> Result<Option<String>, String> {
        let r = tokio::time::timeout(budget, self.startup_check_inner()).await;
        match r {
            Ok(r) => r,
            Err(_) => match &self.topology {
                Topology::Single(_) => Ok(Some(format!(
                    "redis did not answer within {budget:?}; starting anyway (routes follow on_limiter_failure)"
                ))),
                Topology::Cluster(_) => Err(format!("no redis.cluster_nodes seed answered within {budget:?}")),
                Topology::Sentinel { .. } => Err(format!(
                    "the sentinels did not name a reachable master within {budget:?}"
                )),
            },
        }
    }

    async fn startup_check_inner(&self) -> Result<Option<String>, String> {
        match &self.backend {
            Backend::Single { client, .. } => {
                // A plain connection of its own: the shared one keeps retrying in the
                // background and would hide the reason.
                match client
                    .get_multiplexed_async_connection_with_config(&self.node_config())
                    .await
                {
                    Ok(mut c) => {
                        let _: String = ::redis::cmd("PING")
                            .query_async(&mut c)
                            .await
                            .map_err(|e| format!("redis.url: PING failed: {}", describe(&e)))?;
                        Ok(None)
                    }
                    Err(e) if is_tls(&e) => Err(format!("redis.url: {}", describe(&e))),
                    Err(e) if e.kind() == ErrorKind::AuthenticationFailed => {
                        Err("redis.url: authentication failed".into())
                    }
                    Err(e) => Ok(Some(format!(
                        "redis is unreachable ({}); starting anyway (routes follow on_limiter_failure)",
                        describe(&e)
                    ))),
                }
            }
            Backend::Cluster { seeds, client, conn } => {
                // Each seed on its own first, to say which ones fail and why.
                let mut answered = None;
                let mut failures = Vec::new();
                for (i, s) in seeds.iter().enumerate() {
                    let addr = self.topology.urls().get(i).map(|u| host_port(u)).unwrap_or_default();
                    match s
                        .get_multiplexed_async_connection_with_config(&self.node_config())
                        .await
                    {
                        Ok(c) if answered.is_none() => answered = Some(c),
                        Ok(_) => {}
                        Err(e) if is_tls(&e) => return Err(format!("redis.cluster_nodes: {addr}: {}", describe(&e))),
                        Err(e) => failures.push(format!("{addr}: {}", describe(&e))),
                    }
                }
                let Some(mut c) = answered else {
                    return Err(format!(
                        "redis.cluster_nodes: no seed answered ({})",
                        failures.join("; ")
                    ));
                };
                let slots: Value = ::redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("redis.cluster_nodes: CLUSTER SLOTS failed: {}", describe(&e)))?;
                let missing = uncovered(&slots);
                if !missing.is_empty() {
                    return Err(format!(
                        "redis.cluster_nodes: the cluster does not serve every slot (missing: {}); \
                         finish the cluster's setup (redis-cli --cluster fix)",
                        missing.join(", ")
                    ));
                }
                // The connection the limiter uses, made now: its slot map is complete.
                conn.get_or_try_init(|| client.get_async_connection())
                    .await
                    .map_err(|e| format!("redis.cluster_nodes: {}", describe(&e)))?;
                Ok((!failures.is_empty())
                    .then(|| format!("some redis.cluster_nodes seeds did not answer: {}", failures.join("; "))))
            }
            Backend::Sentinel { master, sentinels, .. } => {
                let mut s = sentinels.lock().await;
                let client = s.async_get_client().await.map_err(|e| {
                    if is_tls(&e) {
                        format!("redis.sentinel_nodes: {}", describe(&e))
                    } else if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
                        format!("redis.sentinel_master: the sentinels know no healthy master named {master:?}")
                    } else {
                        format!("redis.sentinel_nodes: no sentinel named a master ({})", describe(&e))
                    }
                })?;
                drop(s);
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&self.node_config())
                    .await
                    .map_err(|e| format!("redis master of {master:?}: {}", describe(&e)))?;
                let _: String = ::redis::cmd("PING")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("redis master of {master:?}: PING failed: {}", describe(&e)))?;
                Ok(None)
            }
        }
    }
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// `host:port` of a URL, without credentials (for messages).
fn host_port(url: &str) -> String {
    match url.into_connection_info() {
        Ok(i) => match i.addr {
            ConnectionAddr::Tcp(h, p) | ConnectionAddr::TcpTls { host: h, port: p, .. } => format!("{h}:{p}"),
            ConnectionAddr::Unix(_) => "unix socket".into(),
        },
        Err(_) => "an invalid URL".into(),
    }
}

/// The slot ranges that no master serves, from a `CLUSTER SLOTS` answer ("0-5460" …).
pub(crate) fn uncovered(slots: &Value) -> Vec<String> {
    let mut covered = vec![false; 16384];
    if let Value::Array(ranges) = slots {
        for r in ranges {
            if let Value::Array(fields) = r {
                if let (Some(Value::Int(a)), Some(Value::Int(b))) = (fields.first(), fields.get(1)) {
                    let (a, b) = ((*a).clamp(0, 16383) as usize, (*b).clamp(0, 16383) as usize);
                    for c in covered.iter_mut().take(b + 1).skip(a) {
                        *c = true;
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < covered.len() {
        if covered[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < covered.len() && !covered[i] {
            i += 1;
        }
        out.push(if i - 1 == start {
            format!("{start}")
        } else {
            format!("{start}-{}", i - 1)
        });
    }
    out
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (or of the whole key), mod
/// 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').map(|close| &rest[..close])
        })
        .filter(|t| !t.is_empty());
    let data = tagged.unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` and the Redis Cluster specification.
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        // An empty tag: the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn uncovered_ranges_are_named() {
        let r = |a: i64, b: i64| Value::Array(vec![Value::Int(a), Value::Int(b)]);
        assert!(uncovered(&Value::Array(vec![r(0, 5460), r(5461, 10922), r(10923, 16383)])).is_empty());
        assert_eq!(
            uncovered(&Value::Array(vec![r(0, 5460), r(10923, 16382)])),
            vec!["5461-10922".to_owned(), "16383".to_owned()]
        );
        assert_eq!(uncovered(&Value::Nil), vec!["0-16383".to_owned()]);
    }

    #[test]
    fn bad_topologies_are_refused_with_the_key_named() {
        let t = Duration::from_millis(50);
        let none = RedisTls::default();
        let err = |topo: Topology, tls: &RedisTls| Link::new(&topo, tls, t).err().unwrap();
        assert!(err(Topology::Cluster(vec![]), &none).contains("redis.cluster_nodes is empty"));
        assert!(err(Topology::Cluster(vec!["http://x:1".into()]), &none).contains("redis.cluster_nodes"));
        assert!(err(
            Topology::Cluster(vec!["redis://a:1".into(), "rediss://b:2".into()]),
            &none
        )
        .contains("mixes"));
        assert!(err(Topology::Single("rediss://a:1/#insecure".into()), &none).contains("#insecure"));
        let ca = RedisTls {
            ca_pem: Some(b"not pem".to_vec()),
            client: None,
        };
        assert!(err(Topology::Single("redis://a:1".into()), &ca).contains("rediss://"));
        assert!(err(Topology::Single("rediss://a:1".into()), &ca).contains("redis.ca_file"));
        let key = RedisTls {
            ca_pem: None,
            client: Some((
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                b"secret-bytes".to_vec(),
            )),
        };
        let e = err(Topology::Single("rediss://a:1".into()), &key);
        assert!(e.contains("redis.client_key_file"), "{e}");
        assert!(!e.contains("secret-bytes"));
        assert!(!format!("{key:?}").contains("secret"));
        assert!(err(
            Topology::Sentinel {
                nodes: vec!["redis://a:1".into()],
                master: String::new()
            },
            &none
        )
        .contains("sentinel_master"));
        assert!(Link::new(
            &Topology::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()]),
            &none,
            t
        )
        .is_ok());
    }
}
