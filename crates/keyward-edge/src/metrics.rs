//! Prometheus metrics (`GET /metrics`, OpenMetrics text).
//!
//! Cardinality is bounded by construction: label values are configured route names (or
//! `unmatched`), HTTP status codes and fixed enums (the stable `Rejection::code()` set, grant
//! types, decisions). Nothing the client sends — path, header, key, token — is ever a label
//! value.
//!
//! Counters that live below the edge (the key cache, the Redis limiter and its breaker) are
//! read at scrape time by a [`Collector`], so the hot path pays nothing for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyward_engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests that matched no configured route.
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets (seconds): 100 µs to 10 s.
const BUCKETS: [f64; 15] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    outcome: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    grant: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The gateway's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily,
    upstream_duration: HistogramFamily,
    limiter: Family<DecisionLabel, Counter>,
    tokens: Family<TokenLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    routes: Gauge,
    in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every series, reading the engine's own counters at scrape time.
    pub fn new(engine: Arc<Engine>) -> Metrics {
        Metrics::build(engine, None)
    }

    /// [`Metrics::new`], plus the upstream targets' health and requests in flight, read from
    /// `status` at scrape time.
    pub fn with_upstreams(engine: Arc<Engine>, status: crate::gateway::UpstreamStatus) -> Metrics {
        Metrics::build(engine, Some(status))
    }

    fn build(engine: Arc<Engine>, upstreams: Option<crate::gateway::UpstreamStatus>) -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Gateway requests by configured route (or unmatched), outcome (allowed, upstream_error or the problem code) and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily = Family::new_with_constructor(histogram);
        registry.register(
            "gateway_request_duration_seconds",
            "Whole gateway requests, from arrival to response headers, by route",
            request_duration.clone(),
        );
        let upstream_duration: HistogramFamily = Family::new_with_constructor(histogram);
        registry.register(
            "upstream_duration_seconds",
            "Upstream requests, until the upstream's response headers, by route",
            upstream_duration.clone(),
        );
        let limiter = Family::<DecisionLabel, Counter>::default();
        registry.register(
            "limiter_decisions",
            "Limit decisions (gateway, verify API and forward-auth): allowed, rate_limited, quota_exhausted, unavailable",
            limiter.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "oauth_token_requests",
            "Token endpoint requests by grant type and outcome (issued or the OAuth error code)",
            tokens.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result",
            reloads.clone(),
        );
        let routes = Gauge::default();
        registry.register("routes", "Routes in the gateway's route table", routes.clone());
        let in_flight = Gauge::default();
        registry.register(
            "gateway_in_flight_requests",
            "Gateway requests being handled right now",
            in_flight.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { engine }));
        if let Some(status) = upstreams {
            registry.register_collector(Box::new(UpstreamCollector { status }));
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            limiter,
            tokens,
            reloads,
            routes,
            in_flight,
        }
    }

    /// The `gateway_requests` series of `route`, `outcome`, `status`.
    fn requests_of(&self, route: &str, outcome: &'static str, status: u16) -> Counter {
        let labels = RequestLabels {
            route: route.to_owned(),
            outcome,
            status,
        };
        self.requests.get_or_create(&labels).clone()
    }

    /// A duration histogram series of `route` in `family`.
    fn duration_of(family: &HistogramFamily, route: &str) -> Histogram {
        family
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone()
    }

    /// One finished gateway request of a configured route, through the route's own handles
    /// ([`RouteSeries`]): the series are looked up (label strings allocated, hashed, the family's
    /// lock taken) once per route table, not once per request. The same series as
    /// [`Metrics::request`] with the route's name.
    pub fn route_request(
        &self,
        series: &RouteSeries,
        route: &str,
        outcome: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        if outcome == "allowed" && status == 200 {
            series
                .0
                .allowed_ok
                .get_or_init(|| self.requests_of(route, outcome, status))
                .inc();
        } else {
            self.requests_of(route, outcome, status).inc();
        }
        series
            .0
            .duration
            .get_or_init(|| Self::duration_of(&self.request_duration, route))
            .observe(elapsed.as_secs_f64());
    }

    /// One upstream exchange of a configured route (see [`Metrics::route_request`]).
    pub fn route_upstream(&self, series: &RouteSeries, route: &str, elapsed: Duration) {
        series
            .0
            .upstream
            .get_or_init(|| Self::duration_of(&self.upstream_duration, route))
            .observe(elapsed.as_secs_f64());
    }

    /// One finished gateway request.
    pub fn request(&self, route: &str, outcome: &'static str, status: u16, elapsed: Duration) {
        self.requests_of(route, outcome, status).inc();
        Self::duration_of(&self.request_duration, route).observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, route: &str, elapsed: Duration) {
        Self::duration_of(&self.upstream_duration, route).observe(elapsed.as_secs_f64());
    }

    /// One limit decision: `allowed`, `rate_limited`, `quota_exhausted` or `unavailable`.
    pub fn limiter_decision(&self, decision: &'static str) {
        self.limiter.get_or_create(&DecisionLabel { decision }).inc();
    }

    /// One token request: `grant` is a fixed name (`client_credentials`, `token_exchange`,
    /// `other`), `outcome` `issued` or an OAuth error code.
    pub fn token_request(&self, grant: &'static str, outcome: &'static str) {
        self.tokens.get_or_create(&TokenLabels { grant, outcome }).inc();
    }

    /// A configuration reload: `applied` or `rejected`.
    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn set_routes(&self, n: usize) {
        self.routes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// The OpenMetrics text exposition of every series.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A route's handles on its own series (`gateway_requests` for `allowed`/200, the request and
/// upstream duration histograms), each taken from the [`Metrics`] families at its first use and
/// shared with them (a handle is the series itself, not a copy). Every route table starts with
/// empty ones ([`crate::gateway::Table`]), so a table's handles always belong to the metrics of
/// the gateway that serves it.
#[derive(Clone, Default)]
pub struct RouteSeries(Arc<SeriesCells>);

#[derive(Default)]
struct SeriesCells {
    allowed_ok: std::sync::OnceLock<Counter>,
    duration: std::sync::OnceLock<Histogram>,
    upstream: std::sync::OnceLock<Histogram>,
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries").finish_non_exhaustive()
    }
}

/// Decrements the in-flight gauge when dropped (also when the request is cancelled).
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the key cache's and the Redis limiter's counters at scrape time.
struct EngineCollector {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

/// What a per-target gauge reads from a target's status.
type TargetValue = fn(&keyward_upstream::TargetStatus) -> i64;

/// Reads the upstream groups' status at scrape time. Label values are configuration values
/// (group names, target URLs, which never carry credentials), never client input.
struct UpstreamCollector {
    status: crate::gateway::UpstreamStatus,
}

impl std::fmt::Debug for UpstreamCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCollector").finish_non_exhaustive()
    }
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let groups = (self.status)();
        let series: [(&str, &str, TargetValue); 2] = [
            (
                "upstream_target_healthy",
                "1 when the upstream target takes requests (neither ejected by passive health nor down by active health), else 0",
                |t| i64::from(t.healthy),
            ),
            (
                "upstream_target_in_flight",
                "Requests in flight to the upstream target right now",
                |t| i64::try_from(t.in_flight).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in series {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for g in &groups {
                for t in &g.targets {
                    let labels = [("group", g.name.as_str()), ("target", t.url.as_str())];
                    let metric = family.encode_family(&labels)?;
                    ConstGauge::new(value(t)).encode(metric)?;
                }
            }
        }
        Ok(())
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, *value)];
        let metric = family.encode_family(&labels)?;
        ConstCounter::new(*n).encode(metric)?;
    }
    Ok(())
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.engine.cache().stats();
        counter_family(
            &mut encoder,
            "key_cache_lookups",
            "Key cache lookups by result (hit, negative_hit, stale_hit, miss: read from the store)",
            "result",
            &[
                ("hit", load(&stats.hits)),
                ("negative_hit", load(&stats.negative_hits)),
                ("stale_hit", load(&stats.stale_hits)),
                ("miss", load(&stats.misses)),
            ],
        )?;
        let (sum, count, buckets) = stats.store_reads.snapshot();
        let metric = encoder.encode_descriptor(
            "store_lookup_duration_seconds",
            "Key lookups by digest in the store (cache misses)",
            None,
            MetricType::Histogram,
        )?;
        encode_histogram(metric, sum, count, &buckets)?;
        let (keys, unknown) = self.engine.cache().entries();
        let (tokens, revoked, proofs) = self.engine.token_cache_entries();
        let limits = u64::try_from(self.engine.limiter().local_entries()).unwrap_or(u64::MAX);
        {
            let mut family = encoder.encode_descriptor(
                "memory_entries",
                "Entries held in memory, by what they are (keys: cached key records, unknown_keys: \
                 the negative cache, tokens: verified access tokens, revoked_tokens: the denylist, \
                 dpop_proofs: proofs kept for replay detection, limit_states: local rate and quota state)",
                None,
                MetricType::Gauge,
            )?;
            for (what, n) in [
                ("keys", keys),
                ("unknown_keys", unknown),
                ("tokens", tokens),
                ("revoked_tokens", revoked),
                ("dpop_proofs", proofs),
                ("limit_states", limits),
            ] {
                let labels = [("cache", what)];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(metric)?;
            }
        }
        if let Some(r) = self.engine.limiter().redis() {
            let s = r.stats();
            let c = ConstCounter::new(load(&s.calls));
            let metric =
                encoder.encode_descriptor("redis_calls", "Calls to Redis (or attempts)", None, c.metric_type())?;
            c.encode(metric)?;
            counter_family(
                &mut encoder,
                "redis_failures",
                "Redis calls that failed, by kind (error, timeout, short_circuit: not made, breaker open)",
                "kind",
                &[
                    ("error", load(&s.errors)),
                    ("timeout", load(&s.timeouts)),
                    ("short_circuit", load(&s.short_circuits)),
                ],
            )?;
            counter_family(
                &mut encoder,
                "redis_fallback_decisions",
                "Limit decisions taken by a failure mode while Redis could not answer",
                "mode",
                &[
                    ("fail_open", load(&s.fail_open)),
                    ("fail_closed", load(&s.fail_closed)),
                    ("local", load(&s.local_fallback)),
                ],
            )?;
            let c = ConstCounter::new(load(&s.remembered_refusals));
            let metric = encoder.encode_descriptor(
                "redis_remembered_refusals",
                "Decisions refused during a Redis outage because Redis had refused the limit before (the local fallback keeps a used-up quota used up)",
                None,
                c.metric_type(),
            )?;
            c.encode(metric)?;
            let c = ConstCounter::new(load(&s.deny_received));
            let metric = encoder.encode_descriptor(
                "redis_denylist_received",
                "Token denylist entries received from other nodes",
                None,
                c.metric_type(),
            )?;
            c.encode(metric)?;
            let state = r.breaker_state().as_str();
            let mut family = encoder.encode_descriptor(
                "redis_breaker_state",
                "The Redis circuit breaker: 1 for the current state",
                None,
                MetricType::Gauge,
            )?;
            for s in ["closed", "open", "half_open"] {
                let labels = [("state", s)];
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(i64::from(s == state)).encode(metric)?;
            }
        }
        Ok(())
    }
}

fn encode_histogram(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), std::fmt::Error> {
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = keyward_store::SqliteStore::open(&dir.join("k.db")).await.unwrap();
        Arc::new(Engine::new(
            Arc::new(store),
            keyward_core::Pepper::from_text(&"ab".repeat(32)).unwrap(),
            keyward_core::KeyFormat::new("kw").unwrap(),
            Default::default(),
            Arc::new(keyward_engine::SystemClock),
        ))
    }

    /// A route's handles count into the very series `request` / `upstream` would, and a
    /// fresh set of handles (a new route table, another gateway) is tied to its own metrics.
    #[tokio::test]
    async fn route_handles_are_the_families_series() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path()).await;
        let (a, b) = (Metrics::new(e.clone()), Metrics::new(e));
        let series = RouteSeries::default();
        for _ in 0..3 {
            a.route_request(&series, "cats", "allowed", 200, Duration::from_millis(3));
        }
        a.route_request(&series, "cats", "invalid_credential", 401, Duration::from_micros(80));
        a.route_request(&series, "cats", "allowed", 201, Duration::from_millis(1));
        a.route_upstream(&series, "cats", Duration::from_millis(2));
        // The same series through the families.
        a.request("cats", "allowed", 200, Duration::from_millis(3));
        a.upstream("cats", Duration::from_millis(2));
        let text = a.render().unwrap();
        for line in [
            "keyward_gateway_requests_total{route=\"cats\",outcome=\"allowed\",status=\"200\"} 4",
            "keyward_gateway_requests_total{route=\"cats\",outcome=\"invalid_credential\",status=\"401\"} 1",
            "keyward_gateway_requests_total{route=\"cats\",outcome=\"allowed\",status=\"201\"} 1",
            "keyward_gateway_request_duration_seconds_count{route=\"cats\"} 6",
            "keyward_upstream_duration_seconds_count{route=\"cats\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // The other gateway's metrics saw nothing; with fresh handles they count their own.
        assert!(!b.render().unwrap().contains("route=\"cats\""));
        let fresh = RouteSeries::default();
        b.route_request(&fresh, "cats", "allowed", 200, Duration::from_millis(3));
        assert!(b
            .render()
            .unwrap()
            .contains("keyward_gateway_requests_total{route=\"cats\",outcome=\"allowed\",status=\"200\"} 1"));
        assert!(a
            .render()
            .unwrap()
            .contains("keyward_gateway_requests_total{route=\"cats\",outcome=\"allowed\",status=\"200\"} 4"));
    }

    #[tokio::test]
    async fn renders_every_family_with_bounded_labels() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(engine(dir.path()).await);
        m.request("cats", "allowed", 200, Duration::from_millis(3));
        m.request(UNMATCHED, "not_found", 404, Duration::from_micros(50));
        m.upstream("cats", Duration::from_millis(2));
        m.limiter_decision("allowed");
        m.token_request("client_credentials", "issued");
        m.reload("applied");
        m.set_routes(2);
        {
            let _g = m.in_flight();
        }
        let text = m.render().unwrap();
        for needle in [
            "keyward_gateway_requests_total{route=\"cats\",outcome=\"allowed\",status=\"200\"} 1",
            "keyward_gateway_requests_total{route=\"unmatched\",outcome=\"not_found\",status=\"404\"} 1",
            "keyward_gateway_request_duration_seconds_bucket{le=\"0.005\",route=\"cats\"} 1",
            "keyward_upstream_duration_seconds_count{route=\"cats\"} 1",
            "keyward_limiter_decisions_total{decision=\"allowed\"} 1",
            "keyward_oauth_token_requests_total{grant=\"client_credentials\",outcome=\"issued\"} 1",
            "keyward_config_reloads_total{result=\"applied\"} 1",
            "keyward_routes 2",
            "keyward_gateway_in_flight_requests 0",
            "keyward_key_cache_lookups_total{result=\"miss\"} 0",
            "keyward_store_lookup_duration_seconds_count 0",
            "keyward_memory_entries{cache=\"keys\"} 0",
            "keyward_memory_entries{cache=\"unknown_keys\"} 0",
            "keyward_memory_entries{cache=\"tokens\"} 0",
            "keyward_memory_entries{cache=\"revoked_tokens\"} 0",
            "keyward_memory_entries{cache=\"dpop_proofs\"} 0",
            "keyward_memory_entries{cache=\"limit_states\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[tokio::test]
    async fn upstream_targets_are_gauges_read_at_scrape_time() {
        use keyward_upstream::{GroupStatus, TargetStatus};
        let dir = tempfile::tempdir().unwrap();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        let status: crate::gateway::UpstreamStatus = Arc::new(move || {
            let t = |url: &str, healthy: bool, in_flight: usize| TargetStatus {
                url: url.to_owned(),
                healthy,
                ejected_until: None,
                active_down: false,
                recent_fails: 0,
                in_flight,
                protocol: "http1",
            };
            vec![GroupStatus {
                name: "pool".into(),
                balance: "round_robin",
                protocol: "http1",
                targets: vec![
                    t("http://10.0.0.1:9000", h.load(Ordering::Relaxed), 2),
                    t("http://10.0.0.2:9000", true, 0),
                ],
            }]
        });
        let m = Metrics::with_upstreams(engine(dir.path()).await, status);
        let text = m.render().unwrap();
        for needle in [
            "# TYPE keyward_upstream_target_healthy gauge",
            "keyward_upstream_target_healthy{group=\"pool\",target=\"http://10.0.0.1:9000\"} 1",
            "keyward_upstream_target_in_flight{group=\"pool\",target=\"http://10.0.0.1:9000\"} 2",
            "keyward_upstream_target_in_flight{group=\"pool\",target=\"http://10.0.0.2:9000\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        // The next scrape reads the status again.
        healthy.store(false, Ordering::Relaxed);
        let text = m.render().unwrap();
        assert!(
            text.contains("keyward_upstream_target_healthy{group=\"pool\",target=\"http://10.0.0.1:9000\"} 0"),
            "{text}"
        );
        // Without a status source, no upstream series at all.
        let other = tempfile::tempdir().unwrap();
        let plain = Metrics::new(engine(other.path()).await).render().unwrap();
        assert!(!plain.contains("upstream_target"), "{plain}");
    }
}
