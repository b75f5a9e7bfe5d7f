//! OpenTelemetry trace export (`[telemetry]`, cargo feature `otel`).
//!
//! With the feature and `telemetry.otlp_endpoint` set, `serve` adds a tracing-opentelemetry
//! layer to the subscriber: every span at `info` or above (the request span with its
//! `request_id`, `method`, `route`, `outcome` and `status`, and what runs inside it) is exported
//! as OTLP over HTTP/protobuf to `{otlp_endpoint}/v1/traces` by a batch processor on its own
//! thread. [`Guard::shutdown`] flushes what is still queued when `serve` returns.
//!
//! Without the feature, `serve` refuses to start when `otlp_endpoint` is set (see
//! `server::start_on`), rather than silently export nothing.

use crate::config::TelemetrySection;

/// What `serve` was asked to export to, read before the subscriber is installed.
#[derive(Debug, Clone)]
pub struct Export {
    /// The collector's base URL (`/v1/traces` is appended).
    pub endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
}

impl Export {
    /// The export a `[telemetry]` section asks for, if any.
    pub fn from_config(t: &TelemetrySection) -> Option<Export> {
        t.otlp_endpoint.as_ref().map(|endpoint| Export {
            endpoint: endpoint.clone(),
            service_name: t.service_name.clone(),
        })
    }

    /// The OTLP/HTTP traces URL.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing::Subscriber;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::Export;

    /// Keeps the tracer provider; [`Guard::shutdown`] flushes the queued spans.
    #[derive(Debug)]
    pub struct Guard {
        provider: SdkTracerProvider,
    }

    impl Guard {
        /// Exports what is still queued and stops the batch processor.
        pub fn shutdown(self) {
            // Logged (JSON with JSON logs), like everything `serve` writes.
            if let Err(e) = self.provider.force_flush() {
                tracing::warn!(error = %e, "OpenTelemetry flush failed");
            }
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "OpenTelemetry shutdown failed");
            }
        }
    }

    /// The layer exporting spans (`info` and above, whatever `KEYWARD_LOG` says) and its guard.
    /// Call outside any tokio runtime: the exporter's blocking HTTP client has its own.
    pub fn layer<S>(export: &Export) -> Result<(impl Layer<S> + Send + Sync, Guard), String>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let url = export.traces_url();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint {url}: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(export.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("keyward");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(LevelFilter::INFO);
        Ok((layer, Guard { provider }))
    }
}

#[cfg(feature = "otel")]
pub use otel::{layer, Guard};

/// Without the `otel` feature there is nothing to flush (and `serve` refuses `otlp_endpoint`).
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
pub struct Guard;

#[cfg(not(feature = "otel"))]
impl Guard {
    /// Nothing to flush.
    pub fn shutdown(self) {}
}

/// Built with OpenTelemetry export (the `otel` feature)?
pub const ENABLED: bool = cfg!(feature = "otel");

/// Why `serve` refuses `otlp_endpoint` in a build without the `otel` feature.
pub const NOT_BUILT: &str =
    "telemetry.otlp_endpoint is set, but keyward was built without the otel feature: cargo build --features otel";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        let e = |endpoint: &str| Export {
            endpoint: endpoint.into(),
            service_name: "keyward".into(),
        };
        assert_eq!(
            e("http://collector:4318").traces_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            e("http://collector:4318/").traces_url(),
            "http://collector:4318/v1/traces"
        );
    }
}
