//! Job definitions at run time: applying documents, enabling, deleting,
//! exporting, pausing schedules, and choosing the definitions at start-up.
//!
//! The store holds every definition's spec. The `--config` file is applied
//! only when its text differs from the text applied last, so definitions
//! changed through the API survive restarts until the file itself changes.

use std::sync::Arc;

use serde_yaml_ng::{Mapping, Value};

use super::Engine;
use crate::config::{ConfigErrors, JobEntry, JobSet, Source, entry_from_spec, spec_to_yaml};
use crate::error::{Error, Result};
use crate::job::JobDef;

/// Name under which the `--config` file's text is recorded.
pub const CONFIG_FILE_KEY: &str = "scheduler.yaml";

/// What an apply changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplySummary {
    /// Jobs that did not exist.
    pub created: Vec<String>,
    /// Jobs whose spec changed.
    pub updated: Vec<String>,
    /// Jobs applied with the same spec.
    pub unchanged: Vec<String>,
    /// Jobs removed (only when pruning a source).
    pub deleted: Vec<String>,
}

/// Why the definitions could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] Error),
    /// A stored definition is no longer valid (e.g. an environment variable it uses is unset).
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// The definitions to start with: the config file's when its text changed since
/// it was last applied (jobs it no longer defines are removed), else the stored
/// ones (which may have been changed through the API).
pub async fn initial_definitions(
    store: &crate::store::Store,
    file_jobs: &JobSet,
    file_text: &str,
) -> std::result::Result<JobSet, DefinitionsError> {
    let stored = load_stored(store).await?;
    if store.applied_config(CONFIG_FILE_KEY).await?.as_deref() == Some(file_text) {
        for (job, message) in stored.limit_errors() {
            tracing::warn!(%job, %message, "a stored job cannot be triggered; fix or delete it");
        }
        tracing::info!(
            jobs = stored.len(),
            "configuration unchanged since last applied; using stored definitions"
        );
        return Ok(stored);
    }
    let deletes: Vec<String> = stored
        .entries()
        .filter(|e| e.source == Source::Config && file_jobs.get(&e.def.name).is_none())
        .map(|e| e.def.name.clone())
        .collect();
    let upserts: Vec<(String, String, String)> = file_jobs
        .entries()
        .map(|e| (e.def.name.clone(), spec_to_yaml(&e.spec), Source::Config.to_string()))
        .collect();
    let merged = stored.with_changes(file_jobs.entries().cloned(), &deletes);
    let from_file: std::collections::BTreeSet<&str> = file_jobs.entries().map(|e| e.def.name.as_str()).collect();
    let mut problems = merged.dependency_errors();
    problems.extend(merged.new_limit_errors(&stored, &from_file));
    // Stored before the limits existed: kept (the controller must start);
    // their fires fail alone until they are fixed.
    for (job, message) in merged.limit_errors() {
        if !problems.iter().any(|(j, _)| *j == job) {
            tracing::warn!(%job, %message, "a stored job cannot be triggered; fix or delete it");
        }
    }
    if !problems.is_empty() {
        let errors = problems
            .into_iter()
            .map(|(job, message)| crate::config::ConfigError {
                file: CONFIG_FILE_KEY.into(),
                line: None,
                path: format!("jobs.{job}.depends_on"),
                message,
            })
            .collect();
        return Err(DefinitionsError::Invalid(ConfigErrors(errors)));
    }
    store
        .save_jobs(&upserts, &deletes, Some((CONFIG_FILE_KEY, file_text)))
        .await?;
    tracing::info!(
        applied = upserts.len(),
        removed = deletes.len(),
        "configuration file applied"
    );
    Ok(merged)
}

/// Reads and rebuilds every stored definition.
async fn load_stored(store: &crate::store::Store) -> std::result::Result<JobSet, DefinitionsError> {
    let lookup = crate::config::env::lookup;
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (name, spec, source) in store.job_specs().await? {
        let source = source.parse::<Source>().unwrap_or(Source::Api);
        match entry_from_spec(&name, &spec, source, &lookup) {
            Ok(entry) => entries.push(entry),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(JobSet::new(entries))
    } else {
        Err(DefinitionsError::Invalid(ConfigErrors(errors)))
    }
}

impl Engine {
    /// Applies validated entries atomically: all are stored and take effect, or
    /// none (e.g. when a `depends_on` names a job that does not exist).
    pub async fn apply_definitions(&self, entries: Vec<JobEntry>) -> Result<ApplySummary> {
        let _guard = self.definitions_lock.lock().await;
        let current = self.jobs();
        let mut summary = ApplySummary::default();
        let mut entries = entries;
        for entry in &mut entries {
            match current.entry(&entry.def.name) {
                None => summary.created.push(entry.def.name.clone()),
                Some(old) if old.spec == entry.spec => {
                    // Same definition: it keeps its owner (a config job stays one).
                    entry.source = old.source;
                    summary.unchanged.push(entry.def.name.clone())
                }
                Some(_) => summary.updated.push(entry.def.name.clone()),
            }
        }
        let next = current.with_changes(entries.iter().cloned(), &[]);
        let changed = current.rewired(&entries);
        let mut problems = next.dependency_errors();
        problems.extend(next.new_limit_errors(&current, &changed));
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .into_iter()
                .map(|(job, message)| format!("jobs.{job}.depends_on: {message}"))
                .collect();
            return Err(Error::invalid("jobs", lines.join("\n")));
        }
        let upserts: Vec<(String, String, String)> = entries
            .iter()
            .map(|e| (e.def.name.clone(), spec_to_yaml(&e.spec), e.source.to_string()))
            .collect();
        self.store.save_jobs(&upserts, &[], None).await?;
        self.replace_jobs(next);
        Ok(summary)
    }

    /// Enables or disables a job (stored in its spec).
    pub async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<Arc<JobDef>> {
        let entry = self
            .jobs()
            .entry(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(name))))?;
        let mut spec = entry.spec.clone();
        spec.insert(Value::String("enabled".into()), Value::Bool(enabled));
        let lookup = crate::config::env::lookup;
        let rebuilt = entry_from_spec(name, &spec_to_yaml(&spec), entry.source, &lookup)
            .map_err(|e| Error::precondition(format!("the stored definition of \"{name}\" is no longer valid: {e}")))?;
        let def = rebuilt.def.clone();
        self.apply_definitions(vec![rebuilt]).await?;
        Ok(def)
    }

    /// Deletes a job definition. Refused while other jobs depend on it or while
    /// it has unfinished runs; its history stays.
    pub async fn delete_job(&self, name: &str) -> Result<()> {
        let _guard = self.definitions_lock.lock().await;
        let current = self.jobs();
        if current.get(name).is_none() {
            return Err(Error::not_found(format!(
                "job \"{}\" is not defined",
                crate::limits::echo(name)
            )));
        }
        let dependents: Vec<&str> = current
            .iter()
            .filter(|j| j.depends_on.iter().any(|d| d == name))
            .map(|j| j.name.as_str())
            .collect();
        if !dependents.is_empty() {
            return Err(Error::precondition(format!(
                "job \"{name}\" is a dependency of: {}",
                dependents.join(", ")
            )));
        }
        // The core lock is held until the definition is gone: enqueues and
        // commit rounds check under it that their job is still defined, so
        // no run of the job can be created after this check.
        let core = self.lock_core().await;
        let unfinished = core.live.values().filter(|r| &*r.job == name).count();
        if unfinished > 0 {
            return Err(Error::precondition(format!(
                "job \"{name}\" has {unfinished} unfinished run(s); cancel them first"
            )));
        }
        self.store.save_jobs(&[], &[name.to_string()], None).await?;
        self.replace_jobs(current.with_changes([], &[name.to_string()]));
        drop(core);
        Ok(())
    }

    /// The current definitions as a `scheduler.yaml` document (`${VARS}` as written).
    pub fn export_yaml(&self) -> String {
        let mut jobs = Mapping::new();
        for entry in self.jobs().entries() {
            jobs.insert(
                Value::String(entry.def.name.clone()),
                Value::Mapping(entry.spec.clone()),
            );
        }
        let mut doc = Mapping::new();
        doc.insert(Value::String("jobs".into()), Value::Mapping(jobs));
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }

    /// Pauses or resumes a job's schedule.
    pub async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<()> {
        let job = self
            .jobs()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(name))))?;
        if job.schedule.is_none() {
            return Err(Error::precondition(format!("job \"{name}\" has no schedule")));
        }
        self.store.set_paused(name, paused).await?;
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// Resolves when definitions or pauses change.
    pub async fn schedules_changed(&self) {
        self.schedules_changed.notified().await
    }

    fn replace_jobs(&self, next: JobSet) {
        self.metrics.define_jobs(&next);
        *self.jobs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.schedules_changed.notify_one();
        self.wake_dispatch.notify_one();
    }
}
