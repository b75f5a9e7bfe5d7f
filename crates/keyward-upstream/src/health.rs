//! Active health: one task per group sends `GET path` to every target every `interval`; a 2xx or
//! 3xx answer (body read) within `timeout` is a success. `unhealthy` consecutive failures mark a
//! target down, `healthy` consecutive successes bring it back. The task ends when the group is
//! dropped or the stop signal fires.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use http::uri::PathAndQuery;
use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::body::RequestBody;
use crate::config::HealthConfig;
use crate::group::Group;
use crate::pool::{SendOptions, Target};

pub(crate) fn spawn(group: &Arc<Group>, cfg: HealthConfig, mut stop: watch::Receiver<bool>) {
    let weak: Weak<Group> = Arc::downgrade(group);
    let Ok(path) = cfg.path.parse::<PathAndQuery>() else {
        // validate() refused such paths already.
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return;
                    }
                    continue;
                }
            }
            let Some(group) = weak.upgrade() else { return };
            let mut probes = tokio::task::JoinSet::new();
            for t in group.targets.iter() {
                let t = Arc::clone(t);
                let path = path.clone();
                let cfg = cfg.clone();
                let name = group.name().to_owned();
                probes.spawn(async move { probe(&name, &t, &path, &cfg).await });
            }
            drop(group);
            while probes.join_next().await.is_some() {}
        }
    });
}

async fn probe(group: &str, t: &Arc<Target>, path: &PathAndQuery, cfg: &HealthConfig) {
    let ok = probe_once(t, path, cfg).await;
    if ok {
        t.active_bad.store(0, Ordering::Relaxed);
        let n = t.active_ok.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= cfg.healthy && t.active_down.swap(false, Ordering::Relaxed) {
            tracing::info!(group, target = %t.url, "upstream target healthy again (active health)");
        }
    } else {
        t.active_ok.store(0, Ordering::Relaxed);
        let n = t.active_bad.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= cfg.unhealthy && !t.active_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(group, target = %t.url, "upstream target unhealthy (active health)");
        }
    }
}

async fn probe_once(t: &Arc<Target>, path: &PathAndQuery, cfg: &HealthConfig) -> bool {
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = http::Uri::from(path.clone());
    let opts = SendOptions {
        connect_timeout: cfg.timeout,
        timeout: cfg.timeout,
        hash_key: None,
        strip_prefix: None,
    };
    let work = async {
        match t.send(req, path, &opts).await {
            Ok(resp) => {
                let good = resp.status().is_success() || resp.status().is_redirection();
                good && resp.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        }
    };
    tokio::time::timeout(cfg.timeout, work).await.unwrap_or(false)
}
