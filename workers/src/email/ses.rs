//! Amazon SES v2 `SendEmail` through aws-sdk-sesv2: simple content (subject, text, html), a
//! raw MIME message when there are attachments, or an SES template (`ses_template` +
//! variables as `TemplateData`); tags as `EmailTags`; an optional configuration set.
//! Credentials come from the standard AWS chain (environment, profile, web identity, ECS,
//! IMDS); the client is made on first use. The SDK does not retry: wharf's own retries and
//! failover do.

use std::time::Duration;

use aws_sdk_sesv2::{
    Client,
    config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig},
    error::{DisplayErrorContext, SdkError},
    operation::send_email::SendEmailError,
    primitives::Blob,
    types::{Body, Content, Destination, EmailContent, Message, MessageTag, RawMessage, Template},
};
use aws_smithy_http_client::{
    Builder,
    tls::{Provider, rustls_provider::CryptoMode},
};
use tokio::sync::OnceCell;

use super::{Accepted, Outgoing, SendError, config::SesConfig};

pub(super) struct SesProvider {
    cfg: SesConfig,
    timeout: Duration,
    client: OnceCell<Client>,
}

/// A mailbox as SES takes it: a display name with non-ASCII characters must be an RFC 2047
/// encoded word (SES rejects raw UTF-8 there).
fn ses_mailbox(out: &Outgoing, value: &str) -> String {
    let (name, addr) = wharf_jobs::kinds::email::split_mailbox(value);
    match name {
        Some(n) if !n.is_ascii() => {
            use base64::Engine;
            format!("=?UTF-8?B?{}?= <{addr}>", base64::engine::general_purpose::STANDARD.encode(n))
        }
        _ => out.mailbox(value),
    }
}

fn content(data: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(data)
        .charset("UTF-8")
        .build()
        .map_err(|e| SendError::Permanent { message: format!("ses: cannot build the request: {e}") })
}

impl SesProvider {
    pub(super) fn new(cfg: &SesConfig, timeout: Duration) -> Self {
        SesProvider { cfg: cfg.clone(), timeout, client: OnceCell::new() }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let http = Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
                let shared = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(self.cfg.region.clone()))
                    .http_client(http)
                    .timeout_config(
                        TimeoutConfig::builder().connect_timeout(self.timeout).operation_timeout(self.timeout).build(),
                    )
                    .retry_config(RetryConfig::disabled())
                    .load()
                    .await;
                let mut b = aws_sdk_sesv2::config::Builder::from(&shared);
                if let Some(e) = &self.cfg.endpoint {
                    b = b.endpoint_url(e);
                }
                Client::from_conf(b.build())
            })
            .await
    }

    fn email_content(out: &Outgoing) -> Result<EmailContent, SendError> {
        if let Some(t) = out.email.template.as_ref()
            && let Some(name) = &t.ses_template
        {
            let data = serde_json::Value::Object(t.variables.clone()).to_string();
            return Ok(EmailContent::builder()
                .template(Template::builder().template_name(name).template_data(data).build())
                .build());
        }
        if !out.attachments.is_empty() {
            let mime = super::message::build_mime(out)
                .map_err(|e| SendError::Permanent { message: e.to_string() })?
                .formatted();
            let raw = RawMessage::builder()
                .data(Blob::new(mime))
                .build()
                .map_err(|e| SendError::Permanent { message: format!("ses: cannot build the request: {e}") })?;
            return Ok(EmailContent::builder().raw(raw).build());
        }
        let body = out.body()?;
        let mut b = Body::builder();
        if let Some(t) = &body.text {
            b = b.text(content(t)?);
        }
        if let Some(h) = &body.html {
            b = b.html(content(h)?);
        }
        let msg = Message::builder().subject(content(&body.subject)?).body(b.build()).build();
        Ok(EmailContent::builder().simple(msg).build())
    }

    pub(super) async fn send(&self, out: &Outgoing) -> Result<Accepted, SendError> {
        let e = &out.email;
        let list = |l: &[String]| (!l.is_empty()).then(|| l.iter().map(|m| ses_mailbox(out, m)).collect::<Vec<_>>());
        let destination = Destination::builder()
            .set_to_addresses(list(&e.to))
            .set_cc_addresses(list(&e.cc))
            .set_bcc_addresses(list(&e.bcc))
            .build();
        let mut tags = Vec::new();
        for (k, v) in &e.tags {
            tags.push(
                MessageTag::builder()
                    .name(k)
                    .value(v)
                    .build()
                    .map_err(|e| SendError::Permanent { message: format!("ses: tag {k}: {e}") })?,
            );
        }
        let content = Self::email_content(out)?;
        let client = self.client().await;
        let sent = client
            .send_email()
            .from_email_address(ses_mailbox(out, &e.from))
            .destination(destination)
            .set_reply_to_addresses(e.reply_to.as_ref().map(|r| vec![ses_mailbox(out, r)]))
            .content(content)
            .set_email_tags((!tags.is_empty()).then_some(tags))
            .set_configuration_set_name(self.cfg.configuration_set.clone())
            .send()
            .await;
        match sent {
            Ok(o) => match o.message_id() {
                Some(id) => Ok(Accepted { message_id: id.to_string(), details: serde_json::Map::new() }),
                None => {
                    Err(SendError::Transient { message: "ses accepted without a MessageId".into(), retry_after: None })
                }
            },
            Err(err) => Err(classify(&err, out)),
        }
    }
}

/// SES errors: throttling, quotas, a paused or suspended account, an unverified MAIL FROM
/// domain, 5xx and network failures are transient (another provider may send); a rejected
/// message, a bad request or a missing template are permanent; a rejection naming the
/// suppression list suppresses the recipient.
fn classify(err: &SdkError<SendEmailError>, out: &Outgoing) -> SendError {
    let text = format!("{}", DisplayErrorContext(err));
    let transient = |m: String| SendError::Transient { message: m, retry_after: None };
    match err {
        SdkError::ServiceError(se) => match se.err() {
            SendEmailError::MessageRejected(_) if text.to_ascii_lowercase().contains("suppress") => {
                let recipients: Vec<String> = out.email.recipients().map(str::to_string).collect();
                if recipients.len() == 1 {
                    SendError::Suppressed { addresses: recipients, message: format!("ses: {text}") }
                } else {
                    SendError::Permanent { message: format!("ses rejected a suppressed recipient: {text}") }
                }
            }
            SendEmailError::MessageRejected(_)
            | SendEmailError::BadRequestException(_)
            | SendEmailError::NotFoundException(_) => {
                SendError::Permanent { message: format!("ses rejected the email: {text}") }
            }
            SendEmailError::TooManyRequestsException(_)
            | SendEmailError::LimitExceededException(_)
            | SendEmailError::SendingPausedException(_)
            | SendEmailError::AccountSuspendedException(_)
            | SendEmailError::MailFromDomainNotVerifiedException(_) => transient(format!("ses: {text}")),
            _ => {
                let status = se.raw().status().as_u16();
                let message = format!("ses answered {status}: {text}");
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    SendError::Permanent { message }
                } else {
                    transient(message)
                }
            }
        },
        SdkError::ConstructionFailure(_) => {
            SendError::Permanent { message: format!("ses: cannot build the request: {text}") }
        }
        _ => transient(format!("ses: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use wharf_jobs::{JobId, kinds::email::EmailJob};

    use super::*;

    #[test]
    fn non_ascii_display_names_are_encoded_words() {
        let out = Outgoing::new(JobId::new(), JobId::new(), EmailJob::default(), None);
        assert_eq!(ses_mailbox(&out, "Zoë <zoe@example.com>"), "=?UTF-8?B?Wm/Dqw==?= <zoe@example.com>");
        assert_eq!(ses_mailbox(&out, "Ann <ann@example.com>"), "Ann <ann@example.com>");
        assert_eq!(ses_mailbox(&out, "ann@example.com"), "ann@example.com");
    }
}
