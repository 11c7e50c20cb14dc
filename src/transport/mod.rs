//! The HTTP/2 link to AVS (work in progress).
pub mod attachments;
pub mod backoff;
pub mod outbox;
pub mod tls;
