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

mod action;
mod split;
mod table;

pub use action::{Action, FixedResponse};
pub use split::{Placement, Split, Sticky, Target};
pub use table::{Route, RouteTable};

/// A route's id: its position in the config file, and in the runtime's compiled routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(u32);

impl RouteId {
    /// The id of the route at `index` in the config.
    pub fn new(index: usize) -> RouteId {
        RouteId(index as u32)
    }

    /// The route's position in the config.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
