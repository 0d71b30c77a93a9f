//! Request routing: the compiled route table the hot path reads.
//!
//! Precedence (deterministic, documented in `docs/configuration.md`):
//! 1. routes with an exact `host`, then routes with a wildcard `*.host` (longest suffix first),
//!    then routes without a host;
//! 2. within one host group: exact `path`, then the longest `path_prefix`, then `path_regex`
//!    in file order;
//! 3. routes with the same path key are tried in file order, and the first whose methods and
//!    headers match wins.
//!
//! Exact and prefix lookups are hash lookups (one per path segment), so matching cost does not
//! grow with the number of routes; regexes are compiled once into a `RegexSet`.

mod split;
mod table;

pub use split::{Placement, Split, Sticky, Target};
pub use table::{Action, FixedResponse, Route, RouteTable};
