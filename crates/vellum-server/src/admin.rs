//! Whole-store operations: stats, message-store compaction, verify.

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// Engine-wide figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub open_files: usize,
    pub open_files_peak: usize,
    pub cached_channels: usize,
    /// Group commits written to the journal, and the jobs (appends, batches, …) they held.
    pub commit_groups: u64,
    pub commit_jobs: u64,
    pub journal_syncs: u64,
    pub checkpoints: u64,
    /// Damaged ranges set aside since open.
    pub lost_ranges: usize,
    pub store: StoreFigures,
    /// Channels with live subscribers.
    pub subscribed_channels: usize,
}

/// The message store's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreFigures {
    pub messages: u64,
    pub live_bytes: u64,
    pub file_bytes: u64,
    pub garbage_fraction: f64,
    pub segments: u64,
    /// Segment files open now (at most `limits.open_segments_max`).
    pub open_segment_files: u64,
    pub compactions: u64,
    pub bytes_rewritten: u64,
    pub index_bytes: u64,
    pub syncs: u64,
}

impl From<vellum::MessageStoreStats> for StoreFigures {
    fn from(s: vellum::MessageStoreStats) -> Self {
        StoreFigures {
            messages: s.messages,
            live_bytes: s.live_bytes,
            file_bytes: s.file_bytes,
            garbage_fraction: s.garbage_fraction,
            segments: s.segments,
            open_segment_files: s.open_segment_files,
            compactions: s.compactions,
            bytes_rewritten: s.bytes_rewritten,
            index_bytes: s.index_bytes,
            syncs: s.syncs,
        }
    }
}

#[utoipa::path(get, path = "/v1/stats", tag = "store", responses((status = 200, body = Stats)))]
pub async fn stats(State(app): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let s = app.blocking(|s| Ok(s.stats())).await?;
    Ok(Json(Stats {
        open_files: s.open_files,
        open_files_peak: s.open_files_peak,
        cached_channels: s.cached_channels,
        commit_groups: s.commit.groups,
        commit_jobs: s.commit.jobs,
        journal_syncs: s.commit.journal_syncs,
        checkpoints: s.commit.checkpoints,
        lost_ranges: s.lost_ranges,
        store: s.message_store.into(),
        subscribed_channels: app.hub.channels(),
    }))
}

/// `POST /v1/store/compaction`: compacts the message store now (every segment over
/// the garbage threshold); answers with the store's figures after.
#[utoipa::path(post, path = "/v1/store/compaction", tag = "store",
    responses((status = 200, body = StoreFigures), (status = 503, body = ErrorBody)))]
pub async fn compact(State(app): State<AppState>) -> Result<Json<StoreFigures>, ApiError> {
    let after = app
        .blocking(|s| {
            s.compact_message_store()?;
            Ok(s.stats().message_store)
        })
        .await?;
    Ok(Json(after.into()))
}

/// What `verify` found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verified {
    /// No damage, nothing set aside, no stored body missing or undercounted.
    pub clean: bool,
    pub live_channels: u64,
    pub archived_files: u64,
    pub messages: u64,
    pub store_messages: u64,
    pub damage: Vec<DamageFound>,
    pub lost_ranges: Vec<DamageFound>,
    /// Stored bodies referenced but missing.
    pub dangling_references: usize,
    /// Stored bodies with fewer references than records.
    pub undercounted_references: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DamageFound {
    pub path: String,
    pub offset: u64,
    pub bytes: Option<u64>,
    pub reason: String,
}

impl From<vellum::VerifyReport> for Verified {
    fn from(r: vellum::VerifyReport) -> Self {
        Verified {
            clean: r.is_clean(),
            live_channels: r.live_channels,
            archived_files: r.archived_files,
            messages: r.messages,
            store_messages: r.store_messages,
            damage: r
                .damage
                .into_iter()
                .map(|d| DamageFound {
                    path: d.path.display().to_string(),
                    offset: d.offset,
                    bytes: None,
                    reason: d.reason,
                })
                .collect(),
            lost_ranges: r
                .lost_ranges
                .iter()
                .map(|l| DamageFound {
                    path: l.path.display().to_string(),
                    offset: l.start,
                    bytes: Some(l.end - l.start),
                    reason: l.reason.clone(),
                })
                .collect(),
            dangling_references: r.references.dangling.len(),
            undercounted_references: r.references.undercounted.len(),
        }
    }
}

/// `POST /v1/verify`: reads and checks every record (channels, archive, message store)
/// and the store's reference counts. Changes nothing.
#[utoipa::path(post, path = "/v1/verify", tag = "store", responses((status = 200, body = Verified)))]
pub async fn verify(State(app): State<AppState>) -> Result<Json<Verified>, ApiError> {
    let report = app.blocking(|s| s.verify(&mut |_| {})).await?;
    Ok(Json(report.into()))
}
