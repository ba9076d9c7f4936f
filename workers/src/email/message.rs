//! Turning an [`EmailJob`] into a MIME message.

use lettre::{
    Address, Message,
    message::{
        Mailbox, MultiPart, SinglePart,
        header::{ContentType, HeaderName, HeaderValue},
    },
};
use thiserror::Error;
use wharf_jobs::{JobId, kinds::email::EmailJob, kinds::email::split_mailbox};

use super::{Body, LoadedAttachment, Outgoing};

/// The header that carries the job's id.
pub const JOB_ID_HEADER: &str = "X-Wharf-Job-Id";

/// A job whose content cannot be made into a message. Sending it again cannot succeed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvalidMessage {
    #[error("{field}: `{value}` is not a valid mailbox: {reason}")]
    Mailbox { field: String, value: String, reason: String },
    #[error("no text or html body")]
    NoBody,
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// The `Message-ID` of a job's email: stable across the job's attempts, so a retry after a
/// lost reply produces the same message and receivers can recognise the duplicate.
pub fn message_id_for(job_id: &JobId) -> String {
    format!("<{job_id}@wharf>")
}

/// The header that carries the email's tags (`name=value; …`) over SMTP and in the outbox.
pub const TAGS_HEADER: &str = "X-Wharf-Tags";

/// Builds the message: From, To, Cc, Reply-To, Subject, `Message-ID` from the job id, the
/// `X-Wharf-Job-Id` header, and a text, html or multipart/alternative body. Bcc recipients
/// are in the envelope only, never in the headers.
pub fn build_message(job_id: &JobId, job: &EmailJob) -> Result<Message, InvalidMessage> {
    let body = Body { subject: job.subject.clone(), text: job.text.clone(), html: job.html.clone() };
    build(job_id, job_id, job, &body, &[])
}

/// The MIME message of an outgoing email: its resolved body (given or rendered), its
/// attachments (multipart/mixed), its tags, `Message-ID` from the email's identity.
pub fn build_mime(out: &Outgoing) -> Result<Message, InvalidMessage> {
    let body = out.body().map_err(|e| InvalidMessage::Build(e.to_string()))?;
    build(&out.job_id, &out.identity, &out.email, body, &out.attachments)
}

fn build(
    job_id: &JobId,
    identity: &JobId,
    job: &EmailJob,
    body: &Body,
    attachments: &[LoadedAttachment],
) -> Result<Message, InvalidMessage> {
    let mut builder = Message::builder()
        .from(mailbox("from", &job.from)?)
        .subject(body.subject.clone())
        .message_id(Some(message_id_for(identity)))
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str(JOB_ID_HEADER), job_id.to_string()));
    if !job.tags.is_empty() {
        let tags: Vec<String> = job.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        builder = builder.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str(TAGS_HEADER), tags.join("; ")));
    }
    for (i, addr) in job.to.iter().enumerate() {
        builder = builder.to(mailbox(&format!("to[{i}]"), addr)?);
    }
    for (i, addr) in job.cc.iter().enumerate() {
        builder = builder.cc(mailbox(&format!("cc[{i}]"), addr)?);
    }
    for (i, addr) in job.bcc.iter().enumerate() {
        builder = builder.bcc(mailbox(&format!("bcc[{i}]"), addr)?);
    }
    if let Some(r) = &job.reply_to {
        builder = builder.reply_to(mailbox("reply_to", r)?);
    }
    enum Content {
        Single(SinglePart),
        Multi(MultiPart),
    }
    let content = match (&body.text, &body.html) {
        (Some(text), Some(html)) => Content::Multi(MultiPart::alternative_plain_html(text.clone(), html.clone())),
        (Some(text), None) => Content::Single(SinglePart::plain(text.clone())),
        (None, Some(html)) => Content::Single(SinglePart::html(html.clone())),
        (None, None) => return Err(InvalidMessage::NoBody),
    };
    let built = if attachments.is_empty() {
        match content {
            Content::Single(p) => builder.singlepart(p),
            Content::Multi(m) => builder.multipart(m),
        }
    } else {
        let mut mixed = match content {
            Content::Single(p) => MultiPart::mixed().singlepart(p),
            Content::Multi(m) => MultiPart::mixed().multipart(m),
        };
        for (i, a) in attachments.iter().enumerate() {
            let ct = ContentType::parse(&a.content_type).map_err(|e| InvalidMessage::Field {
                field: format!("attachments[{i}].content_type"),
                reason: format!("`{}`: {e}", a.content_type),
            })?;
            mixed = mixed.singlepart(lettre::message::Attachment::new(a.filename.clone()).body(a.bytes.clone(), ct));
        }
        builder.multipart(mixed)
    };
    built.map_err(|e| InvalidMessage::Build(e.to_string()))
}

/// `addr@example.com` or `Name <addr@example.com>`, split the same way the API validates it.
fn mailbox(field: &str, value: &str) -> Result<Mailbox, InvalidMessage> {
    let invalid =
        |reason: String| InvalidMessage::Mailbox { field: field.to_string(), value: value.to_string(), reason };
    if value.contains(['\r', '\n']) {
        return Err(invalid("contains a line break".into()));
    }
    let (name, addr) = split_mailbox(value);
    let addr: Address = addr.parse().map_err(|e| invalid(format!("{e}")))?;
    Ok(Mailbox::new(name.map(str::to_string), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> EmailJob {
        EmailJob {
            from: "Wharf Robot <noreply@example.com>".into(),
            to: vec!["ann@example.com".into(), "Bob <bob@example.org>".into()],
            cc: vec!["carol@example.net".into()],
            bcc: vec!["secret@example.com".into()],
            reply_to: Some("support@example.com".into()),
            subject: "Your report".into(),
            text: Some("plain body".into()),
            html: None,
            ..Default::default()
        }
    }

    fn render(job: &EmailJob, id: &JobId) -> String {
        String::from_utf8(build_message(id, job).unwrap().formatted()).unwrap()
    }

    /// The value of a header in the message's top-level header block.
    fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        head.split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
            .map(|l| l[name.len() + 1..].trim())
    }

    #[test]
    fn headers_and_envelope() {
        let id = JobId::new();
        let msg = build_message(&id, &job()).unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert_eq!(header(&raw, "From"), Some("\"Wharf Robot\" <noreply@example.com>"));
        assert_eq!(header(&raw, "To"), Some("ann@example.com, Bob <bob@example.org>"));
        assert_eq!(header(&raw, "Cc"), Some("carol@example.net"));
        assert_eq!(header(&raw, "Reply-To"), Some("support@example.com"));
        assert_eq!(header(&raw, "Subject"), Some("Your report"));
        assert_eq!(header(&raw, "Message-ID"), Some(format!("<{id}@wharf>").as_str()));
        assert_eq!(header(&raw, "X-Wharf-Job-Id"), Some(id.to_string().as_str()));
        assert!(header(&raw, "Date").is_some());
        assert_eq!(header(&raw, "Bcc"), None);
        assert!(!raw.contains("secret@example.com"), "bcc leaked into the message:\n{raw}");

        let env = msg.envelope();
        assert_eq!(env.from().map(|a| a.to_string()).as_deref(), Some("noreply@example.com"));
        let mut rcpt: Vec<_> = env.to().iter().map(|a| a.to_string()).collect();
        rcpt.sort();
        assert_eq!(rcpt, ["ann@example.com", "bob@example.org", "carol@example.net", "secret@example.com"]);
    }

    #[test]
    fn message_id_is_stable_across_attempts() {
        let id = JobId::new();
        let a = build_message(&id, &job()).unwrap();
        let b = build_message(&id, &job()).unwrap();
        let mid = |m: &Message| m.headers().get_raw("Message-ID").map(str::to_string);
        assert_eq!(mid(&a), mid(&b));
        assert_eq!(mid(&a), Some(message_id_for(&id)));
        let other = build_message(&JobId::new(), &job()).unwrap();
        assert_ne!(mid(&a), mid(&other));
    }

    #[test]
    fn text_only_is_a_single_text_plain_part() {
        let raw = render(&job(), &JobId::new());
        assert!(header(&raw, "Content-Type").unwrap().starts_with("text/plain"), "{raw}");
        assert_eq!(header(&raw, "MIME-Version"), Some("1.0"));
        assert!(raw.ends_with("plain body") || raw.contains("\r\n\r\nplain body"), "{raw}");
    }

    #[test]
    fn html_only_is_a_single_text_html_part() {
        let j = EmailJob { text: None, html: Some("<p>hi</p>".into()), ..job() };
        let raw = render(&j, &JobId::new());
        assert!(header(&raw, "Content-Type").unwrap().starts_with("text/html"), "{raw}");
        assert!(raw.contains("<p>hi</p>"));
    }

    #[test]
    fn text_and_html_make_multipart_alternative() {
        let j = EmailJob { html: Some("<p>html body</p>".into()), ..job() };
        let raw = render(&j, &JobId::new());
        let ct = header(&raw, "Content-Type").unwrap();
        assert!(ct.starts_with("multipart/alternative"), "{raw}");
        let plain = raw.find("Content-Type: text/plain").expect("text part");
        let html = raw.find("Content-Type: text/html").expect("html part");
        assert!(plain < html, "text part must come first (least preferred)");
        assert!(raw.contains("plain body") && raw.contains("<p>html body</p>"));
    }

    #[test]
    fn non_ascii_subject_and_names_are_encoded() {
        let j = EmailJob {
            from: "Zoë Ångström <zoe@example.com>".into(), subject: "Grüße — 你好".into(), ..job()
        };
        let raw = render(&j, &JobId::new());
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(head.is_ascii(), "headers must be encoded:\n{head}");
        assert!(header(&raw, "Subject").unwrap().starts_with("=?utf-8?"), "{raw}");
    }

    #[test]
    fn bad_addresses_name_the_field() {
        let j = EmailJob { cc: vec!["ok@example.com".into(), "not-an-address".into()], ..job() };
        let e = build_message(&JobId::new(), &j).unwrap_err();
        assert!(matches!(&e, InvalidMessage::Mailbox { field, .. } if field == "cc[1]"), "{e:?}");
        assert!(e.to_string().starts_with("cc[1]: `not-an-address`"), "{e}");

        let j = EmailJob { from: "Eve <eve@example.com>\r\nBcc: x@example.com".into(), ..job() };
        let e = build_message(&JobId::new(), &j).unwrap_err();
        assert!(matches!(&e, InvalidMessage::Mailbox { field, .. } if field == "from"), "{e:?}");
    }

    #[test]
    fn no_body_is_an_error() {
        let j = EmailJob { text: None, html: None, ..job() };
        assert_eq!(build_message(&JobId::new(), &j).unwrap_err(), InvalidMessage::NoBody);
    }
}
