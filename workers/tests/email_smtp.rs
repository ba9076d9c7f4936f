//! The email handler against real transports: an aiosmtpd server (plain, rejecting,
//! STARTTLS + AUTH), a silent TCP server (timeouts), a closed port, and the outbox directory.
//!
//! Needs Python with aiosmtpd: run `scripts/test-tools.sh` and export the `WHARF_PYTHON=...`
//! line it prints (without it, `python3` is used). The STARTTLS test also needs `openssl`.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use wharf_jobs::{JobId, config::Env, kinds::email::EmailJob};
use wharf_workers::{
    Handler, JobContext, JobError,
    email::{EmailConfig, EmailHandler, EmailProviderConfig, SmtpConfig, SmtpCredentials},
};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wharf-email-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Python's Maildir creates `tmp/new/cur` only for a directory that does not exist yet.
fn maildir_in(dir: &TempDir) -> PathBuf {
    dir.path().join("Maildir")
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python() -> String {
    std::env::var("WHARF_PYTHON").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "python3".into())
}

/// Fails (never skips) with the fix when the Python tools are missing.
fn require_aiosmtpd() -> String {
    let py = python();
    let out = Command::new(&py).args(["-c", "import aiosmtpd"]).output();
    match out {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "`{py}` cannot import aiosmtpd ({}).\nRun `scripts/test-tools.sh` and export the \
             `WHARF_PYTHON=...` line it prints, then run the tests again.",
            String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
        ),
        Err(e) => panic!(
            "cannot run `{py}` ({e}).\nRun `scripts/test-tools.sh` and export the \
             `WHARF_PYTHON=...` line it prints, then run the tests again."
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sink_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/smtp_sink.py")
}

/// A running SMTP server process, killed on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: TempDir,
}

impl SmtpServer {
    /// aiosmtpd's own command line with its Mailbox handler: accepts everything.
    fn aiosmtpd() -> Self {
        let py = require_aiosmtpd();
        let maildir = TempDir::new("maildir");
        let port = free_port();
        let mut cmd = Command::new(py);
        cmd.args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir_in(&maildir))
            .args(["-l", &format!("127.0.0.1:{port}")]);
        Self::start(cmd, port, maildir)
    }

    /// `tests/support/smtp_sink.py`: rejects `reject*@`, defers `defer*@`; `extra` adds TLS/AUTH.
    fn sink(extra: &[&str]) -> Self {
        let py = require_aiosmtpd();
        let maildir = TempDir::new("maildir");
        let port = free_port();
        let mut cmd = Command::new(py);
        cmd.arg(sink_script()).arg(maildir_in(&maildir)).arg(port.to_string()).args(extra);
        Self::start(cmd, port, maildir)
    }

    fn start(mut cmd: Command, port: u16, maildir: TempDir) -> Self {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the SMTP server");
        let mut server = SmtpServer { child, port, maildir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut s) = server.child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("SMTP server exited early ({status}): {err}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "SMTP server did not listen on {port} within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The messages in `<maildir>/new`, each as raw text.
    fn messages(&self) -> Vec<String> {
        let dir = maildir_in(&self.maildir).join("new");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd {
                out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
            }
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed message: unfolded top-level headers (name lower-cased, repeated ones in order)
/// and the rest as the body.
struct Parsed {
    headers: Vec<(String, String)>,
    body: String,
}

impl Parsed {
    fn new(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").expect("a header block");
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("continuation after a header");
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else {
                let (n, v) = line.split_once(':').expect("name: value");
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Parsed { headers, body: body.to_string() }
    }

    fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn header_text(&self) -> String {
        self.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect()
    }
}

fn ctx(id: JobId) -> JobContext {
    JobContext {
        id,
        tenant: "t1".into(),
        kind: "email".into(),
        attempt: 1,
        max_attempts: 5,
        traceparent: None,
        shutdown: CancellationToken::new(),
    }
}

fn job() -> EmailJob {
    EmailJob {
        from: "Wharf Robot <noreply@example.com>".into(),
        to: vec!["ann@example.com".into(), "Bob Example <bob@example.org>".into()],
        cc: vec!["carol@example.net".into()],
        bcc: vec!["hidden@example.com".into()],
        reply_to: Some("support@example.com".into()),
        subject: "Quarterly report".into(),
        text: Some("Hello in plain text.".into()),
        html: Some("<p>Hello in <b>HTML</b>.</p>".into()),
        ..Default::default()
    }
}

fn smtp_handler(port: u16, timeout: Duration) -> EmailHandler {
    let cfg = EmailConfig::new(EmailProviderConfig::Smtp(SmtpConfig::new("127.0.0.1", port)), timeout);
    EmailHandler::new(&cfg).unwrap()
}

// ---------------------------------------------------------------------------------------------
// SMTP

#[tokio::test]
async fn smtp_delivers_headers_and_both_parts_without_bcc() {
    let server = SmtpServer::aiosmtpd();
    // Through the environment, as the worker reads it.
    let port = server.port.to_string();
    let env = Env::from_pairs([
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("EMAIL_TIMEOUT_MS", "5000"),
    ]);
    let cfg = EmailConfig::from_env(&env, Path::new("/nonexistent")).unwrap();
    let handler = EmailHandler::new(&cfg).unwrap();
    assert_eq!(handler.provider_name(), "smtp");

    let id = JobId::new();
    let result = handler.handle(&ctx(id), job()).await.expect("sent").expect("a result");
    assert_eq!(result["provider"], "smtp");
    assert_eq!(result["message_id"], format!("<{id}@wharf>"));
    assert!(result["response"].as_str().unwrap().starts_with("250"), "{result}");

    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "one message in the Maildir");
    let m = Parsed::new(&msgs[0]);
    assert_eq!(m.get("From"), Some("\"Wharf Robot\" <noreply@example.com>"));
    assert_eq!(m.get("To"), Some("ann@example.com, \"Bob Example\" <bob@example.org>"));
    assert_eq!(m.get("Cc"), Some("carol@example.net"));
    assert_eq!(m.get("Reply-To"), Some("support@example.com"));
    assert_eq!(m.get("Subject"), Some("Quarterly report"));
    assert_eq!(m.get("Message-ID"), Some(format!("<{id}@wharf>").as_str()));
    assert_eq!(m.get("X-Wharf-Job-Id"), Some(id.to_string().as_str()));
    assert!(m.get("Content-Type").unwrap().starts_with("multipart/alternative"), "{}", m.header_text());
    assert!(m.body.contains("Content-Type: text/plain") && m.body.contains("Hello in plain text."));
    assert!(m.body.contains("Content-Type: text/html") && m.body.contains("<p>Hello in <b>HTML</b>.</p>"));

    // Bcc: delivered (the sink records the envelope in X-RcptTo) but never in the message.
    assert!(m.get("X-RcptTo").unwrap().contains("hidden@example.com"), "{}", m.header_text());
    assert_eq!(m.get("Bcc"), None);
    let without_envelope: String =
        m.headers.iter().filter(|(n, _)| !n.starts_with("x-rcptto")).map(|(n, v)| format!("{n}: {v}\n")).collect();
    assert!(!without_envelope.contains("hidden@example.com"), "{without_envelope}");
    assert!(!m.body.contains("hidden@example.com"));
    assert_eq!(m.get("X-MailFrom"), Some("noreply@example.com"));
}

#[tokio::test]
async fn smtp_retry_reuses_the_message_id_and_the_pool() {
    let server = SmtpServer::aiosmtpd();
    let handler = smtp_handler(server.port, Duration::from_secs(5));
    let id = JobId::new();
    let text_only = EmailJob { html: None, bcc: vec![], ..job() };
    for _ in 0..2 {
        handler.handle(&ctx(id), text_only.clone()).await.expect("sent");
    }
    let msgs: Vec<_> = server.messages().iter().map(|m| Parsed::new(m)).collect();
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert_eq!(m.get("Message-ID"), Some(format!("<{id}@wharf>").as_str()));
        assert!(m.get("Content-Type").unwrap().starts_with("text/plain"));
        assert!(m.body.contains("Hello in plain text."));
    }
}

#[tokio::test]
async fn smtp_550_is_permanent_with_the_servers_reply() {
    let server = SmtpServer::sink(&[]);
    let handler = smtp_handler(server.port, Duration::from_secs(5));
    let j = EmailJob { to: vec!["reject-me@example.com".into()], cc: vec![], bcc: vec![], ..job() };
    let err = handler.handle(&ctx(JobId::new()), j).await.unwrap_err();
    let JobError::Permanent { message } = &err else { panic!("expected permanent, got {err:?}") };
    assert!(message.starts_with("smtp rejected the message: 550"), "{message}");
    assert!(message.contains("Recipient address rejected"), "{message}");
    assert!(server.messages().is_empty());

    // The same server still accepts a good recipient afterwards (the pooled connection was reset).
    let ok = EmailJob { to: vec!["fine@example.com".into()], cc: vec![], bcc: vec![], ..job() };
    handler.handle(&ctx(JobId::new()), ok).await.expect("sent");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn smtp_451_is_transient() {
    let server = SmtpServer::sink(&[]);
    let handler = smtp_handler(server.port, Duration::from_secs(5));
    let j = EmailJob { to: vec!["defer@example.com".into()], cc: vec![], bcc: vec![], ..job() };
    let err = handler.handle(&ctx(JobId::new()), j).await.unwrap_err();
    let JobError::Transient { message, .. } = &err else { panic!("expected transient, got {err:?}") };
    assert!(message.contains("451"), "{message}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn smtp_connection_refused_is_transient() {
    let port = free_port(); // nothing listens there now
    let handler = smtp_handler(port, Duration::from_secs(5));
    let started = Instant::now();
    let err = handler.handle(&ctx(JobId::new()), job()).await.unwrap_err();
    let JobError::Transient { message, .. } = &err else { panic!("expected transient, got {err:?}") };
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "refusal must not wait for the timeout");
}

#[tokio::test]
async fn smtp_silent_server_times_out_as_transient() {
    // Accepts TCP connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let _ = wait.recv_timeout(Duration::from_secs(10)); // silent until the test is done
        drop(conn);
    });
    let handler = smtp_handler(port, Duration::from_millis(400));
    let started = Instant::now();
    let err = handler.handle(&ctx(JobId::new()), job()).await.unwrap_err();
    let JobError::Transient { message, .. } = &err else { panic!("expected transient, got {err:?}") };
    assert!(message.contains("timed out after 400 ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    done.send(()).unwrap();
    holder.join().unwrap();
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the STARTTLS test needs the `openssl` command (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, made with `openssl`.
/// Returns (ca.pem, server cert, server key).
fn test_pki(dir: &Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca, ca_key, cert, key, csr, ext) =
        (p("ca.pem"), p("ca.key"), p("server.pem"), p("server.key"), p("server.csr"), p("server.ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wharf test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (ca, cert, key)
}

#[tokio::test]
async fn smtp_starttls_and_auth() {
    let certs = TempDir::new("certs");
    let (ca, cert, key) = test_pki(certs.path());
    let server = SmtpServer::sink(&["--tls", &cert, &key, "--user", "mailer", "--password", "s3cret-pass"]);

    let port = server.port.to_string();
    let base = [
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_USER", "mailer"),
        ("SMTP_REQUIRE_TLS", "true"),
        ("EMAIL_TIMEOUT_MS", "5000"),
    ];
    let handler_with = |extra: &[(&'static str, &str)]| {
        let mut env = Env::from_pairs(base);
        for (k, v) in extra {
            env.set(k, *v);
        }
        EmailHandler::new(&EmailConfig::from_env(&env, Path::new("/nonexistent")).unwrap()).unwrap()
    };

    // Trusting the test CA, with the right password: delivered over TLS.
    let good = handler_with(&[("SMTP_PASS", "s3cret-pass"), ("SMTP_TLS_CA_FILE", ca.as_str())]);
    let id = JobId::new();
    let result = good.handle(&ctx(id), job()).await.expect("sent over STARTTLS with AUTH").expect("a result");
    assert_eq!(result["message_id"], format!("<{id}@wharf>"));
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(Parsed::new(&msgs[0]).get("Message-ID"), Some(format!("<{id}@wharf>").as_str()));

    // A wrong password: the relay's 535 is retried (a configuration problem, not the
    // message's), and the password is never in the error.
    let wrong = handler_with(&[("SMTP_PASS", "wrong-pass-xyz"), ("SMTP_TLS_CA_FILE", ca.as_str())]);
    let err = wrong.handle(&ctx(JobId::new()), job()).await.unwrap_err();
    let JobError::Transient { message, .. } = &err else { panic!("expected transient, got {err:?}") };
    assert!(message.contains("535"), "{message}");
    assert!(message.contains("SMTP_USER/SMTP_PASS"), "{message}");
    assert!(!format!("{err:?} {err}").contains("wrong-pass-xyz"));

    // Without the CA the private certificate is refused: a transient TLS failure.
    let untrusted = handler_with(&[("SMTP_PASS", "s3cret-pass")]);
    let err = untrusted.handle(&ctx(JobId::new()), job()).await.unwrap_err();
    let JobError::Transient { message, .. } = &err else { panic!("expected transient, got {err:?}") };
    assert!(message.to_lowercase().contains("tls") || message.contains("certificate"), "{message}");
    assert!(!message.contains("s3cret-pass"));
    assert_eq!(server.messages().len(), 1, "nothing more was delivered");
}

#[test]
fn smtp_ca_file_errors_name_the_variable() {
    let dir = TempDir::new("ca");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for path in [dir.path().join("missing.pem"), not_pem] {
        let mut smtp = SmtpConfig::new("127.0.0.1", 2525);
        smtp.tls_ca_file = Some(path);
        smtp.credentials = Some(SmtpCredentials { user: "u".into(), pass: "p".into() });
        let cfg = EmailConfig::new(EmailProviderConfig::Smtp(smtp), Duration::from_secs(1));
        let e = EmailHandler::new(&cfg).err().expect("an error");
        assert_eq!(e.var, "SMTP_TLS_CA_FILE", "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox

#[tokio::test]
async fn outbox_writes_an_eml_file_with_the_headers() {
    let root = TempDir::new("outbox");
    let dir = root.path().join("nested/outbox"); // does not exist yet
    let env = Env::from_pairs([]);
    let cfg = EmailConfig::from_env(&env, &dir).unwrap();
    let handler = EmailHandler::new(&cfg).unwrap();
    assert_eq!(handler.provider_name(), "outbox");
    assert!(dir.is_dir(), "the outbox directory is created");

    let id = JobId::new();
    let result = handler.handle(&ctx(id), job()).await.expect("written").expect("a result");
    assert_eq!(result["provider"], "outbox");
    assert_eq!(result["message_id"], format!("<{id}@wharf>"));

    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    assert_eq!(result["file"], files[0].display().to_string());

    let m = Parsed::new(&std::fs::read_to_string(&files[0]).unwrap());
    assert_eq!(m.get("From"), Some("\"Wharf Robot\" <noreply@example.com>"));
    assert_eq!(m.get("To"), Some("ann@example.com, \"Bob Example\" <bob@example.org>"));
    assert_eq!(m.get("Cc"), Some("carol@example.net"));
    assert_eq!(m.get("Subject"), Some("Quarterly report"));
    assert_eq!(m.get("Message-ID"), Some(format!("<{id}@wharf>").as_str()));
    assert_eq!(m.get("X-Wharf-Job-Id"), Some(id.to_string().as_str()));
    assert_eq!(m.get("Bcc"), None);
    assert!(!m.header_text().contains("hidden@example.com"));
    assert!(m.get("Content-Type").unwrap().starts_with("multipart/alternative"));

    // Removed behind the worker's back: recreated on the next send.
    std::fs::remove_dir_all(&dir).unwrap();
    handler.handle(&ctx(JobId::new()), job()).await.expect("written again");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[tokio::test]
async fn outbox_bad_address_is_permanent() {
    let root = TempDir::new("outbox-bad");
    let cfg = EmailConfig::from_env(&Env::default(), root.path()).unwrap();
    let handler = EmailHandler::new(&cfg).unwrap();
    let j = EmailJob { to: vec!["not an address".into()], ..job() };
    let err = handler.handle(&ctx(JobId::new()), j).await.unwrap_err();
    let JobError::Permanent { message } = &err else { panic!("expected permanent, got {err:?}") };
    assert!(message.starts_with("to[0]:"), "{message}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn outbox_dir_that_cannot_be_created_names_the_variable() {
    let root = TempDir::new("outbox-file");
    let file = root.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cfg = EmailConfig::new(EmailProviderConfig::Outbox { dir: file.join("sub") }, Duration::from_secs(1));
    let e = EmailHandler::new(&cfg).err().expect("an error");
    assert_eq!(e.var, "EMAIL_OUTBOX_DIR");
}
