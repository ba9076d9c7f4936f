use super::*;
#[tokio::test]
async fn scratch_print() {
    let h = Harness::new().await;
    let key = h.admin("acme").await;
    let r = send(h.cli.post("/v1/emails").header("Authorization", bearer(&key)).body_json(&email_body())).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let r = send(h.cli.get(format!("/v1/jobs/{id}")).header("Authorization", bearer(&key))).await;
    println!("job -> {}", r.text);
    let r = send(h.cli.get("/v1/dead-letters").header("Authorization", bearer(&key))).await;
    println!("dl -> {}", r.text);
}
