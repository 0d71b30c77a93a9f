//! The request's consumer: the identity authentication established.

use std::sync::Arc;

/// Who the request is from, as an authentication plugin established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The identity: a configured consumer name, a user, a JWT claim, a forward_auth header.
    pub name: Arc<str>,
    /// Whether `name` comes from the config (a bounded set, fit for a metric label). JWT
    /// subjects and forward_auth headers are chosen by others and are never labels.
    pub configured: bool,
}

impl Consumer {
    /// A consumer named in the config (key_auth consumers, basic_auth users).
    pub fn configured(name: Arc<str>) -> Self {
        Consumer {
            name,
            configured: true,
        }
    }

    /// A consumer named by a token or another service (never a metric label).
    pub fn external(name: &str) -> Self {
        Consumer {
            name: Arc::from(name),
            configured: false,
        }
    }

    /// The metric label: the name when configured, `"other"` otherwise.
    pub fn label(&self) -> &str {
        if self.configured {
            &self.name
        } else {
            "other"
        }
    }
}
