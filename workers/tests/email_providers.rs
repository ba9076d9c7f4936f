//! The email handler against local Resend, Postmark and SES stand-ins
//! (`tests/support/email.rs`: each checks the documented request and answers with the
//! documented bodies), with a real SQLite store for the send ledger, templates and the
//! suppression list: failover, circuit breaker, idempotency, replays, templates, attachments.

#[path = "../../tests/support/email.rs"]
mod fake;

use std::{sync::Arc, time::Duration};

use base64::Engine;
use fake::{FakeProvider, Kind, Reply};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    JobId, Store, StoreConfig,
    email::{SuppressionList, SuppressionReason, TemplateContent, TemplateStore},
    kinds::{
        JobKind,
        email::{Attachment, EmailJob, TemplateRef},
    },
    objects::{ObjectStore, local::LocalObjects},
    open_store,
};
use wharf_workers::{
    Handler, JobContext, JobError,
    email::{
        BreakerConfig, EmailConfig, EmailHandler, EmailProviderConfig, PostmarkConfig, ResendConfig, Secret, SesConfig,
    },
};

const TENANT: &str = "acme";

struct Db {
    _dir: tempfile_dir::Dir,
    store: Arc<dyn Store>,
}

mod tempfile_dir {
    use std::path::PathBuf;
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("wharf-email-prov-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn db() -> Db {
    let dir = tempfile_dir::Dir::new();
    let store = open_store(&StoreConfig::new(format!("sqlite://{}/wharf.db", dir.0.display()))).await.unwrap();
    store.migrate().await.unwrap();
    Db { _dir: dir, store }
}

fn ctx(id: JobId) -> JobContext {
    JobContext {
        id,
        tenant: TENANT.into(),
        kind: "email".into(),
        attempt: 1,
        max_attempts: 5,
        traceparent: None,
        shutdown: CancellationToken::new(),
    }
}

fn email(to: &str) -> EmailJob {
    EmailJob {
        from: "Wharf Robot <robot@example.com>".into(),
        to: vec![to.into()],
        subject: "Invoice 42".into(),
        text: Some("Your invoice.".into()),
        html: Some("<p>Your invoice.</p>".into()),
        ..Default::default()
    }
}

/// Enqueues `job` (so the handler finds its record) and returns its id.
async fn enqueue(store: &Arc<dyn Store>, job: &EmailJob, replay_of: Option<JobId>) -> JobId {
    let mut new = job.into_job(TENANT);
    new.replay_of = replay_of;
    let id = new.id;
    store.enqueue(new, None).await.unwrap();
    id
}

fn resend(f: &FakeProvider) -> EmailProviderConfig {
    EmailProviderConfig::Resend(ResendConfig { api_key: Secret(f.secret.clone()), endpoint: f.url() })
}

fn postmark(f: &FakeProvider) -> EmailProviderConfig {
    EmailProviderConfig::Postmark(PostmarkConfig {
        token: Secret(f.secret.clone()),
        endpoint: f.url(),
        message_stream: None,
    })
}

fn config(chain: Vec<EmailProviderConfig>) -> EmailConfig {
    let mut it = chain.into_iter();
    let mut c = EmailConfig::new(it.next().unwrap(), Duration::from_secs(5));
    c.fallbacks = it.collect();
    c.breaker = BreakerConfig { failures: 3, cooldown: Duration::from_millis(400) };
    c
}

fn transient(e: JobError) -> (String, Option<Duration>) {
    match e {
        JobError::Transient { message, retry_after } => (message, retry_after),
        e => panic!("expected a transient error, got {e:?}"),
    }
}

fn permanent(e: JobError) -> String {
    match e {
        JobError::Permanent { message } => message,
        e => panic!("expected a permanent error, got {e:?}"),
    }
}

#[tokio::test]
async fn resend_gets_the_documented_request_and_a_retry_is_not_a_second_email() {
    let rs = FakeProvider::start(Kind::Resend, "re_test_key").await;
    let handler = EmailHandler::new(&config(vec![resend(&rs)])).unwrap();
    let id = JobId::new();
    let job = EmailJob {
        cc: vec!["Carol <carol@example.net>".into()],
        bcc: vec!["hidden@example.com".into()],
        reply_to: Some("support@example.com".into()),
        tags: [("campaign".to_string(), "q4-invoices".to_string())].into(),
        attachments: vec![Attachment {
            filename: "hello.txt".into(),
            content: Some(base64::engine::general_purpose::STANDARD.encode("hello attachment")),
            ..Default::default()
        }],
        ..email("Ann Example <ann@example.com>")
    };
    let result = handler.handle(&ctx(id), job.clone()).await.unwrap().unwrap();
    assert_eq!(result["provider"], "resend");
    assert_eq!(result["status"], "sent");
    let reqs = rs.requests();
    assert_eq!(reqs.len(), 1);
    assert!(rs.violations().is_empty(), "{:?}", rs.violations());
    let r = &reqs[0];
    assert_eq!((r.path.as_str(), r.status), ("/emails", 200));
    assert_eq!(r.header("authorization"), Some("Bearer re_test_key"));
    assert_eq!(r.header("idempotency-key"), Some(format!("wharf-{id}").as_str()));
    assert_eq!(result["message_id"], "00000000-0000-4000-8000-000000000001", "Resend's id");
    let b = &r.body;
    assert_eq!(b["from"], "Wharf Robot <robot@example.com>");
    assert_eq!(b["to"], json!(["Ann Example <ann@example.com>"]));
    assert_eq!(b["cc"], json!(["Carol <carol@example.net>"]));
    assert_eq!(b["bcc"], json!(["hidden@example.com"]));
    assert_eq!(b["reply_to"], json!(["support@example.com"]));
    assert_eq!((b["subject"].as_str(), b["text"].as_str()), (Some("Invoice 42"), Some("Your invoice.")));
    assert_eq!(b["html"], "<p>Your invoice.</p>");
    assert_eq!(b["headers"]["X-Wharf-Job-Id"], id.to_string());
    assert_eq!(b["tags"], json!([{"name": "campaign", "value": "q4-invoices"}]));
    assert_eq!(b["attachments"][0]["filename"], "hello.txt");
    assert_eq!(b["attachments"][0]["content_type"], "text/plain");
    let content = b["attachments"][0]["content"].as_str().unwrap();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(content).unwrap(), b"hello attachment");

    // A retry of the same job (no ledger here): the same key, Resend answers the first send.
    let again = handler.handle(&ctx(id), job).await.unwrap().unwrap();
    assert_eq!(again["message_id"], result["message_id"]);
    assert_eq!(rs.requests().len(), 2);
    assert_eq!(rs.requests()[1].header("idempotency-key"), Some(format!("wharf-{id}").as_str()));
    assert_eq!(rs.sent().len(), 1, "one email, not two");
}

#[tokio::test]
async fn resend_errors_are_classified() {
    let rs = FakeProvider::start(Kind::Resend, "re_key").await;
    let handler = EmailHandler::new(&config(vec![resend(&rs)])).unwrap();
    rs.script([Reply::Status(422), Reply::Status(429), Reply::Status(500)]);
    let m = permanent(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("resend rejected the email (422)") && m.contains("validation_error"), "{m}");
    let (m, retry_after) = transient(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("429") && m.contains("rate_limit_exceeded"), "{m}");
    assert_eq!(retry_after, Some(Duration::from_secs(1)), "Retry-After is honoured");
    let (m, retry_after) = transient(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("500"), "{m}");
    assert_eq!(retry_after, None);
    assert!(rs.sent().is_empty());

    // A wrong key: the stand-in answers 401; a configuration problem, retried (and failed over).
    let wrong = EmailProviderConfig::Resend(ResendConfig { api_key: Secret("re_wrong".into()), endpoint: rs.url() });
    let handler = EmailHandler::new(&config(vec![wrong])).unwrap();
    let (m, _) = transient(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("RESEND_API_KEY") && !m.contains("re_wrong"), "{m}");

    // Nothing listens: transient, quickly.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = EmailProviderConfig::Resend(ResendConfig {
        api_key: Secret("k".into()),
        endpoint: format!("http://127.0.0.1:{port}"),
    });
    let handler = EmailHandler::new(&config(vec![down])).unwrap();
    let (m, _) = transient(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("connection failed"), "{m}");
}

#[tokio::test]
async fn postmark_email_template_and_errors() {
    let pm = FakeProvider::start(Kind::Postmark, "pm-server-token").await;
    let handler = EmailHandler::new(&config(vec![postmark(&pm)])).unwrap();
    let job = EmailJob {
        to: vec!["ann@example.com".into(), "Bob <bob@example.org>".into()],
        tags: [("kind".to_string(), "invoice".to_string())].into(),
        ..email("x@example.com")
    };
    let result = handler.handle(&ctx(JobId::new()), job).await.unwrap().unwrap();
    assert_eq!(result["provider"], "postmark");
    let r = &pm.requests()[0];
    assert!(pm.violations().is_empty(), "{:?}", pm.violations());
    assert_eq!(r.path, "/email");
    assert_eq!(r.header("x-postmark-server-token"), Some("pm-server-token"));
    assert_eq!(r.body["To"], "ann@example.com, Bob <bob@example.org>");
    assert_eq!(r.body["Subject"], "Invoice 42");
    assert_eq!(r.body["TextBody"], "Your invoice.");
    assert_eq!(r.body["HtmlBody"], "<p>Your invoice.</p>");
    assert_eq!(r.body["Metadata"], json!({"kind": "invoice"}));
    assert_eq!(result["message_id"], "00000000-0000-4000-8000-000000000001", "Postmark's MessageID");

    // A Postmark template: passed through with its model.
    let templated = EmailJob {
        subject: String::new(),
        text: None,
        html: None,
        template: Some(TemplateRef {
            postmark_alias: Some("welcome-v2".into()),
            variables: json!({"name": "Ann", "plan": {"tier": "pro"}}).as_object().unwrap().clone(),
            ..Default::default()
        }),
        ..email("ann@example.com")
    };
    handler.handle(&ctx(JobId::new()), templated).await.unwrap();
    let r = &pm.requests()[1];
    assert_eq!(r.path, "/email/withTemplate");
    assert_eq!(r.body["TemplateAlias"], "welcome-v2");
    assert_eq!(r.body["TemplateModel"], json!({"name": "Ann", "plan": {"tier": "pro"}}));
    assert!(r.body.get("Subject").is_none());

    pm.script([Reply::Status(422), Reply::Status(500)]);
    let m = permanent(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
    assert!(m.contains("ErrorCode 300") && m.contains("Invalid email request"), "{m}");
    transient(handler.handle(&ctx(JobId::new()), email("a@example.com")).await.unwrap_err());
}

#[tokio::test]
async fn postmark_inactive_recipient_is_suppressed_and_not_tried_again() {
    let d = db().await;
    let pm = FakeProvider::start(Kind::Postmark, "tok").await;
    pm.inactive("gone@example.com");
    let handler = EmailHandler::new(&config(vec![postmark(&pm)])).unwrap().with_store(d.store.clone());
    let job = email("Gone <gone@example.com>");
    let id = enqueue(&d.store, &job, None).await;
    let result = handler.handle(&ctx(id), job.clone()).await.unwrap().unwrap();
    assert_eq!(result["status"], "suppressed", "{result}");
    assert_eq!(pm.requests().len(), 1, "the 406; the address is then on the list");
    let list = SuppressionList::new(d.store.db());
    let s = list.get(TENANT, "gone@example.com").await.unwrap().expect("added to the list");
    assert_eq!((s.reason, s.source.as_str()), (SuppressionReason::Provider, "postmark"));
    assert!(s.detail.unwrap().contains("inactive"));

    // Another email to the address: not sent at all.
    let id = enqueue(&d.store, &job, None).await;
    let result = handler.handle(&ctx(id), job).await.unwrap().unwrap();
    assert_eq!(result["status"], "suppressed");
    assert_eq!(result["suppressed"][0]["reason"], "provider");
    assert_eq!(pm.requests().len(), 1);

    // With a second recipient, the inactive one is dropped and the other gets it.
    let both = EmailJob { to: vec!["gone@example.com".into(), "here@example.com".into()], ..email("x@example.com") };
    let id = enqueue(&d.store, &both, None).await;
    let result = handler.handle(&ctx(id), both).await.unwrap().unwrap();
    assert_eq!(result["status"], "sent");
    assert_eq!(result["suppressed"][0]["address"], "gone@example.com");
    assert_eq!(pm.sent().last().unwrap()["To"], "here@example.com");
}

#[tokio::test]
async fn failover_on_transient_errors_and_the_breaker_skips_a_dead_primary() {
    let d = db().await;
    let rs = FakeProvider::start(Kind::Resend, "k").await;
    let pm = FakeProvider::start(Kind::Postmark, "t").await;
    rs.always(Some(Reply::Status(500)));
    let handler = EmailHandler::new(&config(vec![resend(&rs), postmark(&pm)])).unwrap().with_store(d.store.clone());
    for i in 0..5 {
        let job = email(&format!("r{i}@example.com"));
        let id = enqueue(&d.store, &job, None).await;
        let result = handler.handle(&ctx(id), job).await.unwrap().unwrap();
        assert_eq!(result["provider"], "postmark", "{result}");
        if i < 3 {
            assert!(result["failed_over"][0]["error"].as_str().unwrap().contains("500"), "{result}");
        } else {
            assert_eq!(result["failed_over"][0]["skipped"], "circuit open", "{result}");
        }
    }
    assert_eq!(rs.requests().len(), 3, "after 3 failures the open circuit skips resend");
    assert_eq!(pm.sent().len(), 5);
    assert_eq!(handler.circuits(), vec![("resend", "open"), ("postmark", "closed")]);

    // A permanent rejection does not fail over.
    rs.always(Some(Reply::Status(422)));
    tokio::time::sleep(Duration::from_millis(450)).await; // half-open: one trial
    let job = email("p@example.com");
    let id = enqueue(&d.store, &job, None).await;
    permanent(handler.handle(&ctx(id), job).await.unwrap_err());
    assert_eq!(pm.sent().len(), 5);
    assert_eq!(handler.circuits()[0], ("resend", "closed"), "the provider answered: it is up");

    // Every provider down: transient, with no email sent.
    rs.always(Some(Reply::Status(500)));
    pm.always(Some(Reply::Status(500)));
    let job = email("q@example.com");
    let id = enqueue(&d.store, &job, None).await;
    let (m, _) = transient(handler.handle(&ctx(id), job).await.unwrap_err());
    assert!(m.contains("resend") && m.contains("postmark"), "{m}");
}

#[tokio::test]
async fn the_ledger_stops_retries_and_replays_unless_a_replay_forces_a_resend() {
    let d = db().await;
    let pm = FakeProvider::start(Kind::Postmark, "t").await;
    let handler = EmailHandler::new(&config(vec![postmark(&pm)])).unwrap().with_store(d.store.clone());
    let job = email("ann@example.com");
    let a = enqueue(&d.store, &job, None).await;
    let first = handler.handle(&ctx(a), job.clone()).await.unwrap().unwrap();
    assert_eq!(first["identity"], a.to_string());

    // The worker died after the send, before the acknowledgement: the attempt runs again.
    let retry = handler.handle(&ctx(a), job.clone()).await.unwrap().unwrap();
    assert_eq!(retry["deduplicated"], true);
    assert_eq!(retry["message_id"], first["message_id"]);
    assert_eq!(pm.sent().len(), 1);

    // A replay shares the identity of the original.
    let b = enqueue(&d.store, &job, Some(a)).await;
    let replay = handler.handle(&ctx(b), job.clone()).await.unwrap().unwrap();
    assert_eq!(
        (replay["deduplicated"].as_bool(), replay["accepted_by_job"].as_str()),
        (Some(true), Some(a.to_string().as_str()))
    );
    assert_eq!(pm.sent().len(), 1);

    // A replay whose edited payload asks for it sends again, once.
    let forced = EmailJob { force_resend: true, ..job.clone() };
    let c = enqueue(&d.store, &forced, Some(b)).await;
    let resent = handler.handle(&ctx(c), forced.clone()).await.unwrap().unwrap();
    assert_eq!((resent["deduplicated"].as_bool(), resent["identity"].as_str()), (None, Some(c.to_string().as_str())));
    assert_eq!(pm.sent().len(), 2);
    let again = handler.handle(&ctx(c), forced.clone()).await.unwrap().unwrap();
    assert_eq!(again["deduplicated"], true, "a retry of the forced re-send");
    // Replaying the forced replay keeps the flag, but it was not introduced there: no third send.
    let e = enqueue(&d.store, &forced, Some(c)).await;
    let third = handler.handle(&ctx(e), forced).await.unwrap().unwrap();
    assert_eq!(third["deduplicated"], true);
    assert_eq!(pm.sent().len(), 2);
    let rows = wharf_jobs::email::SendLedger::new(d.store.db()).for_job(TENANT, c).await.unwrap();
    assert_eq!((rows.len(), rows[0].provider.as_str()), (1, "postmark"));
}

#[tokio::test]
async fn wharf_templates_render_for_http_providers_and_missing_variables_are_permanent() {
    let d = db().await;
    let rs = FakeProvider::start(Kind::Resend, "k").await;
    TemplateStore::new(d.store.db())
        .put(
            TENANT,
            "welcome",
            &TemplateContent {
                subject: "Welcome, {{ name }}".into(),
                text: Some("Hi {{ name }}, plan {{ plan | upper }}".into()),
                html: Some("<p>Hi {{ name }}</p>".into()),
            },
        )
        .await
        .unwrap();
    let handler = EmailHandler::new(&config(vec![resend(&rs)])).unwrap().with_store(d.store.clone());
    let templated = |vars: Value| EmailJob {
        subject: String::new(),
        text: None,
        html: None,
        template: Some(TemplateRef {
            name: Some("welcome".into()),
            variables: vars.as_object().unwrap().clone(),
            ..Default::default()
        }),
        ..email("ann@example.com")
    };
    let job = templated(json!({"name": "Ann <3", "plan": "pro"}));
    let id = enqueue(&d.store, &job, None).await;
    handler.handle(&ctx(id), job).await.unwrap();
    let b = &rs.sent()[0];
    assert_eq!(b["subject"], "Welcome, Ann <3");
    assert_eq!(b["text"], "Hi Ann <3, plan PRO");
    assert_eq!(b["html"], "<p>Hi Ann &lt;3</p>");

    let job = templated(json!({"name": "Ann"}));
    let id = enqueue(&d.store, &job, None).await;
    let m = permanent(handler.handle(&ctx(id), job).await.unwrap_err());
    assert!(m.contains("welcome") && m.contains("plan"), "{m}");
    let job = EmailJob {
        template: Some(TemplateRef { name: Some("nope".into()), ..Default::default() }),
        ..templated(json!({}))
    };
    let id = enqueue(&d.store, &job, None).await;
    let m = permanent(handler.handle(&ctx(id), job).await.unwrap_err());
    assert!(m.contains("`nope` does not exist"), "{m}");
    assert_eq!(rs.sent().len(), 1);
}

#[tokio::test]
async fn ses_template_is_passed_through_and_providers_without_one_are_skipped() {
    // SAFETY: tests in this binary that read AWS variables set the same values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDTEST");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret");
    }
    let ses_fake = FakeProvider::start(Kind::Ses, "").await;
    let rs = FakeProvider::start(Kind::Resend, "k").await;
    let ses = EmailProviderConfig::Ses(SesConfig {
        region: "eu-west-1".into(),
        endpoint: Some(ses_fake.url()),
        configuration_set: Some("transactional".into()),
    });
    // Resend first: it has no template of its own and there is no wharf template, so it is
    // skipped (not a failure) and SES sends its template.
    let handler = EmailHandler::new(&config(vec![resend(&rs), ses])).unwrap();
    let job = EmailJob {
        subject: String::new(),
        text: None,
        html: None,
        tags: [("flow".to_string(), "signup".to_string())].into(),
        template: Some(TemplateRef {
            ses_template: Some("Welcome".into()),
            variables: json!({"name": "Ann"}).as_object().unwrap().clone(),
            ..Default::default()
        }),
        ..email("ann@example.com")
    };
    let result = handler.handle(&ctx(JobId::new()), job.clone()).await.unwrap().unwrap();
    assert_eq!(result["provider"], "ses", "{result}");
    assert!(result["message_id"].as_str().unwrap().starts_with("ses-"));
    assert!(rs.requests().is_empty());
    assert!(ses_fake.violations().is_empty(), "{:?}", ses_fake.violations());
    let b = &ses_fake.sent()[0];
    assert_eq!(b["FromEmailAddress"], "Wharf Robot <robot@example.com>");
    assert_eq!(b["Destination"]["ToAddresses"], json!(["ann@example.com"]));
    assert_eq!(b["Content"]["Template"]["TemplateName"], "Welcome");
    let data: Value = serde_json::from_str(b["Content"]["Template"]["TemplateData"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"name": "Ann"}));
    assert_eq!(b["EmailTags"], json!([{"Name": "flow", "Value": "signup"}]));
    assert_eq!(b["ConfigurationSetName"], "transactional");

    // Only Resend configured: nobody can send it — permanent, with the reason.
    let handler = EmailHandler::new(&config(vec![resend(&rs)])).unwrap();
    let m = permanent(handler.handle(&ctx(JobId::new()), job).await.unwrap_err());
    assert!(m.contains("no configured provider can send this email"), "{m}");
}

#[tokio::test]
async fn attachments_come_inline_or_from_the_tenants_objects() {
    let dir = tempfile_dir::Dir::new();
    let objects = Arc::new(LocalObjects::new(dir.0.join("objects")));
    objects.put("tenants/acme/reports/q4.pdf", b"%PDF-1.4 report".to_vec(), Some("application/pdf")).await.unwrap();
    objects.put("tenants/other/secret.txt", b"not yours".to_vec(), None).await.unwrap();
    let rs = FakeProvider::start(Kind::Resend, "k").await;
    let mut cfg = config(vec![resend(&rs)]);
    cfg.attachments_max_bytes = 1024;
    let handler = EmailHandler::new(&cfg).unwrap().with_objects(objects);
    let job = |key: &str| EmailJob {
        attachments: vec![
            Attachment {
                filename: "note.txt".into(),
                content: Some(base64::engine::general_purpose::STANDARD.encode("inline note")),
                ..Default::default()
            },
            Attachment { filename: "q4.pdf".into(), key: Some(key.into()), ..Default::default() },
        ],
        ..email("ann@example.com")
    };
    handler.handle(&ctx(JobId::new()), job("tenants/acme/reports/q4.pdf")).await.unwrap();
    let att = rs.sent()[0]["attachments"].clone();
    let decode = |v: &Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    assert_eq!(decode(&att[0]["content"]), b"inline note");
    assert_eq!(
        (att[1]["filename"].as_str(), att[1]["content_type"].as_str()),
        (Some("q4.pdf"), Some("application/pdf"))
    );
    assert_eq!(decode(&att[1]["content"]), b"%PDF-1.4 report");

    for key in ["tenants/other/secret.txt", "tenants/acme/../other/secret.txt", "system/x"] {
        let m = permanent(handler.handle(&ctx(JobId::new()), job(key)).await.unwrap_err());
        assert!(m.contains("outside the tenant's prefix `tenants/acme/`"), "{m}");
    }
    let m = permanent(handler.handle(&ctx(JobId::new()), job("tenants/acme/missing.pdf")).await.unwrap_err());
    assert!(m.contains("does not exist"), "{m}");
    let big = EmailJob {
        attachments: vec![Attachment {
            filename: "big.bin".into(),
            content: Some(base64::engine::general_purpose::STANDARD.encode(vec![0u8; 2000])),
            ..Default::default()
        }],
        ..email("ann@example.com")
    };
    let m = permanent(handler.handle(&ctx(JobId::new()), big).await.unwrap_err());
    assert!(m.contains("EMAIL_ATTACHMENTS_MAX_BYTES"), "{m}");
    assert_eq!(rs.sent().len(), 1);
}

#[tokio::test]
async fn manually_suppressed_recipients_are_not_sent_to() {
    let d = db().await;
    let rs = FakeProvider::start(Kind::Resend, "k").await;
    SuppressionList::new(d.store.db())
        .add(TENANT, "Blocked@Example.com", SuppressionReason::Complaint, Some("spam report"), "api")
        .await
        .unwrap();
    let handler = EmailHandler::new(&config(vec![resend(&rs)])).unwrap().with_store(d.store.clone());
    let job = email("Blocked <blocked@example.com>");
    let id = enqueue(&d.store, &job, None).await;
    let r = handler.handle(&ctx(id), job).await.unwrap().unwrap();
    assert_eq!(r["status"], "suppressed");
    assert!(r["reason"].as_str().unwrap().contains("blocked@example.com (complaint)"), "{r}");
    assert!(rs.requests().is_empty());
    // Another tenant's list does not apply.
    let job = email("blocked@example.com");
    let mut other = ctx(JobId::new());
    other.tenant = "other".into();
    let r = handler.handle(&other, job).await.unwrap().unwrap();
    assert_eq!(r["status"], "sent");
}
