//! Request instrumentation: one tracing span per request, the W3C `traceparent` carried into
//! the jobs a request enqueues, and a request-duration histogram.
//!
//! When OpenTelemetry export is on (`wharf` installs a `tracing-opentelemetry` layer), the request
//! span is a child of the incoming `traceparent` and the jobs carry the request span's own context,
//! so that each job attempt in a worker joins the same trace. Without it, the incoming value (or a
//! new one) is carried as is.

use std::{collections::HashMap, sync::Arc, time::Instant};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use poem::{Endpoint, IntoResponse, Request, Response, http::HeaderMap};
use poem_openapi::OperationId;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// A valid W3C trace context (`00-<trace-id>-<parent-id>-<flags>`), lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Parses a `traceparent` header value; `None` if it is not a valid version-00 value
    /// (then a new trace starts, as the W3C recommendation asks).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        let parts: Vec<&str> = v.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        let ok = *version == "00"
            && hex(trace_id, 32)
            && !zero(trace_id)
            && hex(parent_id, 16)
            && !zero(parent_id)
            && hex(flags, 2);
        ok.then(|| TraceParent(v.to_string()))
    }

    /// A new trace with a random trace id and parent id, sampled.
    pub fn generate() -> Self {
        let trace_id = Uuid::new_v4().simple().to_string();
        let parent_id = Uuid::new_v4().simple().to_string()[16..].to_string();
        TraceParent(format!("00-{trace_id}-{parent_id}-01"))
    }

    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Middleware: the span, the request's trace context (in the request's extensions) and metrics.
pub async fn instrument<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!(
        "http_request",
        otel.kind = "server",
        method = %method,
        path = %path,
        trace_id = Empty,
        tenant = Empty,
        job_id = Empty,
        status = Empty,
    );
    let trace = join_trace(&span, req.headers());
    span.record("trace_id", trace.trace_id());
    req.extensions_mut().insert(trace);

    let resp = ep.call(req).instrument(span.clone()).await.map(IntoResponse::into_response);
    let status = match &resp {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    let route = match &resp {
        Ok(r) => r.data::<OperationId>().map(|o| o.0),
        Err(e) => e.data::<OperationId>().map(|o| o.0),
    }
    .unwrap_or_else(|| route_without_operation(&path));
    let elapsed = start.elapsed();
    span.record("status", status.as_u16());
    metrics::histogram!(
        "wharf_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_owned(),
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "request done")
    });
    resp
}

/// Makes `span` a child of the request's `traceparent` (and `tracestate`) and returns the trace
/// context its jobs carry: the request span's own when an OpenTelemetry layer records it,
/// otherwise the incoming `traceparent`, or a new one.
fn join_trace(span: &tracing::Span, headers: &HeaderMap) -> TraceParent {
    let propagator = TraceContextPropagator::new();
    // Err only when no OpenTelemetry layer sees the span (export off, or the span filtered out).
    let _ = span.set_parent(propagator.extract(&Headers(headers)));
    let mut own = HashMap::new();
    propagator.inject_context(&span.context(), &mut own);
    own.get("traceparent")
        .and_then(|v| TraceParent::parse(v))
        .or_else(|| headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse))
        .unwrap_or_else(TraceParent::generate)
}

/// Request headers as an OpenTelemetry propagation carrier.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A bounded label for requests no operation answered.
fn route_without_operation(path: &str) -> &'static str {
    match path {
        "/openapi.json" => "openapi",
        p if p == "/docs" || p.starts_with("/docs/") => "docs",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_is_kept() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(v).unwrap();
        assert_eq!(t.as_str(), v);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for v in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(TraceParent::parse(v).is_none(), "{v:?} should be refused");
        }
    }

    #[test]
    fn generated_traceparents_are_valid_and_distinct() {
        let a = TraceParent::generate();
        let b = TraceParent::generate();
        assert_eq!(TraceParent::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, b);
    }
}
