//! Speech synthesis to MP3 (placeholder).
