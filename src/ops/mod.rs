//! ops (see lib.rs).
