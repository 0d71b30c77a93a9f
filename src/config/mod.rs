//! Configuration: the YAML model, loading with located errors, and validation.

mod error;
mod leaf;
mod locate;
mod model;
mod plugins;
mod validate;

pub use error::{ConfigError, KeyPath, PathSeg};
pub(crate) use leaf::deserialize_via_try_from;
pub use leaf::*;
pub use model::*;
pub use plugins::PluginSpec;
pub use validate::{socket_addr, MAX_WEIGHT};

use std::path::Path;

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let file = path.as_ref().display().to_string();
        let source = Self::read_source(&file)?;
        Self::from_yaml_str(&source).map_err(|e| e.in_file(&file, &source))
    }

    /// Reads a configuration file's text; the error names the file.
    pub fn read_source(file: &str) -> Result<String, ConfigError> {
        std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: Some(file.to_string()),
            line: None,
            column: None,
            key: String::new(),
            message: format!("cannot read config file: {e}"),
        })
    }

    /// Parses and validates configuration text. Errors carry a key path but no file.
    pub fn from_yaml_str(source: &str) -> Result<Config, ConfigError> {
        let config: Config = if source.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(source).map_err(from_serde)?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks references, names, addresses and values; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }
}

impl ConfigError {
    /// Attaches the file name and, when the key can be found in `source`, its line and column.
    pub fn in_file(mut self, file: &str, source: &str) -> Self {
        self.file = Some(file.to_string());
        if self.line.is_none() && !self.key.is_empty() {
            if let Some((line, col)) = locate::locate(source, &parse_key_path(&self.key)) {
                self.line = Some(line);
                self.column = Some(col);
            }
        }
        self
    }
}

/// serde_yaml renders `path: message at line L column C`; split it into our fields.
fn from_serde(e: serde_yaml::Error) -> ConfigError {
    let loc = e.location();
    let mut text = e.to_string();
    if let Some(cut) = text.rfind(" at line ") {
        text.truncate(cut);
    }
    let (key, message) = match text.split_once(": ") {
        Some((k, m)) if !k.contains(' ') && !k.is_empty() => (k.to_string(), m.to_string()),
        _ => (String::new(), text),
    };
    ConfigError {
        file: None,
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        key,
        message,
    }
}

/// Parses `routes[2].match.path` back into segments.
fn parse_key_path(key: &str) -> KeyPath {
    let mut segs = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                segs.push(PathSeg::Key(rest[..b].to_string()));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(n) = stripped[..close].parse() {
                    segs.push(PathSeg::Index(n));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            segs.push(PathSeg::Key(rest.to_string()));
        }
    }
    KeyPath(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_round_trip() {
        let p = KeyPath::root()
            .key("routes")
            .index(2)
            .key("match")
            .key("path");
        assert_eq!(p.to_string(), "routes[2].match.path");
        assert_eq!(parse_key_path("routes[2].match.path"), p);
    }

    #[test]
    fn unknown_keys_are_errors_with_location() {
        let err = Config::from_yaml_str("routes:\n  - name: a\n    mtch: {}\n").unwrap_err();
        assert_eq!(err.key, "routes[0]");
        assert!(err.message.contains("unknown field `mtch`"), "{err}");
        assert_eq!(err.line, Some(3));
    }
}
