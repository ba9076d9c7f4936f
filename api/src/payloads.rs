//! Checking a payload against its kind: used for new jobs and for edited replay payloads.

use wharf_jobs::kinds::{FieldError, JobKind, diagnostic::DiagnosticJob, email::EmailJob};

use crate::{body, problem::Problem};

/// Parses and validates an email; field names are prefixed with `prefix` (`payload.to[0]`).
pub fn email(value: serde_json::Value, prefix: &str) -> Result<EmailJob, Problem> {
    if !value.is_object() {
        return Err(Problem::validation(vec![FieldError::new(field(prefix, ""), "must be a JSON object")]));
    }
    let job: EmailJob = body::deserialize(value, prefix)?;
    let errors = job.validate();
    if !errors.is_empty() {
        return Err(Problem::validation(
            errors.into_iter().map(|e| FieldError::new(field(prefix, &e.field), e.message)).collect(),
        ));
    }
    Ok(job)
}

/// A payload for a job of `kind`, checked as that kind and re-serialized in canonical form.
/// Kinds the API does not know are accepted as any JSON object.
pub fn check(kind: &str, value: serde_json::Value, prefix: &str) -> Result<serde_json::Value, Problem> {
    let canonical = match kind {
        EmailJob::KIND => serde_json::to_value(email(value, prefix)?),
        DiagnosticJob::KIND => serde_json::to_value(body::deserialize::<DiagnosticJob>(value, prefix)?),
        _ if value.is_object() => Ok(value),
        _ => {
            return Err(Problem::validation(vec![FieldError::new(field(prefix, ""), "must be a JSON object")]));
        }
    };
    canonical.map_err(|e| {
        tracing::error!(error = %e, kind, "payload does not serialize");
        Problem::internal()
    })
}

fn field(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, true) => "body".into(),
        (true, false) => name.into(),
        (false, true) => prefix.into(),
        (false, false) if name.starts_with('[') => format!("{prefix}{name}"),
        (false, false) => format!("{prefix}.{name}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(p: Problem) -> Vec<String> {
        assert_eq!(p.status().as_u16(), 422);
        p.body().errors.clone().unwrap().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn edited_email_payload_names_fields_under_payload() {
        let bad = json!({"from": "x@example.com", "to": ["nope"], "subject": "s", "text": "t"});
        assert_eq!(fields(check("email", bad, "payload").unwrap_err()), vec!["payload.to[0]"]);
        let unknown = json!({"from": "x@example.com", "to": ["a@example.com"], "subject": "s", "text": "t", "x": 1});
        assert_eq!(fields(check("email", unknown, "payload").unwrap_err()), vec!["payload.x"]);
        assert_eq!(fields(check("email", json!([1]), "payload").unwrap_err()), vec!["payload"]);
    }

    #[test]
    fn valid_payloads_are_canonical() {
        let ok = json!({"text": "t", "subject": "s", "to": ["a@example.com"], "cc": [], "from": "x@example.com"});
        let v = check("email", ok, "payload").unwrap();
        assert_eq!(v, json!({"from": "x@example.com", "to": ["a@example.com"], "subject": "s", "text": "t"}));
        assert_eq!(check("other", json!({"a": 1}), "payload").unwrap(), json!({"a": 1}));
        assert!(check("diagnostic", json!({"op": "noop"}), "payload").is_ok());
        assert_eq!(fields(check("diagnostic", json!({"op": "boom"}), "payload").unwrap_err()), vec!["payload.op"]);
    }
}
