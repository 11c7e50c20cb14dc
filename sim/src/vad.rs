//! Energy voice activity detection (placeholder).
