//! `rewrite`: changes the path sent upstream with a regex; the query is kept. The result is
//! normalized with the same rules as client paths, so a rewrite cannot climb out of the root.

use crate::config::{ConfigError, RegexConf};
use crate::edge::PathPolicy;
use crate::plugin::{Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use async_trait::async_trait;
use serde::Deserialize;

/// The YAML of `rewrite`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Matched against the normalized path; a path that does not match is left alone.
    pub regex: RegexConf,
    /// The new path, with `$1`, `${name}` captures.
    pub replacement: String,
}

/// The compiled `rewrite`.
pub struct Rewrite {
    regex: regex::Regex,
    replacement: String,
    paths: PathPolicy,
}

/// Refuses a replacement that names a capture group the regex does not have.
pub(crate) fn check_replacement(re: &regex::Regex, rep: &str) -> Result<(), String> {
    let names: Vec<&str> = re.capture_names().flatten().collect();
    let b = rep.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        i += 1;
        if b.get(i) == Some(&b'$') {
            i += 1;
            continue;
        }
        let (name, next) = if b.get(i) == Some(&b'{') {
            match rep[i + 1..].find('}') {
                Some(end) => (&rep[i + 1..i + 1 + end], i + 2 + end),
                None => return Err(format!("unclosed ${{ in {rep:?}")),
            }
        } else {
            let end = rep[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(rep.len(), |e| i + e);
            (&rep[i..end], end)
        };
        let known = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => names.contains(&name),
        };
        if !known {
            return Err(format!(
                "${name} is not a capture group of the regex (write $$ for a literal $)"
            ));
        }
        i = next;
    }
    Ok(())
}

impl Rewrite {
    /// Compiles the rule.
    pub fn build(c: &RewriteConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        check_replacement(&c.regex.0, &c.replacement).map_err(|m| cx.error("replacement", m))?;
        Ok(Rewrite {
            regex: c.regex.0.clone(),
            replacement: c.replacement.clone(),
            paths: *cx.paths,
        })
    }

    /// The rewritten, normalized path; `Err` when the result is not a path we may forward.
    pub fn apply(&self, path: &str) -> Option<Result<String, &'static str>> {
        let caps = self.regex.captures(path)?;
        let mut out = String::with_capacity(path.len() + self.replacement.len());
        caps.expand(&self.replacement, &mut out);
        let strict = PathPolicy {
            normalize: true,
            ..self.paths
        };
        Some(
            match crate::edge::path::normalize(out.as_bytes(), &strict) {
                Ok(None) => Ok(out),
                Ok(Some(normal)) => Ok(normal),
                Err(e) => Err(e.as_str()),
            },
        )
    }
}

#[async_trait]
impl Plugin for Rewrite {
    fn phase(&self) -> Phase {
        Phase::Rewrite
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        let bad = |why: &'static str| Flow::Reply(Reply::bad_request(why));
        match self.apply(req.path()) {
            None => Flow::Continue,
            Some(Ok(path)) => match req.set_path(&path) {
                Ok(()) => Flow::Continue,
                Err(_) => bad("rewritten path is not a valid target"),
            },
            Some(Err(why)) => bad(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(re: &str, rep: &str) -> Rewrite {
        Rewrite {
            regex: regex::Regex::new(re).expect("regex"),
            replacement: rep.to_string(),
            paths: PathPolicy::default(),
        }
    }

    #[test]
    fn captures_expand_and_results_are_normalized() {
        let r = rw("^/api/v1/(.*)$", "/v1/$1");
        assert_eq!(r.apply("/api/v1/users/7"), Some(Ok("/v1/users/7".into())));
        assert_eq!(r.apply("/other"), None);
        assert_eq!(
            r.apply("/api/v1/../../etc"),
            Some(Err("path climbs above the root"))
        );
        assert_eq!(r.apply("/api/v1/a/../b"), Some(Ok("/v1/b".into())));
        assert_eq!(
            rw("^/(.*)$", "$1").apply("/x"),
            Some(Err("path must start with /"))
        );
    }

    #[test]
    fn replacements_name_existing_groups() {
        let re = regex::Regex::new("^/(?P<rest>.*)$").expect("regex");
        assert!(check_replacement(&re, "/v1/$1").is_ok());
        assert!(check_replacement(&re, "/v1/${rest}").is_ok());
        assert!(check_replacement(&re, "/v1/$$1").is_ok());
        assert!(check_replacement(&re, "/v1/$2").is_err());
        assert!(check_replacement(&re, "/v1/$other").is_err());
    }
}
