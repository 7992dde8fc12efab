//! API tokens (`tokens` table): only hashes are stored (docs/security.md).

use sqlx::Row;

use super::PgStore;
use crate::error::Result;
use crate::store::TokenRecord;

impl PgStore {
    /// Every token row, by name.
    pub(in crate::store) async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT name, role, hash, created_at, expires_at, revoked_at FROM tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord {
                name: r.get(0),
                role: r.get(1),
                hash: r.get(2),
                created_at: r.get(3),
                expires_at: r.get(4),
                revoked_at: r.get(5),
            })
            .collect())
    }

    /// Inserts a token unless its name or hash is taken.
    pub(in crate::store) async fn insert_token(&self, t: &TokenRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a token that is not revoked yet.
    pub(in crate::store) async fn revoke_token(&self, name: &str, at: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates a token or replaces the role and hash of the one with its name.
    pub(in crate::store) async fn upsert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
        )
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
