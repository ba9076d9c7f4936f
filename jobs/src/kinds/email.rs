//! The email job: what the API accepts and the email pool sends.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{FieldError, JobKind};
use crate::queue;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default of `EMAIL_ATTACHMENTS_MAX_BYTES`: the decoded size of all attachments of one email.
pub const DEFAULT_ATTACHMENTS_MAX_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_ATTACHMENTS: usize = 50;
pub const MAX_FILENAME_CHARS: usize = 255;
/// Postmark keeps at most 10 metadata fields (names ≤ 20, values ≤ 80 characters); Resend and
/// SES allow letters, digits, `_` and `-`. Tags obey all of them.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_NAME_CHARS: usize = 20;
pub const MAX_TAG_VALUE_CHARS: usize = 80;
pub const MAX_TEMPLATE_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EmailJob {
    /// `addr@example.com` or `Name <addr@example.com>`.
    pub from: String,
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Required unless a `template` gives the content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Content from a template instead of `subject`/`text`/`html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// Name → value; Resend `tags`, SES `EmailTags`, Postmark `Metadata`, an `X-Wharf-Tags`
    /// header over SMTP and in the outbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Only meaningful in the edited payload of a dead-letter replay: send again even though
    /// a provider already accepted this email (the send ledger would otherwise skip it).
    /// Applies to the replay that introduces it; a later replay of that replay that keeps the
    /// flag does not send a third time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_resend: bool,
}

/// Which template gives an email's subject and body. `name` is one of wharf's own templates
/// of the tenant (`PUT /v1/email-templates/{name}`), rendered by wharf, so it works on every
/// provider; `postmark_alias` and `ses_template` name templates kept at those providers and
/// are passed through to them (each provider uses its own when given, else wharf's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Postmark `TemplateAlias` (`/email/withTemplate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmark_alias: Option<String>,
    /// SES v2 template name (`Content.Template.TemplateName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses_template: Option<String>,
    /// The template's variables (Postmark `TemplateModel`, SES `TemplateData`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A file attached to an email: inline base64 `content`, or the `key` of an object under the
/// tenant's prefix (`tenants/{tenant}/…`), fetched when the email is sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub filename: String,
    /// `type/subtype`; guessed from the file name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Standard base64 (RFC 4648, with padding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl JobKind for EmailJob {
    const KIND: &'static str = "email";
    const QUEUE: &'static str = queue::EMAIL;
}

impl EmailJob {
    /// Every problem with the request, each naming its field.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        check_mailbox("from", &self.from, &mut errs);
        if self.to.is_empty() {
            errs.push(FieldError::new("to", "at least one recipient is required"));
        }
        for (name, list) in [("to", &self.to), ("cc", &self.cc), ("bcc", &self.bcc)] {
            for (i, addr) in list.iter().enumerate() {
                check_mailbox(&format!("{name}[{i}]"), addr, &mut errs);
            }
        }
        let total = self.to.len() + self.cc.len() + self.bcc.len();
        if total > MAX_RECIPIENTS {
            errs.push(FieldError::new("to", format!("{total} recipients in to, cc and bcc; at most {MAX_RECIPIENTS}")));
        }
        if let Some(r) = &self.reply_to {
            check_mailbox("reply_to", r, &mut errs);
        }
        match &self.template {
            Some(t) => {
                for (name, given) in [
                    ("subject", !self.subject.is_empty()),
                    ("text", self.text.is_some()),
                    ("html", self.html.is_some()),
                ] {
                    if given {
                        errs.push(FieldError::new(name, "give either a `template` or subject/text/html, not both"));
                    }
                }
                t.validate(&mut errs);
            }
            None => {
                if self.subject.is_empty() {
                    // As serde said before `template` made the subject optional.
                    errs.push(FieldError::new("subject", "is required"));
                } else if self.subject.trim().is_empty() {
                    errs.push(FieldError::new("subject", "must not be empty"));
                } else if self.subject.chars().count() > MAX_SUBJECT_CHARS {
                    errs.push(FieldError::new("subject", format!("longer than {MAX_SUBJECT_CHARS} characters")));
                } else if self.subject.contains(['\r', '\n']) {
                    errs.push(FieldError::new("subject", "must not contain line breaks"));
                }
                match (&self.text, &self.html) {
                    (None, None) => errs.push(FieldError::new("text", "give `text`, `html` or both (or a `template`)")),
                    _ => {
                        for (name, body) in [("text", &self.text), ("html", &self.html)] {
                            if let Some(b) = body {
                                if b.is_empty() {
                                    errs.push(FieldError::new(name, "must not be empty when given"));
                                } else if b.len() > MAX_BODY_BYTES {
                                    errs.push(FieldError::new(name, format!("larger than {MAX_BODY_BYTES} bytes")));
                                }
                            }
                        }
                    }
                }
            }
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            errs.push(FieldError::new("attachments", format!("at most {MAX_ATTACHMENTS} attachments")));
        }
        for (i, a) in self.attachments.iter().enumerate() {
            a.validate(&format!("attachments[{i}]"), &mut errs);
        }
        if self.tags.len() > MAX_TAGS {
            errs.push(FieldError::new("tags", format!("at most {MAX_TAGS} tags")));
        }
        for (name, value) in &self.tags {
            let field = format!("tags.{name}");
            if !is_tag_text(name, MAX_TAG_NAME_CHARS) {
                errs.push(FieldError::new(
                    &field,
                    format!("a tag name is 1–{MAX_TAG_NAME_CHARS} letters, digits, `_` or `-`"),
                ));
            }
            if !is_tag_text(value, MAX_TAG_VALUE_CHARS) {
                errs.push(FieldError::new(
                    &field,
                    format!("a tag value is 1–{MAX_TAG_VALUE_CHARS} letters, digits, `_` or `-`"),
                ));
            }
        }
        errs
    }
}

impl EmailJob {
    /// Every recipient (to, cc, bcc) as a bare address.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.to.iter().chain(&self.cc).chain(&self.bcc).map(|m| split_mailbox(m).1)
    }

    /// The decoded size of the inline attachments (object-key attachments are sized when they
    /// are fetched). Invalid base64 counts as its encoded length (validation reports it).
    pub fn inline_attachment_bytes(&self) -> usize {
        self.attachments.iter().filter_map(|a| a.content.as_deref()).map(decoded_len).sum()
    }

    /// The size limit of attachments, checked where the limit is known (API, worker).
    pub fn check_attachment_size(&self, max_bytes: usize) -> Option<FieldError> {
        let total = self.inline_attachment_bytes();
        (total > max_bytes).then(|| {
            FieldError::new(
                "attachments",
                format!("{total} bytes of attachments; at most {max_bytes} (EMAIL_ATTACHMENTS_MAX_BYTES)"),
            )
        })
    }
}

impl TemplateRef {
    fn validate(&self, errs: &mut Vec<FieldError>) {
        if self.name.is_none() && self.postmark_alias.is_none() && self.ses_template.is_none() {
            errs.push(FieldError::new(
                "template.name",
                "give `name` (a wharf template), `postmark_alias` or `ses_template`",
            ));
        }
        if let Some(n) = &self.name
            && let Err(e) = check_template_name(n)
        {
            errs.push(FieldError::new("template.name", e));
        }
        for (field, v) in
            [("template.postmark_alias", &self.postmark_alias), ("template.ses_template", &self.ses_template)]
        {
            if let Some(v) = v
                && (v.trim().is_empty() || v.len() > 255 || v.chars().any(char::is_control))
            {
                errs.push(FieldError::new(field, "must be 1–255 characters without control characters"));
            }
        }
    }
}

/// A wharf template's name: 1–100 letters, digits, `.`, `_` or `-`.
pub fn check_template_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TEMPLATE_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a template name: 1–{MAX_TEMPLATE_NAME_CHARS} letters, digits, `.`, `_` or `-`"))
    }
}

impl Attachment {
    fn validate(&self, field: &str, errs: &mut Vec<FieldError>) {
        let f = self.filename.trim();
        if f.is_empty() || f.chars().count() > MAX_FILENAME_CHARS {
            errs.push(FieldError::new(
                format!("{field}.filename"),
                format!("must be 1–{MAX_FILENAME_CHARS} characters"),
            ));
        } else if f.chars().any(|c| c.is_control() || c == '/' || c == '\\' || c == '"') {
            errs.push(FieldError::new(
                format!("{field}.filename"),
                "must not contain control characters, quotes or slashes",
            ));
        }
        if let Some(ct) = &self.content_type
            && !is_content_type(ct)
        {
            errs.push(FieldError::new(
                format!("{field}.content_type"),
                format!("`{ct}` is not a `type/subtype` media type"),
            ));
        }
        match (&self.content, &self.key) {
            (Some(_), Some(_)) | (None, None) => errs.push(FieldError::new(
                field.to_string(),
                "give exactly one of `content` (base64) or `key` (an object key)",
            )),
            (Some(c), None) => {
                if c.is_empty() {
                    errs.push(FieldError::new(format!("{field}.content"), "must not be empty"));
                } else if base64::engine::general_purpose::STANDARD.decode(c).is_err() {
                    errs.push(FieldError::new(
                        format!("{field}.content"),
                        "is not valid base64 (RFC 4648 standard alphabet, padded)",
                    ));
                }
            }
            (None, Some(k)) => {
                if k.trim().is_empty() || k.starts_with('/') || k.chars().any(char::is_control) {
                    errs.push(FieldError::new(format!("{field}.key"), "is not an object key (`tenants/{tenant}/…`)"));
                }
            }
        }
    }

    /// The content type to send: the given one, else a guess from the file name.
    pub fn media_type(&self) -> String {
        if let Some(ct) = &self.content_type {
            return ct.clone();
        }
        let ext = self.filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "pdf" => "application/pdf",
            "txt" | "log" => "text/plain",
            "csv" => "text/csv",
            "html" | "htm" => "text/html",
            "json" => "application/json",
            "xml" => "application/xml",
            "zip" => "application/zip",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "svg" => "image/svg+xml",
            "ics" => "text/calendar",
            "doc" => "application/msword",
            "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "xls" => "application/vnd.ms-excel",
            "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            _ => "application/octet-stream",
        }
        .to_string()
    }
}

fn decoded_len(b64: &str) -> usize {
    let trimmed = b64.trim_end_matches('=');
    trimmed.len() * 3 / 4
}

fn is_content_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    !ct.contains(['\r', '\n']) && essence.split_once('/').is_some_and(|(t, st)| token(t) && token(st))
}

fn is_tag_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `addr` (bare, without a name) is a valid email address.
pub fn is_valid_address(addr: &str) -> bool {
    email_address::EmailAddress::is_valid(addr)
}

/// Splits `Name <addr>` into its parts; a bare address has no name.
pub fn split_mailbox(s: &str) -> (Option<&str>, &str) {
    let s = s.trim();
    if let (Some(open), true) = (s.rfind('<'), s.ends_with('>')) {
        let name = s[..open].trim().trim_matches('"').trim();
        (if name.is_empty() { None } else { Some(name) }, s[open + 1..s.len() - 1].trim())
    } else {
        (None, s)
    }
}

fn check_mailbox(field: &str, value: &str, errs: &mut Vec<FieldError>) {
    let (name, addr) = split_mailbox(value);
    if value.contains(['\r', '\n']) || name.is_some_and(|n| n.contains(['<', '>'])) {
        errs.push(FieldError::new(field, format!("`{value}` is not a valid mailbox")));
    } else if !email_address::EmailAddress::is_valid(addr) {
        errs.push(FieldError::new(field, format!("`{addr}` is not a valid email address")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> EmailJob {
        EmailJob {
            from: "Wharf <noreply@example.com>".into(),
            to: vec!["a@example.com".into()],
            subject: "Hi".into(),
            text: Some("hello".into()),
            ..Default::default()
        }
    }

    #[test]
    fn valid_email_passes() {
        assert_eq!(ok().validate(), vec![]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let e = EmailJob {
            from: "nope".into(),
            to: vec!["a@example.com".into(), "bad@".into()],
            subject: " ".into(),
            ..Default::default()
        };
        let fields: Vec<_> = e.validate().into_iter().map(|f| f.field).collect();
        assert_eq!(fields, vec!["from", "to[1]", "subject", "text"]);
    }

    #[test]
    fn mailbox_with_name_splits() {
        assert_eq!(split_mailbox("Ann <a@x.io>"), (Some("Ann"), "a@x.io"));
        assert_eq!(split_mailbox("a@x.io"), (None, "a@x.io"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<EmailJob, _> = serde_json::from_str(r#"{"from":"a@b.co","to":[],"subject":"s","bogus":1}"#);
        assert!(r.unwrap_err().to_string().contains("bogus"));
    }

    fn fields(e: &EmailJob) -> Vec<String> {
        e.validate().into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_template_replaces_subject_and_body() {
        let t = EmailJob {
            subject: String::new(),
            text: None,
            template: Some(TemplateRef { name: Some("welcome".into()), ..Default::default() }),
            ..ok()
        };
        assert_eq!(fields(&t), Vec::<String>::new());
        let both = EmailJob { subject: "s".into(), ..t.clone() };
        assert_eq!(fields(&both), vec!["subject"]);
        let empty = EmailJob { template: Some(TemplateRef::default()), ..t.clone() };
        assert_eq!(fields(&empty), vec!["template.name"]);
        let bad_name =
            EmailJob { template: Some(TemplateRef { name: Some("../x".into()), ..Default::default() }), ..t };
        assert_eq!(fields(&bad_name), vec!["template.name"]);
    }

    #[test]
    fn attachments_and_tags_are_checked() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 100]);
        let e = EmailJob {
            attachments: vec![
                Attachment { filename: "a.pdf".into(), content: Some(b64.clone()), ..Default::default() },
                Attachment { filename: "b.pdf".into(), key: Some("tenants/t/b.pdf".into()), ..Default::default() },
                Attachment { filename: "".into(), content: Some("!!".into()), ..Default::default() },
                Attachment {
                    filename: "c".into(),
                    content: Some(b64.clone()),
                    key: Some("k".into()),
                    ..Default::default()
                },
                Attachment {
                    filename: "d".into(),
                    content_type: Some("nope".into()),
                    key: Some("k".into()),
                    ..Default::default()
                },
            ],
            tags: [("ok".to_string(), "v-1".to_string()), ("bad name".to_string(), "v".to_string())].into(),
            ..ok()
        };
        assert_eq!(
            fields(&e),
            vec![
                "attachments[2].filename",
                "attachments[2].content",
                "attachments[3]",
                "attachments[4].content_type",
                "tags.bad name"
            ]
        );
        let two = EmailJob { attachments: e.attachments[..1].to_vec(), ..ok() };
        assert_eq!(two.inline_attachment_bytes(), 100);
        assert!(two.check_attachment_size(100).is_none());
        assert_eq!(two.check_attachment_size(99).unwrap().field, "attachments");
        assert_eq!(e.attachments[0].media_type(), "application/pdf");
        assert_eq!(
            Attachment { filename: "x.bin".into(), ..Default::default() }.media_type(),
            "application/octet-stream"
        );
    }

    #[test]
    fn new_fields_are_omitted_when_empty() {
        let v = serde_json::to_value(ok()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"from": "Wharf <noreply@example.com>", "to": ["a@example.com"], "subject": "Hi", "text": "hello"})
        );
        let forced: EmailJob =
            serde_json::from_value(serde_json::json!({"from": "a@b.co", "to": ["c@d.co"], "subject": "s",
            "text": "t", "force_resend": true}))
            .unwrap();
        assert!(forced.force_resend);
    }
}
