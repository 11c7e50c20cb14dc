//! Login with Amazon (owned by the link work; placeholder).
