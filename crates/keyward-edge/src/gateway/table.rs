//! The route table and the upstream groups it sends to, swapped whole on reload.

use std::sync::Arc;
use std::time::Duration;

use keyward_upstream::{GroupConfig, PoolOptions, Upstreams};

use super::{Route, UpstreamSpec};

/// The routes and the upstream groups they send to, installed and replaced together.
pub struct Table {
    pub routes: Vec<Route>,
    pub upstreams: Upstreams,
    /// `gateway.connect_timeout` and `gateway.upstream_timeout` (a route's own `timeout` and
    /// `connect_timeout` win): part of the table so that a reload applies them.
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// Some route names `hosts`: only then is the request's host worked out.
    pub any_hosts: bool,
}

/// Reads the upstream groups' status (`GET /v1/upstreams`, `/metrics`) from the table in force.
pub type UpstreamStatus = Arc<dyn Fn() -> Vec<keyward_upstream::GroupStatus> + Send + Sync>;

impl Table {
    /// Builds the groups (the named ones and one per URL route) and points every route at its
    /// group. Starts the groups' health checks (inside a tokio runtime).
    pub(super) fn build(
        mut routes: Vec<Route>,
        groups: &[GroupConfig],
        connect_timeout: Duration,
        upstream_timeout: Duration,
    ) -> Result<Table, String> {
        let mut all = groups.to_vec();
        for (i, r) in routes.iter().enumerate() {
            if let (UpstreamSpec::Url(u), Some(name)) = (&r.upstream.spec, r.upstream.group_name(&r.name, i)) {
                let mut g = GroupConfig::new(name, vec![u.clone()]);
                // One target: nothing to eject it for.
                g.max_fails = 0;
                let url = &r.options.url_upstream;
                g.protocol = url.protocol;
                g.ca_file.clone_from(&url.ca_file);
                g.server_name.clone_from(&url.server_name);
                g.client_cert_file.clone_from(&url.client_cert_file);
                g.client_key_file.clone_from(&url.client_key_file);
                all.push(g);
            }
        }
        let upstreams = Upstreams::build(&all, PoolOptions::default()).map_err(|e| e.to_string())?;
        for (i, r) in routes.iter_mut().enumerate() {
            // Fresh metric handles: taken from the metrics of the gateway serving this table.
            r.series = crate::metrics::RouteSeries::default();
            if let Some(name) = r.upstream.group_name(&r.name, i) {
                let group = upstreams.group(&name).ok_or_else(|| {
                    format!(
                        "routes.{}: upstream {name:?} is not an [[upstreams]] group (groups: {})",
                        r.name,
                        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })?;
                r.upstream.group = Some(group);
            }
        }
        Ok(Table {
            any_hosts: routes.iter().any(|r| !r.options.hosts.is_empty()),
            routes,
            upstreams,
            connect_timeout,
            upstream_timeout,
        })
    }
}

pub(super) fn status_of(table: &Arc<arc_swap::ArcSwap<Table>>) -> UpstreamStatus {
    let table = table.clone();
    Arc::new(move || table.load().upstreams.status())
}
