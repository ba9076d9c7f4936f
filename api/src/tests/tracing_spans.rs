//! The request span carries the tenant, the job id and the trace id.

use std::sync::{Arc, Mutex};

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

use super::*;

type Fields = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone, Default)]
struct Capture(Fields);

struct Visitor(Fields);

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.lock().unwrap().push((field.name().into(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.lock().unwrap().push((field.name().into(), format!("{value:?}")));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "http_request" {
            attrs.record(&mut Visitor(self.0.clone()));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if ctx.span(id).is_some_and(|s| s.name() == "http_request") {
            values.record(&mut Visitor(self.0.clone()));
        }
    }
}

#[tokio::test]
async fn request_span_records_tenant_job_and_trace() {
    let capture = Capture::default();
    let _guard = tracing_subscriber::registry().with(capture.clone()).set_default();
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // Tests on other threads may have registered the span's callsite while no subscriber
    // wanted it; recompute its interest now that this thread has one.
    tracing::callsite::rebuild_interest_cache();
    let r = send(
        h.cli
            .post("/v1/emails")
            .header("Authorization", bearer(&key))
            .header("traceparent", tp)
            .body_json(&email_body()),
    )
    .await;
    let id = r.assert_status(202)["id"].as_str().unwrap().to_string();

    let fields = capture.0.lock().unwrap().clone();
    let has = |k: &str, v: &str| fields.iter().any(|(fk, fv)| fk == k && fv == v);
    assert!(has("method", "POST") && has("path", "/v1/emails"), "{fields:?}");
    assert!(has("tenant", "acme"), "{fields:?}");
    assert!(has("job_id", &id), "{fields:?}");
    assert!(has("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), "{fields:?}");
    assert!(has("status", "202"), "{fields:?}");
}

/// What an OpenTelemetry tracer provider exported (ended spans, in order).
#[derive(Clone, Debug, Default)]
struct Exported(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl Exported {
    /// The request span, once it has ended: the response can reach the client a moment before
    /// the span around the request closes.
    async fn request_span(&self) -> opentelemetry_sdk::trace::SpanData {
        for _ in 0..200 {
            if let Some(s) = self.0.lock().unwrap().iter().find(|s| s.name == "http_request") {
                return s.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the request span was not exported within 2 s");
    }
}

impl opentelemetry_sdk::trace::SpanExporter for Exported {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn with_opentelemetry_the_request_span_joins_the_trace_and_jobs_carry_its_context() {
    use opentelemetry::trace::TracerProvider as _;

    let exported = Exported::default();
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(exported.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let _guard = tracing_subscriber::registry().with(layer).set_default();
    tracing::callsite::rebuild_interest_cache();
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let post = |traceparent: Option<&'static str>| {
        let mut req = h.cli.post("/v1/emails").header("Authorization", bearer(&key)).body_json(&email_body());
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        async {
            let r = send(req).await;
            let id: wharf_jobs::JobId = r.assert_status(202)["id"].as_str().unwrap().parse().unwrap();
            h.store.job("acme", id).await.unwrap().unwrap().traceparent.unwrap()
        }
    };

    let stored = post(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).await;
    let request = exported.request_span().await;
    assert_eq!(request.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(request.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(request.parent_span_is_remote);
    assert_eq!(stored, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", request.span_context.span_id()));

    // Without a traceparent the request span starts a trace, and the job carries it.
    exported.0.lock().unwrap().clear();
    let stored = post(None).await;
    let request = exported.request_span().await;
    assert_eq!(request.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    let ctx = &request.span_context;
    assert_eq!(stored, format!("00-{}-{}-01", ctx.trace_id(), ctx.span_id()));
}
