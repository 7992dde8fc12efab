//! Channels and rules at run time: which ones to start with, and changing them
//! through the API.
//!
//! The store holds every channel's and rule's spec as written (`${VARS}` not
//! interpolated). As for job definitions, `DIR/alerts.yaml` is applied only
//! when its text differs from the text applied last, so channels and rules
//! changed through the API survive restarts until the file itself changes.
//! Removing the file keeps the stored definitions (an empty file,
//! `channels: {}` / `rules: []`, clears them).
//!
//! Every change is validated as a whole document (a rule naming a channel
//! that a change removes is an error) and then saved and put in force
//! together: nothing is half-applied.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::config::{AlertsConfig, parse_alerts_yaml};
use super::service::{AlertService, names};
use crate::config::{ConfigErrors, LoadedAlerts};
use crate::engine::DefinitionsError;
use crate::error::{Error, Result};
use crate::store::Store;

/// Name under which the `alerts.yaml` text is recorded.
pub const ALERTS_FILE_KEY: &str = "alerts.yaml";

/// Where stored definitions are said to come from in error messages.
const STORED: &str = "stored alert definitions";

/// Stored specs: (channels (name, spec) by name, rules (name, spec) in order).
type Specs = (Vec<(String, String)>, Vec<(String, String)>);

/// The channels and rules to start with: the file's when its text changed
/// since it was last applied (they replace the stored ones), else the stored
/// ones, validated again (an environment variable they use may be unset now).
pub async fn initial_alerts(
    store: &Store,
    file: Option<&LoadedAlerts>,
) -> std::result::Result<AlertsConfig, DefinitionsError> {
    if let Some(file) = file
        && store.applied_config(ALERTS_FILE_KEY).await?.as_deref() != Some(file.text.as_str())
    {
        let (channels, rules) = specs_of(&file.config);
        store
            .save_alert_specs(&channels, &rules, Some((ALERTS_FILE_KEY, &file.text)))
            .await?;
        tracing::info!(
            channels = channels.len(),
            rules = rules.len(),
            file = %file.file.display(),
            "alert definitions applied from the configuration file"
        );
        return Ok(file.config.clone());
    }
    let specs = store.alert_specs().await?;
    let config = validate(&specs, &crate::config::env::lookup).map_err(DefinitionsError::Invalid)?;
    if !config.rules.is_empty() || !config.channels.is_empty() {
        tracing::info!(
            channels = config.channels.len(),
            rules = config.rules.len(),
            "using stored alert definitions"
        );
    }
    Ok(config)
}

/// The specs of a validated configuration, as the store keeps them.
fn specs_of(config: &AlertsConfig) -> Specs {
    let channels = config
        .channels
        .values()
        .map(|c| (c.name.clone(), to_yaml(&c.spec)))
        .collect();
    let rules = config
        .rules
        .iter()
        .map(|r| (r.name.clone(), to_yaml(&r.spec)))
        .collect();
    (channels, rules)
}

fn to_yaml(spec: &Mapping) -> String {
    serde_yaml_ng::to_string(spec).unwrap_or_default()
}

/// Validates stored specs as one `alerts.yaml` document.
fn validate(
    (channels, rules): &Specs,
    env: crate::config::env::Lookup<'_>,
) -> std::result::Result<AlertsConfig, ConfigErrors> {
    let corrupt = |what: &str, name: &str, e: serde_yaml_ng::Error| {
        ConfigErrors(vec![crate::config::ConfigError {
            file: STORED.into(),
            line: None,
            path: format!("{what}.{name}"),
            message: format!("stored spec is not valid YAML: {e}"),
        }])
    };
    let mut channel_map = Mapping::new();
    for (name, spec) in channels {
        let value: Value = serde_yaml_ng::from_str(spec).map_err(|e| corrupt("channels", name, e))?;
        channel_map.insert(Value::String(name.clone()), value);
    }
    let mut rule_list = Vec::new();
    for (name, spec) in rules {
        rule_list.push(serde_yaml_ng::from_str::<Value>(spec).map_err(|e| corrupt("rules", name, e))?);
    }
    let mut top = Mapping::new();
    top.insert("channels".into(), Value::Mapping(channel_map));
    top.insert("rules".into(), Value::Sequence(rule_list));
    let text = serde_yaml_ng::to_string(&top).unwrap_or_default();
    parse_alerts_yaml(Path::new(STORED), &text, env)
}

/// A validation failure of an API change, as one `invalid_argument` error that
/// lists every problem by key path (line numbers would point into a document
/// the caller never saw).
fn invalid(errors: ConfigErrors) -> Error {
    let problems: Vec<String> = errors
        .0
        .iter()
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            }
        })
        .collect();
    Error::invalid("spec", problems.join("; "))
}

/// Parses a spec sent through the API: a YAML (or JSON) mapping.
fn parse_spec(what: &str, text: &str) -> Result<Mapping> {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(_) => Err(Error::invalid(
            "spec",
            format!("expected a mapping with the {what}'s settings"),
        )),
        Err(e) => Err(Error::invalid("spec", format!("invalid YAML: {e}"))),
    }
}

impl AlertService {
    /// Validates `specs` as a whole, saves them and puts them in force.
    async fn replace(&self, specs: Specs) -> Result<()> {
        let config = validate(&specs, &crate::config::env::lookup).map_err(invalid)?;
        self.inner.store.save_alert_specs(&specs.0, &specs.1, None).await?;
        self.set_config(config);
        Ok(())
    }

    /// Creates or replaces channel `name` with `spec` (its YAML mapping, with
    /// `type`). Secrets may be `${VARS}` of the controller's environment.
    pub async fn put_channel(&self, name: &str, spec: &str) -> Result<()> {
        let spec = parse_spec("channel", spec)?;
        let _edit = self.inner.edit_lock.lock().await;
        let (mut channels, rules) = self.inner.store.alert_specs().await?;
        let text = to_yaml(&spec);
        match channels.iter_mut().find(|(n, _)| n == name) {
            Some(existing) => existing.1 = text,
            None => channels.push((name.to_string(), text)),
        }
        self.replace((channels, rules)).await
    }

    /// Enables or disables channel `name`, keeping the rest of its spec as
    /// stored (its secrets too, which the API never shows): `enabled: false`
    /// is written into the spec to disable it, and removed to enable it (the
    /// default). Changing nothing is fine.
    pub async fn set_channel_enabled(&self, name: &str, enabled: bool) -> Result<()> {
        let _edit = self.inner.edit_lock.lock().await;
        let (mut channels, rules) = self.inner.store.alert_specs().await?;
        let Some(existing) = channels.iter_mut().find(|(n, _)| n == name) else {
            return Err(Error::not_found(format!(
                "alert channel \"{}\" is not defined (defined: {})",
                crate::limits::echo(name),
                names(channels.iter().map(|(n, _)| n))
            )));
        };
        let mut spec = parse_spec("channel", &existing.1)?;
        if enabled {
            spec.remove("enabled");
        } else {
            spec.insert(Value::String("enabled".into()), Value::Bool(false));
        }
        existing.1 = to_yaml(&spec);
        self.replace((channels, rules)).await
    }

    /// Deletes channel `name` (refused while a rule sends to it).
    pub async fn delete_channel(&self, name: &str) -> Result<()> {
        let _edit = self.inner.edit_lock.lock().await;
        let (mut channels, rules) = self.inner.store.alert_specs().await?;
        let before = channels.len();
        channels.retain(|(n, _)| n != name);
        if channels.len() == before {
            return Err(Error::not_found(format!(
                "alert channel \"{}\" is not defined (defined: {})",
                crate::limits::echo(name),
                names(channels.iter().map(|(n, _)| n))
            )));
        }
        self.replace((channels, rules)).await
    }

    /// Creates or replaces the rule named by `spec`'s `name` (a replaced rule
    /// keeps its place).
    pub async fn put_rule(&self, spec: &str) -> Result<String> {
        let spec = parse_spec("rule", spec)?;
        let Some(name) = spec.get("name").and_then(Value::as_str).map(str::to_string) else {
            return Err(Error::invalid("spec.name", "a rule needs a `name`"));
        };
        let _edit = self.inner.edit_lock.lock().await;
        let (channels, mut rules) = self.inner.store.alert_specs().await?;
        let text = to_yaml(&spec);
        match rules.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = text,
            None => rules.push((name.clone(), text)),
        }
        self.replace((channels, rules)).await?;
        Ok(name)
    }

    /// Deletes rule `name`.
    pub async fn delete_rule(&self, name: &str) -> Result<()> {
        let _edit = self.inner.edit_lock.lock().await;
        let (channels, mut rules) = self.inner.store.alert_specs().await?;
        let before = rules.len();
        rules.retain(|(n, _)| n != name);
        if rules.len() == before {
            return Err(Error::not_found(format!(
                "alert rule \"{}\" is not defined (defined: {})",
                crate::limits::echo(name),
                names(rules.iter().map(|(n, _)| n))
            )));
        }
        self.replace((channels, rules)).await
    }
}
