//! A string that must never be shown: LeadSquared access and secret keys, custom header
//! values. `Debug` and `Display` print `***`; the value is reachable only through
//! [`Secret::expose`], so every place that sends or stores it is greppable.

use serde::{Deserialize, Serialize};

/// A secret string. Serialises as its plain value (it has to be stored in Redis and sent to
/// LeadSquared); never formats as it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plain value, for the few places that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "sk-live-123");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"sk-live-123\""
        );
    }
}
