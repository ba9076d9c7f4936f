//! Traces over OTLP: `wharf api` and `wharf worker` export to a real OTLP/HTTP receiver
//! (tests/support/otlp_sink.py, the opentelemetry-proto messages), and the job attempt joins the
//! trace of the request that enqueued it, which joins the client's `traceparent`.

#[macro_use]
mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;
use wharf_jobs::keys::Scope;

const CLIENT_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CLIENT_SPAN: &str = "051581bf3cb55c13";

on_both_backends!(request_and_attempt_share_the_clients_trace);

/// tests/support/otlp_sink.py: OTLP/HTTP on `port` (and OTLP/gRPC, unused here).
struct OtlpSink {
    port: u16,
    child: Child,
    http: reqwest::Client,
}

impl OtlpSink {
    async fn start() -> OtlpSink {
        let (port, grpc_port) = (free_port(), free_port());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/otlp_sink.py");
        let child = Command::new(python())
            .args([script, &port.to_string(), &grpc_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting otlp_sink.py with {} failed ({e}); run scripts/test-tools.sh", python())
            });
        let mut sink = OtlpSink { port, child, http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!(
                    "otlp_sink.py exited ({status}); are opentelemetry-proto and grpcio installed for {}? run scripts/test-tools.sh",
                    python()
                );
            }
            assert!(Instant::now() < deadline, "otlp_sink.py did not start on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sink
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spans(&self) -> Vec<Value> {
        let r = self.http.get(format!("{}/spans", self.endpoint())).send().await.expect("GET /spans");
        r.json().await.expect("spans as JSON")
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find<'a>(spans: &'a [Value], service: &str, name: &str, attr: &str, value: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["service"] == service && s["name"] == name && s["attributes"][attr] == value)
}

/// The job attempt is a child of the request span, which is a child of the client's span; the
/// job stores the request span's context.
async fn assert_linked(env: &TestEnv, id: &str, request: &Value, attempt: &Value, client: Option<(&str, &str)>) {
    let trace = request["trace_id"].as_str().expect("trace id");
    let request_span = request["span_id"].as_str().expect("span id");
    assert_eq!(request["kind"], "SPAN_KIND_SERVER", "{request}");
    assert_eq!(request["attributes"]["method"], "POST", "{request}");
    assert_eq!(request["attributes"]["path"], "/v1/emails", "{request}");
    assert_eq!(request["attributes"]["tenant"], "acme", "{request}");
    // tracing-opentelemetry exports unsigned integer fields as text.
    assert_eq!(request["attributes"]["status"], "202", "{request}");
    assert_eq!(request["attributes"]["trace_id"], trace, "{request}");
    match client {
        Some((client_trace, client_span)) => {
            assert_eq!(trace, client_trace, "{request}");
            assert_eq!(request["parent_span_id"], client_span, "{request}");
        }
        None => assert_eq!(request["parent_span_id"], "", "a request without traceparent starts a trace: {request}"),
    }

    assert_eq!(attempt["trace_id"], trace, "the attempt is in the request's trace: {attempt}");
    assert_eq!(attempt["parent_span_id"], request_span, "{attempt}");
    assert_eq!(attempt["kind"], "SPAN_KIND_CONSUMER", "{attempt}");
    assert_eq!(attempt["attributes"]["job.kind"], "email", "{attempt}");
    assert_eq!(attempt["attributes"]["job.queue"], "email", "{attempt}");
    assert_eq!(attempt["attributes"]["tenant"], "acme", "{attempt}");
    assert_eq!(attempt["attributes"]["attempt"], 1, "{attempt}");

    let stored = env.job("acme", id).await.traceparent.expect("stored traceparent");
    assert_eq!(stored, format!("00-{trace}-{request_span}-01"));
}

async fn request_and_attempt_share_the_clients_trace(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let sink = OtlpSink::start().await;
    let endpoint = sink.endpoint();
    // Export only at exit: what arrives then was flushed by the shutdown.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci,service.namespace=wharf-tests"),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let port = free_port();
    let port_s = port.to_string();
    let mut api = env.spawn(&["api"], &[&[("PORT", port_s.as_str())], &otel[..]].concat());
    let mut worker =
        env.spawn(&["worker", "--pools", "email"], &[&[("WORKER_POLL_INTERVAL_MS", "100")], &otel[..]].concat());
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;
    let client = ApiClient::new(port);

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = email_body("rcpt@example.com", "Traced");
    let (status, accepted) = client.post_with(&key, "/v1/emails", &body, &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();
    client.wait_state(&key, &id, "succeeded", Duration::from_secs(30)).await;
    assert!(sink.spans().await.is_empty(), "nothing is exported before the batch delay or the exit");

    for p in [&mut api, &mut worker] {
        p.signal(libc::SIGTERM);
        let status = p.wait_exit(Duration::from_secs(30)).await;
        assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", p.logs());
    }
    let spans = sink.spans().await;
    let request = find(&spans, "wharf-api", "http_request", "job_id", &id).unwrap_or_else(|| panic!("{spans:#?}"));
    let attempt = find(&spans, "wharf-worker", "job", "job.id", &id).unwrap_or_else(|| panic!("{spans:#?}"));
    assert_linked(&env, &id, request, attempt, Some((CLIENT_TRACE, CLIENT_SPAN))).await;
    for s in [request, attempt] {
        assert_eq!(s["via"], "http/protobuf", "{s}");
        assert_eq!(s["resource"]["deployment.environment.name"], "ci", "{s}");
        assert_eq!(s["resource"]["service.namespace"], "wharf-tests", "{s}");
        assert_eq!(s["resource"]["telemetry.sdk.language"], "rust", "{s}");
    }
}

/// While the processes run, batches reach the receiver; a request without `traceparent` starts
/// a trace of its own that the attempt joins; `OTEL_SERVICE_NAME` names the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_while_running_and_a_new_trace_is_joined() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let sink = OtlpSink::start().await;
    let endpoint = sink.endpoint();
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let port = free_port();
    let port_s = port.to_string();
    let _api = env.spawn(&["api"], &[&[("PORT", port_s.as_str())], &otel[..]].concat());
    let _worker = env.spawn(
        &["worker", "--pools", "email"],
        &[&[("WORKER_POLL_INTERVAL_MS", "100"), ("OTEL_SERVICE_NAME", "mail-workers")], &otel[..]].concat(),
    );
    wait_port(port, Duration::from_secs(20)).await;
    let key = env.key("acme", &[Scope::JobsWrite, Scope::JobsRead]).await;
    let client = ApiClient::new(port);

    let (status, accepted) = client.post(&key, "/v1/emails", &email_body("rcpt@example.com", "Untraced")).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();
    client.wait_state(&key, &id, "succeeded", Duration::from_secs(30)).await;

    let (request, attempt) = eventually(Duration::from_secs(30), "the spans of the job", || async {
        let spans = sink.spans().await;
        let request = find(&spans, "wharf-api", "http_request", "job_id", &id)?.clone();
        let attempt = find(&spans, "mail-workers", "job", "job.id", &id)?.clone();
        Some((request, attempt))
    })
    .await;
    assert_linked(&env, &id, &request, &attempt, None).await;
}
