//! The email job: what the API accepts and the email pool sends.

use serde::{Deserialize, Serialize};

use super::{FieldError, JobKind};
use crate::queue;

pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_SUBJECT_CHARS: usize = 998;
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
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
        if self.subject.trim().is_empty() {
            errs.push(FieldError::new("subject", "must not be empty"));
        } else if self.subject.chars().count() > MAX_SUBJECT_CHARS {
            errs.push(FieldError::new("subject", format!("longer than {MAX_SUBJECT_CHARS} characters")));
        } else if self.subject.contains(['\r', '\n']) {
            errs.push(FieldError::new("subject", "must not contain line breaks"));
        }
        match (&self.text, &self.html) {
            (None, None) => errs.push(FieldError::new("text", "give `text`, `html` or both")),
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
        errs
    }
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
}
