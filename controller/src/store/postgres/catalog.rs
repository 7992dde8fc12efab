//! The job catalog this controller hosts (`catalog_packs`, `catalog_files`,
//! `catalog_reviews`; docs/catalog.md).

use sqlx::Row;

use super::PgStore;
use crate::error::Result;
use crate::store::{CatalogFileRecord, CatalogPackRecord, CatalogPublish, CatalogRatingRecord, CatalogReviewRecord};

impl PgStore {
    /// Stores a pack and its files in one transaction unless (name, version)
    /// is taken; then compares digests.
    pub(in crate::store) async fn publish_pack(
        &self,
        pack: &CatalogPackRecord,
        files: &[CatalogFileRecord],
    ) -> Result<CatalogPublish> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO catalog_packs (name, version, manifest, digest, description, author, published_at, publisher)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&pack.name)
        .bind(&pack.version)
        .bind(&pack.manifest)
        .bind(&pack.digest)
        .bind(&pack.description)
        .bind(&pack.author)
        .bind(pack.published_at)
        .bind(&pack.publisher)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let row = sqlx::query("SELECT digest FROM catalog_packs WHERE name = $1 AND version = $2")
                .bind(&pack.name)
                .bind(&pack.version)
                .fetch_one(&mut *tx)
                .await?;
            let digest: String = row.get(0);
            tx.rollback().await?;
            return Ok(if digest == pack.digest {
                CatalogPublish::Unchanged
            } else {
                CatalogPublish::Conflict(digest)
            });
        }
        for file in files {
            sqlx::query("INSERT INTO catalog_files (name, version, path, content, sha256) VALUES ($1, $2, $3, $4, $5)")
                .bind(&pack.name)
                .bind(&pack.version)
                .bind(&file.path)
                .bind(&file.content)
                .bind(&file.sha256)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(CatalogPublish::Created)
    }

    /// Every published pack without files.
    pub(in crate::store) async fn catalog_packs(&self) -> Result<Vec<CatalogPackRecord>> {
        let rows = sqlx::query(
            "SELECT name, version, manifest, digest, description, author, published_at, publisher
             FROM catalog_packs ORDER BY name, published_at, version",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CatalogPackRecord {
                name: r.get(0),
                version: r.get(1),
                manifest: r.get(2),
                digest: r.get(3),
                description: r.get(4),
                author: r.get(5),
                published_at: r.get(6),
                publisher: r.get(7),
            })
            .collect())
    }

    /// The files of one published pack, by path.
    pub(in crate::store) async fn catalog_pack_files(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<CatalogFileRecord>> {
        let rows = sqlx::query(
            "SELECT path, content, sha256 FROM catalog_files WHERE name = $1 AND version = $2 ORDER BY path",
        )
        .bind(name)
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CatalogFileRecord {
                path: r.get(0),
                content: r.get(1),
                sha256: r.get(2),
            })
            .collect())
    }

    /// Upserts the rating of (pack, token, via).
    pub(in crate::store) async fn put_catalog_rating(
        &self,
        pack: &str,
        token: &str,
        via: &str,
        rating: u32,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO catalog_reviews (pack, token, via, rating, review, updated_at) VALUES ($1, $2, $3, $4, NULL, $5)
             ON CONFLICT (pack, token, via) DO UPDATE SET rating = excluded.rating, updated_at = excluded.updated_at",
        )
        .bind(pack)
        .bind(token)
        .bind(via)
        .bind(i32::try_from(rating).unwrap_or(i32::MAX))
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Upserts the review of (pack, token, via).
    pub(in crate::store) async fn put_catalog_review(
        &self,
        pack: &str,
        token: &str,
        via: &str,
        text: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO catalog_reviews (pack, token, via, rating, review, updated_at) VALUES ($1, $2, $3, NULL, $4, $5)
             ON CONFLICT (pack, token, via) DO UPDATE SET review = excluded.review, updated_at = excluded.updated_at",
        )
        .bind(pack)
        .bind(token)
        .bind(via)
        .bind(text)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Average and count of the ratings per pack.
    pub(in crate::store) async fn catalog_ratings(&self) -> Result<Vec<CatalogRatingRecord>> {
        let rows = sqlx::query(
            "SELECT pack, CAST(AVG(rating) AS DOUBLE PRECISION), COUNT(rating) FROM catalog_reviews
             WHERE rating IS NOT NULL GROUP BY pack ORDER BY pack",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CatalogRatingRecord {
                pack: r.get(0),
                average: r.get(1),
                count: u64::try_from(r.get::<i64, _>(2)).unwrap_or(0),
            })
            .collect())
    }

    /// The ratings and reviews of one pack, newest first.
    pub(in crate::store) async fn catalog_reviews(&self, pack: &str) -> Result<Vec<CatalogReviewRecord>> {
        let rows = sqlx::query(
            "SELECT pack, token, via, rating, review, updated_at FROM catalog_reviews WHERE pack = $1
             ORDER BY updated_at DESC, token, via",
        )
        .bind(pack)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CatalogReviewRecord {
                pack: r.get(0),
                token: r.get(1),
                via: r.get(2),
                rating: r.get::<Option<i32>, _>(3).and_then(|v| u32::try_from(v).ok()),
                review: r.get(4),
                updated_at: r.get(5),
            })
            .collect())
    }
}
