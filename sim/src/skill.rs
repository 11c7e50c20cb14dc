//! Skill host (placeholder).
