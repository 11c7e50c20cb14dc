//! The HTTP/2 link to AVS (owned by the link work; placeholder).
