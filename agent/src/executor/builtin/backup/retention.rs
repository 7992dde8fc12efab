//! Retention: after a successful backup, the backups of a destination
//! created more than `keep_days` days before now are deleted, data and
//! manifest alike. The creation time is read from the object's name
//! ([`super::naming::parse_name`]); an object whose name is not a backup's is
//! never considered, whatever shares the bucket or directory.

use chrono::{DateTime, Duration, Utc};

use super::dest::{BackupError, Destination};
use super::naming::parse_name;

/// The names among `names` that are backups created before `now - keep_days`.
pub fn expired(names: &[String], now: DateTime<Utc>, keep_days: u32) -> Vec<String> {
    let cutoff = now - Duration::days(i64::from(keep_days));
    names
        .iter()
        .filter(|name| parse_name(name).is_some_and(|b| b.created < cutoff))
        .cloned()
        .collect()
}

/// Deletes the expired backups of `dest`; returns the names deleted.
pub async fn prune(dest: &Destination, now: DateTime<Utc>, keep_days: u32) -> Result<Vec<String>, BackupError> {
    let names = dest.list().await?;
    let doomed = expired(&names, now, keep_days);
    for name in &doomed {
        dest.delete(name).await?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::builtin::backup::naming::backup_id;

    #[test]
    fn only_backups_past_the_cutoff() {
        let now = Utc::now();
        let old = backup_id(now - Duration::days(31), "01old");
        let young = backup_id(now - Duration::days(29), "01young");
        let names: Vec<String> = vec![
            format!("{old}.gz"),
            format!("{old}.json"),
            format!("{young}.gz"),
            format!("{young}.json"),
            "worker-backup-20000101T000000Z-x.txt".into(),
            "unrelated.gz".into(),
        ];
        assert_eq!(
            expired(&names, now, 30),
            vec![format!("{old}.gz"), format!("{old}.json")]
        );
        assert_eq!(expired(&names, now, 3650), Vec::<String>::new());
    }
}
