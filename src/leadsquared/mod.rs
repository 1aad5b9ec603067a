//! leadsquared (see lib.rs).
