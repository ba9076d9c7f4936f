//! Shared vocabulary of wharf: job kinds and their payloads, queue names, the job envelope,
//! retry policies, API keys, and the [`Store`](store::Store) every process talks to.

pub mod audit;
pub mod config;
pub mod email;
pub mod embeddings;
pub mod error;
pub mod idempotency;
pub mod job;
pub mod keys;
pub mod kinds;
pub mod objects;
pub mod purge;
pub mod queue;
pub mod retry;
pub mod schedules;
pub mod store;
pub mod webhooks;

pub use error::StoreError;
pub use job::{
    AttemptRecord, ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, JobState, NewJob, Outcome,
    Page, PageRequest,
};
pub use store::{Store, StoreConfig, open_store};
