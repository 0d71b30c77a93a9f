//! The edge: what a client sent, turned into the one target the gateway acts on.
//!
//! Pure functions over bytes, with no Pingora session in sight, so they can be fuzzed
//! ([`path::normalize`], [`target::parse_target`], [`target::normalize_host`]) and tested on
//! their own. `proxy::admission` applies them to a request in `early_request_filter`.

pub mod path;
pub mod query;
pub mod target;

pub use path::{EscapedSlashes, PathError, PathPolicy, PathSemicolons};
pub use target::{NormalHost, Target, TargetError};
