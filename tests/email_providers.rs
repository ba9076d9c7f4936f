//! Email providers end to end: `wharf api` and `wharf worker` as processes, against moto_server
//! (SES v2 and S3), aiosmtpd with STARTTLS + AUTH, and the Resend/Postmark stand-ins of
//! `support/email.rs` (they check the documented request and answer as documented).

#[macro_use]
mod support;

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::{
    email::{FakeProvider, Kind, Moto, Reply, test_pki},
    *,
};
use wharf_jobs::{JobId, email::SendLedger, keys::Scope, store::Db};

on_both_backends!(
    ses_sends_simple_and_templated_email_through_moto,
    resend_fails_over_to_ses_and_an_accepted_email_is_never_sent_twice,
    suppression_list_and_postmark_inactive_recipients,
);

const TENANT: &str = "acme";
const SENDER: &str = "sender@example.com";

/// `wharf api` and `wharf worker --pools email` with `env`, a key with every scope the tests use.
struct Stack {
    env: TestEnv,
    api: ApiClient,
    key: String,
    _procs: Vec<WharfProcess>,
}

impl Stack {
    async fn start(backend: Backend, extra: &[(&str, String)]) -> Stack {
        let env = TestEnv::new(backend).await;
        let port = free_port();
        let mut vars: Vec<(&str, String)> = vec![
            ("WORKER_POLL_INTERVAL_MS", "100".into()),
            ("EMAIL_RETRY_BASE_MS", "200".into()),
            ("EMAIL_RETRY_MAX_MS", "1000".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ];
        vars.extend(extra.iter().cloned());
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let api = env.spawn(&["api"], &[vars.as_slice(), &[("PORT", &port.to_string())]].concat());
        let worker = env.spawn(&["worker", "--pools", "email"], &vars);
        wait_port(port, Duration::from_secs(30)).await;
        let key = env.key(TENANT, &[Scope::JobsWrite, Scope::JobsRead, Scope::DlqRead, Scope::DlqWrite]).await;
        Stack { env, api: ApiClient::new(port), key, _procs: vec![api, worker] }
    }

    async fn send(&self, body: &Value) -> String {
        let (s, r) = self.api.post(&self.key, "/v1/emails", body).await;
        assert_eq!(s, 202, "{r}");
        r["id"].as_str().unwrap().to_string()
    }

    async fn done(&self, id: &str) -> Value {
        self.api.wait_state(&self.key, id, "succeeded", Duration::from_secs(40)).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .api
            .http
            .put(format!("{}{path}", self.api.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("PUT");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(40), &format!("job {id}"), || async {
            let (st, j) = self.api.get(&self.key, &format!("/v1/jobs/{id}")).await;
            (st == 200 && done(&j)).then_some(j)
        })
        .await
    }

    /// Puts the job back in the queue as if its acknowledgement had been lost (the worker died
    /// between the send and the ack): it runs again, as after a lease rescue.
    async fn requeue(&self, id: &str, state: &str) {
        match self.env.store.db() {
            Db::Postgres(pool) => {
                let run_at = if state == "queued" { "now()" } else { "run_at" };
                let sql = format!(
                    "UPDATE wharf_jobs SET state = '{state}', run_at = {run_at}, lease_owner = NULL, last_error = 'simulated' WHERE id = $1"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.parse::<uuid::Uuid>().unwrap())
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            Db::Sqlite(pool) => {
                let now = chrono::Utc::now().timestamp_millis();
                sqlx::query("UPDATE wharf_jobs SET state = ?, run_at = ?, lease_owner = NULL, last_error = 'simulated' WHERE id = ?")
                    .bind(state)
                    .bind(now)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
    }
}

fn email(to: &str, subject: &str) -> Value {
    json!({"from": format!("Wharf Tests <{SENDER}>"), "to": [to], "subject": subject,
           "text": format!("text of {subject}"), "html": format!("<p>html of {subject}</p>")})
}

async fn ses_stack(backend: Backend, moto: &Moto, extra: &[(&str, String)]) -> Stack {
    let mut vars = vec![("SES_REGION", "us-east-1".to_string()), ("SES_ENDPOINT", moto.endpoint())];
    vars.extend(extra.iter().cloned());
    Stack::start(backend, &vars).await
}

async fn ses_sends_simple_and_templated_email_through_moto(backend: Backend) {
    let moto = Moto::start().await;
    moto.verify_sender(SENDER).await;
    let s = ses_stack(backend, &moto, &[("EMAIL_PROVIDER", "ses".into())]).await;

    let simple = s.send(&email("ann@example.com", "Simple through SES")).await;
    let job = s.done(&simple).await;
    assert_eq!(job["result"]["provider"], "ses", "{job}");
    let ses_id = job["result"]["message_id"].as_str().unwrap().to_string();

    // A wharf template, rendered by wharf and sent as SES simple content.
    let (st, t) = s
        .put(
            "/v1/email-templates/welcome",
            &json!({"subject": "Welcome, {{ name }}", "text": "Hello {{ name }}, your plan is {{ plan }}.",
                    "html": "<h1>Hello {{ name }}</h1>"}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    assert_eq!(t["variables"], json!(["name", "plan"]));
    let templated = json!({"from": SENDER, "to": ["bob@example.com"],
        "template": {"name": "welcome", "variables": {"name": "Bob & Co", "plan": "pro"}}});
    let (st, p) = s
        .api
        .post(
            &s.key,
            "/v1/emails",
            &json!({"from": SENDER, "to": ["bob@example.com"],
        "template": {"name": "welcome", "variables": {"name": "Bob"}}}),
        )
        .await;
    assert_eq!(st, 422, "a missing variable is refused at enqueue: {p}");
    assert_eq!(p["errors"][0]["field"], "template.variables");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("plan"), "{p}");
    let tid = s.send(&templated).await;
    let tjob = s.done(&tid).await;
    assert_eq!(tjob["result"]["provider"], "ses");

    let msgs = moto.ses_messages().await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let by_id = |id: &str| msgs.iter().find(|m| m["id"] == id).cloned().unwrap_or_else(|| panic!("{id} in {msgs:?}"));
    let m = by_id(&ses_id);
    assert_eq!(m["subject"], "Simple through SES");
    assert_eq!(m["body"], "<p>html of Simple through SES</p>", "moto keeps the html part");
    assert_eq!(m["destinations"]["ToAddresses"], json!(["ann@example.com"]));
    assert_eq!(m["source"], format!("Wharf Tests <{SENDER}>"));
    let m = by_id(tjob["result"]["message_id"].as_str().unwrap());
    assert_eq!(m["subject"], "Welcome, Bob & Co");
    assert_eq!(m["body"], "<h1>Hello Bob &amp; Co</h1>");
}

async fn resend_fails_over_to_ses_and_an_accepted_email_is_never_sent_twice(backend: Backend) {
    let moto = Moto::start().await;
    moto.verify_sender(SENDER).await;
    let resend = FakeProvider::start(Kind::Resend, "re_integration").await;
    resend.always(Some(Reply::Status(500)));
    let s = ses_stack(
        backend,
        &moto,
        &[
            ("EMAIL_PROVIDER", "resend".into()),
            ("EMAIL_FALLBACK_PROVIDERS", "ses".into()),
            ("RESEND_API_KEY", "re_integration".into()),
            ("RESEND_ENDPOINT", resend.url()),
            ("WORKER_CONCURRENCY", "1".into()),
        ],
    )
    .await;

    let id = s.send(&email("ann@example.com", "Failover")).await;
    let job = s.done(&id).await;
    let r = &job["result"];
    assert_eq!((r["provider"].as_str(), r["status"].as_str()), (Some("ses"), Some("sent")), "{job}");
    assert_eq!(r["failed_over"][0]["provider"], "resend");
    assert!(r["failed_over"][0]["error"].as_str().unwrap().contains("500"), "{job}");
    let ledger = SendLedger::new(s.env.store.db()).for_job(TENANT, id.parse::<JobId>().unwrap()).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].provider.as_str(), ledger[0].provider_message_id.as_str()),
        ("ses", r["message_id"].as_str().unwrap())
    );
    assert_eq!(moto.ses_messages().await.len(), 1);
    let resend_calls = resend.requests().len();
    assert_eq!(resend_calls, 1);
    assert_eq!(resend.requests()[0].header("idempotency-key"), Some(format!("wharf-{id}").as_str()));

    // The acknowledgement is lost: the job runs again, finds the ledger, sends nothing.
    s.requeue(&id, "queued").await;
    let again = s.wait_for(&id, |j| j["state"] == "succeeded" && j["result"]["deduplicated"] == true).await;
    assert_eq!(again["result"]["provider"], "ses");
    assert_eq!(again["result"]["message_id"], r["message_id"]);
    assert_eq!(moto.ses_messages().await.len(), 1, "SES got it once");
    assert_eq!(resend.requests().len(), resend_calls, "Resend was not asked again");

    // A replay of it (the job died after the send, say) does not send either; a replay whose
    // edited payload says `force_resend` does, once.
    s.requeue(&id, "dead").await;
    let (st, rep) = s.api.post(&s.key, &format!("/v1/dead-letters/{id}/replay"), &json!({})).await;
    assert_eq!(st, 202, "{rep}");
    let replay_id = rep["id"].as_str().unwrap().to_string();
    let replayed = s.done(&replay_id).await;
    assert_eq!(replayed["result"]["deduplicated"], true, "{replayed}");
    assert_eq!(moto.ses_messages().await.len(), 1);
    s.requeue(&replay_id, "dead").await;
    let mut edited = email("ann@example.com", "Failover");
    edited["force_resend"] = json!(true);
    let (st, rep) =
        s.api.post(&s.key, &format!("/v1/dead-letters/{replay_id}/replay"), &json!({"payload": edited})).await;
    assert_eq!(st, 202, "{rep}");
    let forced = s.done(rep["id"].as_str().unwrap()).await;
    assert_eq!(
        (forced["result"]["provider"].as_str(), forced["result"]["deduplicated"].as_bool()),
        (Some("ses"), None)
    );
    assert_eq!(moto.ses_messages().await.len(), 2, "sent again on request");
    // `force_resend` is only for replays.
    let (st, p) = s.api.post(&s.key, "/v1/emails", &edited).await;
    assert_eq!((st, p["errors"][0]["field"].as_str()), (422, Some("force_resend")), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_sends_straight_to_the_fallback_after_five_failures() {
    let moto = Moto::start().await;
    moto.verify_sender(SENDER).await;
    let resend = FakeProvider::start(Kind::Resend, "re_cb").await;
    resend.always(Some(Reply::Status(500)));
    let s = ses_stack(
        Backend::Sqlite,
        &moto,
        &[
            ("EMAIL_PROVIDER", "resend".into()),
            ("EMAIL_FALLBACK_PROVIDERS", "ses".into()),
            ("RESEND_API_KEY", "re_cb".into()),
            ("RESEND_ENDPOINT", resend.url()),
            ("WORKER_CONCURRENCY", "1".into()),
            ("EMAIL_BREAKER_COOLDOWN_MS", "60000".into()),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(s.send(&email(&format!("r{i}@example.com"), &format!("Breaker {i}"))).await);
    }
    let mut skipped = 0;
    for id in &ids {
        let job = s.done(id).await;
        assert_eq!(job["result"]["provider"], "ses", "{job}");
        if job["result"]["failed_over"][0]["skipped"] == "circuit open" {
            skipped += 1;
        }
    }
    assert_eq!(resend.requests().len(), 5, "five failures open the circuit; later emails skip Resend");
    assert_eq!(skipped, 3);
    assert_eq!(moto.ses_messages().await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_starttls_auth_with_an_attachment_from_s3() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(certs.path());
    let maildir = certs.path().join("Maildir");
    let sink_port = free_port();
    let sink_script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
    let mut sink = std::process::Command::new(python())
        .arg(&sink_script)
        .arg(&maildir)
        .arg(sink_port.to_string())
        .args(["--tls", &cert, &key, "--user", "mailer", "--password", "s3cret"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("smtp_sink.py (run scripts/test-tools.sh)");
    wait_port(sink_port, Duration::from_secs(20)).await;
    let moto = Moto::start().await;
    moto.create_bucket("wharf-mail").await;
    // Binary, as PDFs are: it travels base64-encoded.
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    pdf.extend((0..=255u8).cycle().take(600));
    moto.put_object("wharf-mail", "tenants/acme/reports/q4.pdf", pdf.clone()).await;

    let s = Stack::start(
        Backend::Sqlite,
        &[
            ("EMAIL_PROVIDER", "smtp".into()),
            ("SMTP_HOST", "127.0.0.1".into()),
            ("SMTP_PORT", sink_port.to_string()),
            ("SMTP_USER", "mailer".into()),
            ("SMTP_PASS", "s3cret".into()),
            ("SMTP_REQUIRE_TLS", "true".into()),
            ("SMTP_TLS_CA_FILE", ca.clone()),
            ("STORAGE_BUCKET", "wharf-mail".into()),
            ("STORAGE_ENDPOINT", moto.endpoint()),
            ("STORAGE_REGION", "us-east-1".into()),
            ("STORAGE_FORCE_PATH_STYLE", "true".into()),
            ("STORAGE_ACCESS_KEY_ID", "testing".into()),
            ("STORAGE_SECRET_ACCESS_KEY", "testing".into()),
        ],
    )
    .await;
    let mut body = email("Ann Example <ann@example.com>", "Quarterly report");
    body["cc"] = json!(["carol@example.net"]);
    body["tags"] = json!({"report": "q4"});
    body["attachments"] = json!([
        {"filename": "q4.pdf", "key": "tenants/acme/reports/q4.pdf"},
        {"filename": "notes.txt", "content": base64::engine::general_purpose::STANDARD.encode("inline notes")},
    ]);
    let (st, p) = s
        .api
        .post(
            &s.key,
            "/v1/emails",
            &json!({"from": SENDER, "to": ["a@example.com"], "subject": "x", "text": "y",
            "attachments": [{"filename": "x.pdf", "key": "tenants/other/x.pdf"}]}),
        )
        .await;
    assert_eq!((st, p["errors"][0]["field"].as_str()), (422, Some("attachments[0].key")), "{p}");
    let id = s.send(&body).await;
    let job = s.done(&id).await;
    assert_eq!(job["result"]["provider"], "smtp", "{job}");
    assert_eq!(job["result"]["message_id"], format!("<{id}@wharf>"));

    let raw = eventually(Duration::from_secs(10), "the message in the Maildir", || async {
        let dir = maildir.join("new");
        let files: Vec<_> = std::fs::read_dir(&dir).ok()?.flatten().collect();
        files.first().map(|f| std::fs::read_to_string(f.path()).unwrap())
    })
    .await;
    let _ = sink.kill();
    let _ = sink.wait();
    let unfolded = raw.replace("\r\n", "\n");
    let head = unfolded.split("\n\n").next().unwrap().replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    assert_eq!(header("Subject").as_deref(), Some("Quarterly report"));
    assert_eq!(header("From").as_deref(), Some(format!("\"Wharf Tests\" <{SENDER}>").as_str()));
    assert_eq!(header("To").as_deref(), Some("\"Ann Example\" <ann@example.com>"));
    assert_eq!(header("Cc").as_deref(), Some("carol@example.net"));
    assert_eq!(header("Message-ID").as_deref(), Some(format!("<{id}@wharf>").as_str()));
    assert_eq!(header("X-Wharf-Job-Id").as_deref(), Some(id.as_str()));
    assert_eq!(header("X-Wharf-Tags").as_deref(), Some("report=q4"));
    assert!(header("Content-Type").unwrap().starts_with("multipart/mixed"), "{head}");
    assert!(unfolded.contains("Content-Type: multipart/alternative"), "{raw}");
    assert!(unfolded.contains("text of Quarterly report") && unfolded.contains("<p>html of Quarterly report</p>"));
    // The attachments: the S3 object and the inline one, base64 in their parts.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let compact = unfolded.replace('\n', "");
    assert!(unfolded.contains("filename=\"q4.pdf\"") && unfolded.contains("Content-Type: application/pdf"), "{raw}");
    assert!(compact.contains(&b64(&pdf)), "the S3 object is attached: {raw}");
    let notes = unfolded.split("filename=\"notes.txt\"").nth(1).expect("the inline attachment");
    assert!(notes.contains("inline notes") || notes.replace('\n', "").contains(&b64(b"inline notes")), "{raw}");
}

async fn suppression_list_and_postmark_inactive_recipients(backend: Backend) {
    let pm = FakeProvider::start(Kind::Postmark, "pm-token").await;
    pm.inactive("gone@example.com");
    let s = Stack::start(
        backend,
        &[
            ("EMAIL_PROVIDER", "postmark".into()),
            ("POSTMARK_TOKEN", "pm-token".into()),
            ("POSTMARK_ENDPOINT", pm.url()),
        ],
    )
    .await;

    // A manual suppression: the email is not sent and its job ends `suppressed`.
    let (st, sup) = s
        .api
        .post(&s.key, "/v1/email-suppressions", &json!({"address": "Blocked@Example.com", "reason": "complaint"}))
        .await;
    assert_eq!(st, 201, "{sup}");
    assert_eq!(sup["address"], "blocked@example.com");
    let (st, one) = s.api.get(&s.key, "/v1/email-suppressions/blocked@example.com").await;
    assert_eq!((st, one["reason"].as_str(), one["source"].as_str()), (200, Some("complaint"), Some("api")));
    let idem = [("Idempotency-Key", "sup-1")];
    let body = json!({"address": "later@example.com", "detail": "asked by phone"});
    let (st1, first) = s.api.post_with(&s.key, "/v1/email-suppressions", &body, &idem).await;
    let (st2, again) = s.api.post_with(&s.key, "/v1/email-suppressions", &body, &idem).await;
    assert_eq!((st1, st2), (201, 201), "the same key and body answer the first response");
    assert_eq!(first, again);
    let (st, _) = s.api.post_with(&s.key, "/v1/email-suppressions", &json!({"address": "x@example.com"}), &idem).await;
    assert_eq!(st, 422, "the same key with another body");
    let (st, p) =
        s.api.post(&s.key, "/v1/email-suppressions", &json!({"address": "not-an-address", "reason": "x"})).await;
    let fields: Vec<_> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!((st, fields), (422, vec!["address", "reason"]));
    let reader = s.env.key(TENANT, &[Scope::JobsRead]).await;
    let (st, _) = s.api.post(&reader, "/v1/email-suppressions", &json!({"address": "y@example.com"})).await;
    assert_eq!(st, 403, "adding needs jobs:write");
    let other = s.env.key("other-tenant", &[Scope::JobsRead]).await;
    assert_eq!(s.api.get(&other, "/v1/email-suppressions/blocked@example.com").await.0, 404, "per tenant");
    let id = s.send(&email("blocked@example.com", "Not for you")).await;
    let job = s.done(&id).await;
    assert_eq!(job["result"]["status"], "suppressed", "{job}");
    assert!(job["result"]["reason"].as_str().unwrap().contains("complaint"), "{job}");
    assert_eq!(job["attempts"], 1, "not retried");
    assert!(pm.requests().is_empty(), "nothing reached Postmark");

    // Postmark says a recipient is inactive (406): suppressed, and listed for the next time.
    let id = s.send(&email("gone@example.com", "Bounced before")).await;
    let job = s.done(&id).await;
    assert_eq!(job["result"]["status"], "suppressed", "{job}");
    let (st, list) = s.api.get(&s.key, "/v1/email-suppressions").await;
    assert_eq!(st, 200, "{list}");
    let gone = list["items"].as_array().unwrap().iter().find(|i| i["address"] == "gone@example.com").expect("listed");
    assert_eq!((gone["reason"].as_str(), gone["source"].as_str()), (Some("provider"), Some("postmark")));
    assert_eq!(pm.requests().len(), 1);

    // Removing a suppression sends again; the request is Postmark's documented one.
    assert_eq!(s.api.delete(&s.key, "/v1/email-suppressions/blocked@example.com").await, 204);
    let id = s.send(&email("blocked@example.com", "Welcome back")).await;
    let job = s.done(&id).await;
    assert_eq!(
        (job["result"]["provider"].as_str(), job["result"]["status"].as_str()),
        (Some("postmark"), Some("sent"))
    );
    assert!(pm.violations().is_empty(), "{:?}", pm.violations());
    let sent = pm.sent();
    assert_eq!((sent.len(), sent[0]["Subject"].as_str()), (1, Some("Welcome back")));
    assert_eq!(job["result"]["message_id"], "00000000-0000-4000-8000-000000000001");

    // Templates: a wharf template rendered for Postmark's /email, a Postmark alias passed through.
    let (st, _) =
        s.put("/v1/email-templates/receipt", &json!({"subject": "Receipt {{ n }}", "text": "Paid {{ amount }}"})).await;
    assert_eq!(st, 201);
    let id = s
        .send(&json!({"from": SENDER, "to": ["x@example.com"], "template": {"name": "receipt", "variables": {"n": 7, "amount": "9 EUR"}}}))
        .await;
    s.done(&id).await;
    let id = s
        .send(&json!({"from": SENDER, "to": ["x@example.com"], "template": {"postmark_alias": "receipt-v2", "variables": {"n": 8}}}))
        .await;
    s.done(&id).await;
    let reqs = pm.requests();
    let n = reqs.len();
    assert_eq!((reqs[n - 2].path.as_str(), reqs[n - 2].body["Subject"].as_str()), ("/email", Some("Receipt 7")));
    assert_eq!(reqs[n - 2].body["TextBody"], "Paid 9 EUR");
    assert_eq!(
        (reqs[n - 1].path.as_str(), reqs[n - 1].body["TemplateAlias"].as_str()),
        ("/email/withTemplate", Some("receipt-v2"))
    );
    assert_eq!(reqs[n - 1].body["TemplateModel"], json!({"n": 8}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_into_the_outbox_and_bad_requests_are_refused() {
    let s = Stack::start(Backend::Sqlite, &[]).await;
    let (st, p) = s.put("/v1/email-templates/bad", &json!({"subject": "x", "text": "{{ oops"})).await;
    assert_eq!((st, p["errors"][0]["field"].as_str()), (422, Some("text")), "{p}");
    let (st, _) =
        s.put("/v1/email-templates/hello", &json!({"subject": "Hi {{ who }}", "html": "<b>{{ who }}</b>"})).await;
    assert_eq!(st, 201);
    let (st, t) = s.api.get(&s.key, "/v1/email-templates/hello").await;
    assert_eq!((st, t["variables"].clone()), (200, json!(["who"])));
    let (st, p) = s
        .api
        .post(&s.key, "/v1/emails", &json!({"from": SENDER, "to": ["a@example.com"], "template": {"name": "nope"}}))
        .await;
    assert_eq!((st, p["errors"][0]["field"].as_str()), (422, Some("template.name")), "{p}");
    let id = s.send(&json!({"from": SENDER, "to": ["a@example.com"], "template": {"name": "hello", "variables": {"who": "<Ann>"}}})).await;
    let job = s.done(&id).await;
    assert_eq!(job["result"]["provider"], "outbox");
    let msgs = outbox_messages(&s.env.path("outbox"));
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].contains("Subject: Hi <Ann>"), "{}", msgs[0]);
    assert!(msgs[0].contains("<b>&lt;Ann&gt;</b>"), "{}", msgs[0]);
    assert_eq!(s.api.delete(&s.key, "/v1/email-templates/hello").await, 204);
    assert_eq!(s.api.get(&s.key, "/v1/email-templates/hello").await.0, 404);
}
