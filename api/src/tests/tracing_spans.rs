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
