//! Which handler runs which kind, and each queue's retry policy. Adding a kind means one
//! `register` call in [`crate::kinds::registry`].

use std::{collections::HashMap, marker::PhantomData, sync::Arc};

use async_trait::async_trait;
use wharf_jobs::{kinds::JobKind, retry::RetryPolicy};

use crate::handler::{Handler, JobContext, JobError, JobResult};

/// A handler with its payload type erased: it decodes the stored payload itself.
#[async_trait]
pub(crate) trait ErasedHandler: Send + Sync {
    async fn run(&self, ctx: &JobContext, payload: &str) -> JobResult;
}

struct Typed<J, H> {
    handler: H,
    _kind: PhantomData<fn() -> J>,
}

#[async_trait]
impl<J: JobKind, H: Handler<J>> ErasedHandler for Typed<J, H> {
    async fn run(&self, ctx: &JobContext, payload: &str) -> JobResult {
        // A payload that no longer decodes (the type changed, a row was edited) can never
        // succeed: it is a permanent error of this job, and the worker carries on.
        let job: J = serde_json::from_str(payload)
            .map_err(|e| JobError::permanent(format!("payload does not decode as a `{}` job: {e}", J::KIND)))?;
        self.handler.handle(ctx, job).await
    }
}

/// One queue's handlers and its policy.
#[derive(Clone)]
pub struct QueueSpec {
    pub queue: &'static str,
    pub retry: RetryPolicy,
    pub(crate) handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
}

impl QueueSpec {
    pub(crate) fn handler(&self, kind: &str) -> Option<Arc<dyn ErasedHandler>> {
        self.handlers.get(kind).cloned()
    }
}

#[derive(Clone, Default)]
pub struct Registry {
    queues: HashMap<&'static str, QueueSpec>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler of kind `J`. Kinds sharing a queue share its retry policy (the
    /// last registration sets it).
    pub fn register<J: JobKind, H: Handler<J>>(&mut self, handler: H, retry: RetryPolicy) -> &mut Self {
        let spec = self.queues.entry(J::QUEUE).or_insert_with(|| QueueSpec {
            queue: J::QUEUE,
            retry,
            handlers: HashMap::new(),
        });
        spec.retry = retry;
        spec.handlers.insert(J::KIND, Arc::new(Typed { handler, _kind: PhantomData }));
        self
    }

    pub fn queue(&self, queue: &str) -> Option<&QueueSpec> {
        self.queues.get(queue)
    }

    pub fn queues(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.queues.keys().copied()
    }
}
