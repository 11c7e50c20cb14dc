//! A raw h2 client over rustls (placeholder).
