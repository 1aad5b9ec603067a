//! sim (see lib.rs).
