//! worker (see lib.rs).
