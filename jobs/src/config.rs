//! Reading configuration from the environment: every bad or missing value is an error that
//! names its variable. The binary's `Config` assembles the pieces; crates parse their own.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &str, message: impl Into<String>) -> Self {
        ConfigError { var: var.to_string(), message: message.into() }
    }
}

/// A snapshot of the variables to read (the process environment, or a map in tests).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    pub fn set(&mut self, var: &str, value: impl Into<String>) {
        self.vars.insert(var.to_string(), value.into());
    }

    /// The value, with empty strings treated as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars.get(var).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    pub fn require(&self, var: &str) -> Result<&str, ConfigError> {
        self.get(var).ok_or_else(|| ConfigError::new(var, "is required but not set"))
    }

    pub fn parse<T>(&self, var: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(var)
            .map(|v| v.parse::<T>().map_err(|e| ConfigError::new(var, format!("`{v}` is invalid: {e}"))))
            .transpose()
    }

    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(var)?.unwrap_or(default))
    }

    pub fn bool_or(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(var, format!("`{v}` is not a boolean (true/false)"))),
        }
    }

    /// Milliseconds given as an integer.
    pub fn millis_or(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.parse::<u64>(var)?.map(Duration::from_millis).unwrap_or(default))
    }

    /// Seconds given as an integer.
    pub fn secs_or(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.parse::<u64>(var)?.map(Duration::from_secs).unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs([("PORT", "abc"), ("FLAG", "maybe"), ("EMPTY", " ")]);
        let e = env.parse::<u16>("PORT").unwrap_err();
        assert_eq!(e.var, "PORT");
        assert!(e.to_string().contains("PORT") && e.to_string().contains("abc"));
        assert_eq!(env.bool_or("FLAG", false).unwrap_err().var, "FLAG");
        assert_eq!(env.require("EMPTY").unwrap_err().var, "EMPTY");
        assert_eq!(env.parse_or::<u16>("MISSING", 4000).unwrap(), 4000);
    }
}
