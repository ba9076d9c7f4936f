//! Logging and traces.
//!
//! Logs: `RUST_LOG` filters (default `info`), `WHARF_LOG_FORMAT=json` for log shippers. Logs go to
//! stderr so that stdout stays for command output (`keys create`).
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the
//! long-lived roles (`serve`, `api`, `worker`, `scheduler`) also export their spans over OTLP
//! http/protobuf, batched on the tokio runtime, as service `wharf-<role>` unless `OTEL_SERVICE_NAME`
//! (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise. Unset, no OpenTelemetry layer
//! is installed at all. The API's request span and each job attempt's span join the trace of the
//! request's `traceparent` (api/src/trace.rs, workers/src/runtime/pool.rs).

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    resource::{EnvResourceDetector, ResourceDetector, TelemetryResourceDetector},
    runtime,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_subscriber::{EnvFilter, Layer, filter::filter_fn, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// The OTLP HTTP timeout the specification gives when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long exit waits for the last spans to reach the collector.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(5);

/// Installed telemetry; [`Telemetry::shutdown`] flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs logging for every command, and trace export for the long-lived `role`s when the
/// OTEL_* variables ask for it. An invalid OTEL_* value is an error naming the variable.
pub fn init(role: Option<&str>) -> Result<Telemetry> {
    let provider = match role {
        Some(role) => export_settings(|k| std::env::var(k).ok())?.map(|s| tracer_provider(role, &s)).transpose()?,
        None => None,
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,opentelemetry=warn,opentelemetry_sdk=warn"));
    let json = std::env::var("WHARF_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("wharf"))
            // The SDK's own diagnostics are logged, never turned into span events.
            .with_filter(filter_fn(|m| !m.target().starts_with("opentelemetry")))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| fmt::layer().json().with_writer(std::io::stderr)))
        .with((!json).then(|| fmt::layer().with_writer(std::io::stderr)))
        .with(otel)
        .init();
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still buffered (waiting at most [`FLUSH_ON_EXIT`]) and stops exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The SDK blocks the calling thread until the batch task (on this runtime) has exported:
        // a thread of its own keeps that from stalling a runtime worker.
        let (done, flushed) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = done.send(provider.shutdown());
        });
        match tokio::time::timeout(FLUSH_ON_EXIT, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("wharf: exporting the last spans failed: {e}"),
            Ok(Err(_)) => eprintln!("wharf: exporting the last spans failed: the exporter stopped"),
            Err(_) => eprintln!("wharf: the last spans were not exported within {FLUSH_ON_EXIT:?}"),
        }
    }
}

/// What the OTEL_* variables ask of trace export.
#[derive(Debug, PartialEq)]
struct ExportSettings {
    /// Per export request (and the budget of its retries).
    timeout: Duration,
}

/// `None`: no export (no endpoint set, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
fn export_settings(get: impl Fn(&str) -> Option<String>) -> Result<Option<ExportSettings>> {
    let var = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    // The signal-specific variable wins over the general one, as the specification says.
    let first = |keys: [&'static str; 2]| keys.into_iter().find_map(|k| var(k).map(|v| (k, v)));

    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER={other}: wharf exports traces with `otlp` (or `none`)"),
    }
    if first(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]).is_none() {
        return Ok(None);
    }
    if let Some((k, v)) = first(["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"])
        && v != "http/protobuf"
    {
        bail!("{k}={v}: wharf exports OTLP over http/protobuf only (the collector's OTLP/HTTP port, usually 4318)");
    }
    let timeout = match first(["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]) {
        None => DEFAULT_EXPORT_TIMEOUT,
        Some((k, v)) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => bail!("{k}={v}: expected a positive number of milliseconds"),
        },
    };
    Ok(Some(ExportSettings { timeout }))
}

/// The provider exporting over OTLP/HTTP: endpoint and headers from the standard variables
/// (read by opentelemetry-otlp), sampler and batch limits from `OTEL_TRACES_SAMPLER` and
/// `OTEL_BSP_*` (read by the SDK).
fn tracer_provider(role: &str, settings: &ExportSettings) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http_client(settings.timeout)?)
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.timeout)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_HEADERS")?;
    let batches = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    Ok(SdkTracerProvider::builder().with_span_processor(batches).with_resource(resource(role)).build())
}

/// `service.name` `wharf-<role>` and `service.version`, overridden by `OTEL_RESOURCE_ATTRIBUTES`,
/// then by `OTEL_SERVICE_NAME`.
fn resource(role: &str) -> Resource {
    let detectors: [Box<dyn ResourceDetector>; 2] =
        [Box::new(TelemetryResourceDetector), Box::new(EnvResourceDetector::new())];
    let builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", format!("wharf-{role}")),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .with_detectors(&detectors);
    match std::env::var("OTEL_SERVICE_NAME").ok().filter(|v| !v.trim().is_empty()) {
        Some(name) => builder.with_service_name(name).build(),
        None => builder.build(),
    }
}

/// reqwest (0.13, as async-openai's) with rustls on ring and Mozilla's roots, as the rest of wharf:
/// an `https://` collector needs no CA bundle in the image.
fn http_client(timeout: Duration) -> Result<reqwest_otlp::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS for the OTLP exporter")?
        .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
        .with_no_client_auth();
    reqwest_otlp::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .context("building the OTLP exporter's HTTP client")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        export_settings(|k| vars.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
    }

    #[test]
    fn on_with_either_endpoint_variable() {
        let on = Some(ExportSettings { timeout: DEFAULT_EXPORT_TIMEOUT });
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap(), on);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).unwrap(), on);
    }

    #[test]
    fn disabled_or_none_exporter_turns_it_off() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(settings(&[ep, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(), None);
        assert_eq!(settings(&[ep, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        assert!(settings(&[ep, ("OTEL_TRACES_EXPORTER", "otlp")]).unwrap().is_some());
        let e = settings(&[ep, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err().to_string();
        assert!(e.contains("OTEL_TRACES_EXPORTER=zipkin"), "{e}");
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(settings(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap().is_some());
        let e = settings(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err().to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc:"), "{e}");
        // The traces-specific variable wins.
        let ok = [ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")];
        assert!(settings(&ok).unwrap().is_some());
    }

    #[test]
    fn timeout_in_milliseconds() {
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let s = settings(&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]).unwrap().unwrap();
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let s = settings(&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"), ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700")]);
        assert_eq!(s.unwrap().unwrap().timeout, Duration::from_millis(700));
        let e = settings(&[ep, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).unwrap_err().to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TIMEOUT=10s:"), "{e}");
    }
}
