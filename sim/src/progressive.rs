//! Progressive Response API (placeholder).
