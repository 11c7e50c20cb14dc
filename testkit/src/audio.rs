//! Virtual audio devices for tests (placeholder).
