use std::time::Duration;

use wharf_jobs::{JobState, keys::Scope};

use super::*;

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let h = Harness::new().await;
    let key = h.key("acme", &[Scope::DlqRead]).await;
    let e1 = h.dead_email("acme", "SMTP timeout").await;
    let d1 = h.dead_diagnostic("acme", "boom").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e2 = h.dead_email("acme", "smtp: 550 mailbox unavailable").await;
    let e3 = h.dead_email("acme", "provider 400").await;
    h.dead_email("globex", "SMTP timeout").await;
    // Not dead: not listed.
    h.store.enqueue(NewJob::new("acme", "email", "email", email_body()), None).await.unwrap();

    let get = |q: String| send(h.cli.get(format!("/v1/dead-letters?{q}")).header("Authorization", bearer(&key)));
    let s = |id: JobId| id.to_string();

    let all = get(String::new()).await;
    let all = all.assert_status(200);
    assert_eq!(ids(all), vec![s(e3), s(e2), s(d1), s(e1)], "newest first, this tenant only");
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["items"][0];
    assert_eq!(first["state"], "dead");
    assert_eq!(first["last_error"], "provider 400");
    assert_eq!(first["attempts"], 1);
    assert!(first.get("errors").is_none(), "list items carry no attempt errors");

    assert_eq!(ids(get("kind=diagnostic".into()).await.assert_status(200)), vec![s(d1)]);
    assert_eq!(ids(get("error=smtp".into()).await.assert_status(200)), vec![s(e2), s(e1)]);
    assert_eq!(ids(get("kind=email&error=SMTP".into()).await.assert_status(200)), vec![s(e2), s(e1)]);
    let t = between.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(ids(get(format!("since={t}")).await.assert_status(200)), vec![s(e3), s(e2)]);
    assert_eq!(ids(get(format!("until={t}")).await.assert_status(200)), vec![s(d1), s(e1)]);

    // Pages of two, following the cursor.
    let p1 = get("limit=2".into()).await;
    let p1 = p1.assert_status(200);
    assert_eq!(ids(p1), vec![s(e3), s(e2)]);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = get(format!("limit=2&cursor={cursor}")).await;
    let p2 = p2.assert_status(200);
    assert_eq!(ids(p2), vec![s(d1), s(e1)]);
    if let Some(c) = p2["next_cursor"].as_str() {
        assert!(ids(get(format!("limit=2&cursor={c}")).await.assert_status(200)).is_empty());
    }
}

#[tokio::test]
async fn show_gives_errors_and_payload_of_dead_letters_only() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let dead = h.dead_email("acme", "SMTP timeout").await;

    let r = send(h.cli.get(format!("/v1/dead-letters/{dead}")).header("Authorization", bearer(&key))).await;
    let dl = r.assert_status(200);
    assert_eq!(dl["id"], dead.to_string());
    assert_eq!(dl["state"], "dead");
    assert_eq!(dl["payload"], email_body());
    let errors = dl["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["attempt"], 1);
    assert_eq!(errors[0]["error"], "SMTP timeout");
    assert_eq!(errors[0]["worker"], WORKER);

    // The job view shows the same errors.
    let r = send(h.cli.get(format!("/v1/jobs/{dead}")).header("Authorization", bearer(&key))).await;
    let job = r.assert_status(200);
    assert_eq!(job["state"], "dead");
    assert_eq!(job["errors"][0]["error"], "SMTP timeout");
    assert!(job.get("payload").is_none());

    // A queued job is not a dead letter.
    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer(&key)).body_json(&email_body())).await;
    let queued = r.assert_status(202)["id"].as_str().unwrap().to_string();
    send(h.cli.get(format!("/v1/dead-letters/{queued}")).header("Authorization", bearer(&key)))
        .await
        .assert_problem(404);
    send(h.cli.get("/v1/dead-letters/xyz").header("Authorization", bearer(&key))).await.assert_problem(404);
}

#[tokio::test]
async fn replay_one_dead_letter() {
    let h = Harness::new().await;
    let key = h.key("acme", &[Scope::DlqWrite, Scope::DlqRead, Scope::JobsRead]).await;
    let dead = h.dead_email("acme", "SMTP timeout").await;
    let replay = |id: String| h.cli.post(format!("/v1/dead-letters/{id}/replay")).header("Authorization", bearer(&key));

    // No body at all: the payload is replayed unchanged.
    let r = send(replay(dead.to_string())).await;
    let body = r.assert_status(202).clone();
    let new_id: JobId = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["replay_of"], dead.to_string());
    assert_eq!(body["status_url"], format!("{PUBLIC_URL}/v1/jobs/{new_id}"));

    let new_job = h.store.job("acme", new_id).await.unwrap().unwrap();
    assert_eq!(new_job.state, JobState::Queued);
    assert_eq!(new_job.replay_of, Some(dead));
    assert_eq!(new_job.payload, email_body());
    let r = send(h.cli.get(format!("/v1/dead-letters/{dead}")).header("Authorization", bearer(&key))).await;
    let old = r.assert_status(200);
    assert_eq!(old["state"], "replayed");
    assert_eq!(old["replayed_by"], new_id.to_string());

    // Replaying again is a conflict; the dead letter is gone from the list.
    let r = send(replay(dead.to_string())).await;
    r.assert_problem(409);
    assert!(r.json["detail"].as_str().unwrap().contains("replayed"));
    let r = send(h.cli.get("/v1/dead-letters").header("Authorization", bearer(&key))).await;
    assert!(ids(r.assert_status(200)).is_empty());

    send(replay(JobId::new().to_string())).await.assert_problem(404);
    send(replay("nope".into())).await.assert_problem(404);
}

#[tokio::test]
async fn replay_with_an_edited_payload() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let dead = h.dead_email("acme", "550 no such user").await;
    let replay = |body: Value| {
        send(
            h.cli
                .post(format!("/v1/dead-letters/{dead}/replay"))
                .header("Authorization", bearer(&key))
                .body_json(&body),
        )
    };

    let mut bad = email_body();
    bad["to"] = json!(["not-an-address", "ok@example.com"]);
    bad["subject"] = json!("");
    let r = replay(json!({ "payload": bad })).await;
    assert_eq!(r.assert_problem(422), vec!["payload.to[0]", "payload.subject"]);
    let r = replay(
        json!({ "payload": {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t", "x": 1} }),
    )
    .await;
    assert_eq!(r.assert_problem(422), vec!["payload.x"]);
    assert_eq!(replay(json!({ "payload": email_body(), "extra": true })).await.assert_problem(422), vec!["extra"]);
    // Still dead after the refusals.
    assert_eq!(h.store.job("acme", dead).await.unwrap().unwrap().state, JobState::Dead);

    let mut fixed = email_body();
    fixed["to"] = json!(["ann@example.org"]);
    let r = replay(json!({ "payload": fixed })).await;
    let new_id: JobId = r.assert_status(202)["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(h.store.job("acme", new_id).await.unwrap().unwrap().payload, fixed);
}

#[tokio::test]
async fn replay_honours_idempotency_keys() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let dead = h.dead_email("acme", "timeout").await;
    let replay = |idem: &'static str, body: Value| {
        send(
            h.cli
                .post(format!("/v1/dead-letters/{dead}/replay"))
                .header("Authorization", bearer(&key))
                .header("Idempotency-Key", idem)
                .body_json(&body),
        )
    };
    let first = replay("r-1", json!({})).await;
    let first = first.assert_status(202).clone();
    // The dead letter is now replayed, yet the repeat answers the first response, not 409.
    assert_eq!(replay("r-1", json!({})).await.assert_status(202), &first);
    assert_eq!(replay("r-1", json!({"payload": null})).await.assert_status(202), &first);
    let r = replay("r-1", json!({"payload": email_body()})).await;
    assert_eq!(r.assert_problem(422), vec!["Idempotency-Key"]);
    // A new key runs the operation: 409, since it is replayed already.
    replay("r-2", json!({})).await.assert_problem(409);
}

#[tokio::test]
async fn bulk_replay_by_filter() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let e1 = h.dead_email("acme", "SMTP timeout").await;
    let e2 = h.dead_email("acme", "smtp 421").await;
    let d1 = h.dead_diagnostic("acme", "boom").await;
    let other = h.dead_email("globex", "SMTP timeout").await;
    let bulk = |idem: Option<&'static str>, body: Value| {
        let mut req = h.cli.post("/v1/dead-letters/replay").header("Authorization", bearer(&key));
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        send(req.body_json(&body))
    };

    assert_eq!(bulk(None, json!({"since": "last week"})).await.assert_problem(422), vec!["since"]);
    assert_eq!(bulk(None, json!({"kind": "email", "state": "dead"})).await.assert_problem(422), vec!["state"]);
    assert_eq!(bulk(None, json!({"kind": 5})).await.assert_problem(422), vec!["kind"]);
    send(h.cli.post("/v1/dead-letters/replay").header("Authorization", bearer(&key))).await.assert_problem(400);

    let r = bulk(Some("bulk-1"), json!({"kind": "email", "error": "smtp"})).await;
    assert_eq!(r.assert_status(200), &json!({"replayed": 2}));
    for id in [e1, e2] {
        let job = h.store.job("acme", id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Replayed);
        let new = h.store.job("acme", job.replayed_by.unwrap()).await.unwrap().unwrap();
        assert_eq!((new.state, new.replay_of), (JobState::Queued, Some(id)));
    }
    assert_eq!(h.store.job("acme", d1).await.unwrap().unwrap().state, JobState::Dead);
    assert_eq!(h.store.job("globex", other).await.unwrap().unwrap().state, JobState::Dead, "other tenant untouched");

    // The repeat answers the stored count; another filter under the key is refused.
    assert_eq!(
        bulk(Some("bulk-1"), json!({"error": "smtp", "kind": "email"})).await.assert_status(200),
        &json!({"replayed": 2})
    );
    assert_eq!(bulk(Some("bulk-1"), json!({})).await.assert_problem(422), vec!["Idempotency-Key"]);

    assert_eq!(bulk(None, json!({})).await.assert_status(200), &json!({"replayed": 1}));
    assert_eq!(h.store.job("acme", d1).await.unwrap().unwrap().state, JobState::Replayed);
    assert_eq!(bulk(None, json!({})).await.assert_status(200), &json!({"replayed": 0}));
}

#[tokio::test]
async fn discard_a_dead_letter() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let dead = h.dead_email("acme", "timeout").await;
    let delete = || send(h.cli.delete(format!("/v1/dead-letters/{dead}")).header("Authorization", bearer(&key)));

    let r = delete().await;
    r.assert_status(204);
    assert!(r.text.is_empty());
    let r = send(h.cli.get(format!("/v1/dead-letters/{dead}")).header("Authorization", bearer(&key))).await;
    assert_eq!(r.assert_status(200)["state"], "discarded");
    delete().await.assert_problem(404);
    send(h.cli.post(format!("/v1/dead-letters/{dead}/replay")).header("Authorization", bearer(&key)))
        .await
        .assert_problem(409);
    send(h.cli.delete("/v1/dead-letters/bogus").header("Authorization", bearer(&key))).await.assert_problem(404);
}

#[tokio::test]
async fn dead_letters_are_invisible_to_other_tenants() {
    let h = Harness::new().await;
    let b = h.admin("globex").await;
    let dead = h.dead_email("acme", "timeout").await;
    let auth = ("Authorization", bearer(&b));

    let r = send(h.cli.get("/v1/dead-letters").header(auth.0, auth.1.clone())).await;
    assert!(ids(r.assert_status(200)).is_empty());
    send(h.cli.get(format!("/v1/dead-letters/{dead}")).header(auth.0, auth.1.clone())).await.assert_problem(404);
    send(h.cli.get(format!("/v1/jobs/{dead}")).header(auth.0, auth.1.clone())).await.assert_problem(404);
    send(h.cli.post(format!("/v1/dead-letters/{dead}/replay")).header(auth.0, auth.1.clone()))
        .await
        .assert_problem(404);
    send(h.cli.delete(format!("/v1/dead-letters/{dead}")).header(auth.0, auth.1.clone())).await.assert_problem(404);
    let r = send(h.cli.post("/v1/dead-letters/replay").header(auth.0, auth.1.clone()).body_json(&json!({}))).await;
    assert_eq!(r.assert_status(200), &json!({"replayed": 0}));
    assert_eq!(h.store.job("acme", dead).await.unwrap().unwrap().state, JobState::Dead);
}
