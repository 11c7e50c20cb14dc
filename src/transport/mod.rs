//! The HTTP/2 link to AVS (work in progress).
pub mod backoff;
pub mod tls;
