//! wharf's own email templates, per tenant: a subject and a text and/or html body in
//! minijinja syntax, rendered with the request's variables. A variable the template uses but
//! the request does not give is an error (strict undefined), never an empty string. The html
//! body is HTML-escaped; subject and text are not.

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use sqlx::Row;
use thiserror::Error;

use super::from_ms;
use crate::{StoreError, kinds::FieldError, kinds::email::MAX_SUBJECT_CHARS, store::Db};

/// Largest source of one part of a template.
pub const MAX_TEMPLATE_PART_BYTES: usize = 512 * 1024;
/// Rendering budget (minijinja fuel): bounds loops in a tenant's template.
const FUEL: u64 = 1_000_000;
/// Largest rendered part.
const MAX_RENDERED_BYTES: usize = 2 * 1024 * 1024;

/// What a template says: the parts to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateContent {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A stored template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailTemplate {
    pub name: String,
    pub content: TemplateContent,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RenderError {
    /// Variables the template uses that the request did not give.
    #[error("template `{template}` needs variables the request does not give: {}", .missing.join(", "))]
    Missing { template: String, missing: Vec<String> },
    /// Any other failure of one part (a missing attribute, a bad filter call, too much output).
    #[error("template `{template}`, {part}: {message}")]
    Failed { template: String, part: &'static str, message: String },
}

impl RenderError {
    /// As a validation error of the request, under `template.variables`.
    pub fn field_error(&self) -> FieldError {
        FieldError::new("template.variables", self.to_string())
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| if name == "html" { AutoEscape::Html } else { AutoEscape::None });
    env.set_fuel(Some(FUEL));
    env
}

fn parts(t: &TemplateContent) -> [(&'static str, Option<&str>); 3] {
    [("subject", Some(t.subject.as_str())), ("text", t.text.as_deref()), ("html", t.html.as_deref())]
}

impl TemplateContent {
    /// Checks sizes and syntax; each problem names its part (`subject`, `text`, `html`).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if self.subject.trim().is_empty() {
            errs.push(FieldError::new("subject", "must not be empty"));
        }
        if self.text.is_none() && self.html.is_none() {
            errs.push(FieldError::new("text", "give `text`, `html` or both"));
        }
        let env = environment();
        for (part, src) in parts(self) {
            let Some(src) = src else { continue };
            if part != "subject" && src.is_empty() {
                errs.push(FieldError::new(part, "must not be empty when given"));
            } else if src.len() > MAX_TEMPLATE_PART_BYTES {
                errs.push(FieldError::new(part, format!("larger than {MAX_TEMPLATE_PART_BYTES} bytes")));
            } else if let Err(e) = env.template_from_named_str(part, src) {
                errs.push(FieldError::new(part, format!("not a valid template: {}", describe(&e))));
            }
        }
        errs
    }

    /// The variables the template uses at the top level (not those it sets itself).
    pub fn variables(&self) -> Vec<String> {
        let env = environment();
        let mut names: Vec<String> = parts(self)
            .into_iter()
            .filter_map(|(part, src)| env.template_from_named_str(part, src?).ok())
            .flat_map(|t| t.undeclared_variables(false))
            .filter(|n| env.globals().all(|(g, _)| g != n))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

/// Renders `template` (called `name` in messages) with `variables`.
pub fn render(
    name: &str,
    template: &TemplateContent,
    variables: &serde_json::Map<String, serde_json::Value>,
) -> Result<Rendered, RenderError> {
    let missing: Vec<String> = template.variables().into_iter().filter(|v| !variables.contains_key(v)).collect();
    if !missing.is_empty() {
        return Err(RenderError::Missing { template: name.to_string(), missing });
    }
    let env = environment();
    let ctx = Value::from(minijinja::value::Serde(variables));
    let mut out: [Option<String>; 3] = [None, None, None];
    for (i, (part, src)) in parts(template).into_iter().enumerate() {
        let Some(src) = src else { continue };
        let failed = |message: String| RenderError::Failed { template: name.to_string(), part, message };
        let rendered = env
            .template_from_named_str(part, src)
            .and_then(|t| t.render(ctx.clone()))
            .map_err(|e| failed(describe(&e)))?;
        if rendered.len() > MAX_RENDERED_BYTES {
            return Err(failed(format!("renders to more than {MAX_RENDERED_BYTES} bytes")));
        }
        out[i] = Some(rendered);
    }
    let [subject, text, html] = out;
    let subject = subject.unwrap_or_default().trim().to_string();
    if subject.is_empty() {
        return Err(RenderError::Failed {
            template: name.to_string(),
            part: "subject",
            message: "renders empty".into(),
        });
    }
    if subject.contains(['\r', '\n']) || subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(RenderError::Failed {
            template: name.to_string(),
            part: "subject",
            message: format!("renders to a line break or more than {MAX_SUBJECT_CHARS} characters"),
        });
    }
    Ok(Rendered { subject, text, html })
}

/// Templates in the store.
#[derive(Clone, Debug)]
pub struct TemplateStore {
    db: Db,
}

impl TemplateStore {
    pub fn new(db: Db) -> Self {
        TemplateStore { db }
    }

    /// Creates or replaces `name`; true if it was created.
    pub async fn put(
        &self,
        tenant: &str,
        name: &str,
        t: &TemplateContent,
    ) -> Result<(EmailTemplate, bool), StoreError> {
        let existed = self.get(tenant, name).await?.is_some();
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO wharf_email_templates (tenant_id, name, subject, text_body, html_body)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant_id, name) DO UPDATE SET subject = EXCLUDED.subject,
                        text_body = EXCLUDED.text_body, html_body = EXCLUDED.html_body, updated_at = now()",
                )
                .bind(tenant)
                .bind(name)
                .bind(&t.subject)
                .bind(&t.text)
                .bind(&t.html)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                let now = Utc::now().timestamp_millis();
                sqlx::query(
                    "INSERT INTO wharf_email_templates (tenant_id, name, subject, text_body, html_body, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (tenant_id, name) DO UPDATE SET subject = excluded.subject,
                        text_body = excluded.text_body, html_body = excluded.html_body, updated_at = excluded.updated_at",
                )
                .bind(tenant)
                .bind(name)
                .bind(&t.subject)
                .bind(&t.text)
                .bind(&t.html)
                .bind(now)
                .bind(now)
                .execute(pool)
                .await?;
            }
        }
        let stored = self
            .get(tenant, name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("email template `{name}` vanished after it was written")))?;
        Ok((stored, !existed))
    }

    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<EmailTemplate>, StoreError> {
        Ok(self.query(tenant, Some(name)).await?.pop())
    }

    /// The tenant's templates by name.
    pub async fn list(&self, tenant: &str) -> Result<Vec<EmailTemplate>, StoreError> {
        self.query(tenant, None).await
    }

    /// True if it existed.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query("DELETE FROM wharf_email_templates WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite(pool) => sqlx::query("DELETE FROM wharf_email_templates WHERE tenant_id = ? AND name = ?")
                .bind(tenant)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    async fn query(&self, tenant: &str, name: Option<&str>) -> Result<Vec<EmailTemplate>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT name, subject, text_body, html_body, created_at, updated_at FROM wharf_email_templates
                     WHERE tenant_id = $1 AND ($2::text IS NULL OR name = $2) ORDER BY name LIMIT 1000",
                )
                .bind(tenant)
                .bind(name)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(EmailTemplate {
                            name: r.try_get("name")?,
                            content: TemplateContent {
                                subject: r.try_get("subject")?,
                                text: r.try_get("text_body")?,
                                html: r.try_get("html_body")?,
                            },
                            created_at: r.try_get("created_at")?,
                            updated_at: r.try_get("updated_at")?,
                        })
                    })
                    .collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT name, subject, text_body, html_body, created_at, updated_at FROM wharf_email_templates
                     WHERE tenant_id = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name LIMIT 1000",
                )
                .bind(tenant)
                .bind(name)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(EmailTemplate {
                            name: r.try_get("name")?,
                            content: TemplateContent {
                                subject: r.try_get("subject")?,
                                text: r.try_get("text_body")?,
                                html: r.try_get("html_body")?,
                            },
                            created_at: from_ms(r.try_get("created_at")?),
                            updated_at: from_ms(r.try_get("updated_at")?),
                        })
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(subject: &str, text: Option<&str>, html: Option<&str>) -> TemplateContent {
        TemplateContent { subject: subject.into(), text: text.map(Into::into), html: html.map(Into::into) }
    }

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_all_parts_escaping_only_html() {
        let tpl = t(
            "Welcome, {{ name }}!",
            Some("Hi {{ name }}, your plan: {{ plan | upper }}.{% for i in items %} {{ i }}{% endfor %}"),
            Some("<p>Hi {{ name }}</p>"),
        );
        let r = render("welcome", &tpl, &vars(json!({"name": "Ann & <Bob>", "plan": "pro", "items": [1, 2]}))).unwrap();
        assert_eq!(r.subject, "Welcome, Ann & <Bob>!");
        assert_eq!(r.text.as_deref(), Some("Hi Ann & <Bob>, your plan: PRO. 1 2"));
        assert_eq!(r.html.as_deref(), Some("<p>Hi Ann &amp; &lt;Bob&gt;</p>"));
    }

    #[test]
    fn missing_variables_are_named() {
        let tpl = t("Hello {{ name }}", Some("{{ plan }} {% set x = 1 %}{{ x }} {{ range(2) | list }}"), None);
        assert_eq!(tpl.variables(), vec!["name".to_string(), "plan".to_string()]);
        let e = render("welcome", &tpl, &vars(json!({"name": "Ann"}))).unwrap_err();
        assert_eq!(e, RenderError::Missing { template: "welcome".into(), missing: vec!["plan".into()] });
        assert!(e.to_string().contains("plan"), "{e}");
        // A missing attribute of a given variable is caught by strict undefined.
        let tpl = t("Hello {{ user.name }}", Some("x"), None);
        let e = render("w", &tpl, &vars(json!({"user": {}}))).unwrap_err();
        assert!(matches!(e, RenderError::Failed { part: "subject", .. }), "{e:?}");
    }

    #[test]
    fn syntax_errors_name_the_part() {
        let errs = t("ok", Some("{{ unclosed"), Some("{% for %}")).validate();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["text", "html"]);
        assert!(t("", None, None).validate().len() == 2);
    }

    #[test]
    fn runaway_templates_stop() {
        let tpl =
            t("s", Some("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"), None);
        assert!(matches!(render("w", &tpl, &serde_json::Map::new()), Err(RenderError::Failed { .. })));
    }
}
