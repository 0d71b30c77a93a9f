//! Finds the line of a key path in YAML source text.
//!
//! serde_yaml reports locations for syntax and type errors but not for the semantic errors found
//! after parsing (an unknown upstream, a duplicate name). This walks the indentation of
//! block-style YAML, with a fallback into flow mappings on a line, which covers the way gateway
//! files are written. When it cannot tell, it returns `None` and the error names only the key.

use super::error::{KeyPath, PathSeg};

struct Line<'a> {
    no: usize,
    indent: usize,
    text: &'a str,
}

/// The 1-based (line, column) of `path` in `source`, when it can be found.
pub fn locate(source: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let lines: Vec<Line> = source
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                return None;
            }
            Some(Line {
                no: i + 1,
                indent: raw.len() - trimmed.len(),
                text: trimmed,
            })
        })
        .collect();
    let (mut start, mut end, mut min_indent) = (0usize, lines.len(), 0usize);
    let mut found = None;
    for seg in &path.0 {
        match seg {
            PathSeg::Key(k) => {
                let Some((idx, col, indent)) = find_key(&lines, start, end, min_indent, k) else {
                    return found;
                };
                found = Some((lines[idx].no, col));
                end = block_end(&lines, idx, end, indent);
                start = idx;
                min_indent = indent + 1;
            }
            PathSeg::Index(n) => {
                let items: Vec<usize> = (start..end)
                    .filter(|&i| {
                        lines[i].indent + 1 >= min_indent && lines[i].text.starts_with("- ")
                            || lines[i].text == "-"
                    })
                    .collect();
                let Some(item_indent) = items.iter().map(|&i| lines[i].indent).min() else {
                    return found;
                };
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&i| lines[i].indent == item_indent)
                    .collect();
                let Some(&idx) = items.get(*n) else {
                    return found;
                };
                found = Some((lines[idx].no, lines[idx].indent + 1));
                end = items
                    .get(n + 1)
                    .copied()
                    .unwrap_or_else(|| block_end(&lines, idx, end, item_indent));
                start = idx;
                min_indent = item_indent + 1;
            }
        }
    }
    found
}

/// The first line after `idx` that is not nested deeper than `indent`.
fn block_end(lines: &[Line], idx: usize, end: usize, indent: usize) -> usize {
    (idx + 1..end)
        .find(|&i| {
            lines[i].indent < indent
                || (lines[i].indent == indent
                    && !(lines[i].text.starts_with("- ") || lines[i].text == "-"))
        })
        .unwrap_or(end)
}

/// Finds `key:` in [start, end), at the shallowest indentation, or inside a flow mapping.
fn find_key(
    lines: &[Line],
    start: usize,
    end: usize,
    min_indent: usize,
    key: &str,
) -> Option<(usize, usize, usize)> {
    let mut best: Option<(usize, usize, usize)> = None;
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        let (text, indent) = match line.text.strip_prefix("- ") {
            Some(rest) => (
                rest.trim_start(),
                line.indent + (line.text.len() - rest.trim_start().len()),
            ),
            None => (line.text, line.indent),
        };
        if indent >= min_indent && key_at(text, key) {
            if best.is_none_or(|(_, _, bi)| indent < bi) {
                best = Some((i, indent + 1, indent));
            }
            continue;
        }
        // A flow mapping on this line, e.g. `match: { path: /x }`.
        if let Some(brace) = line.text.find('{') {
            let flow = &line.text[brace..];
            for (off, _) in flow.match_indices(key) {
                let before = flow[..off].trim_end();
                if (before.ends_with('{') || before.ends_with(','))
                    && key_at(&flow[off..], key)
                    && best.is_none()
                {
                    let col = line.indent + brace + off + 1;
                    return Some((i, col, line.indent + brace + off));
                }
            }
        }
    }
    best
}

fn key_at(text: &str, key: &str) -> bool {
    let unquoted = text
        .strip_prefix(key)
        .or_else(|| text.strip_prefix(&format!("\"{key}\"")))
        .or_else(|| text.strip_prefix(&format!("'{key}'")));
    matches!(unquoted, Some(rest) if rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "server:\n  workers: 2\nroutes:\n  - name: a\n    match: { path: /a }\n    upstream: x\n  - name: b\n    upstream: apii\n";

    #[test]
    fn finds_nested_keys() {
        let p = KeyPath::root().key("routes").index(1).key("upstream");
        assert_eq!(locate(DOC, &p), Some((8, 5)));
        let p = KeyPath::root().key("server").key("workers");
        assert_eq!(locate(DOC, &p), Some((2, 3)));
        let p = KeyPath::root()
            .key("routes")
            .index(0)
            .key("match")
            .key("path");
        assert_eq!(locate(DOC, &p).map(|l| l.0), Some(5));
        let p = KeyPath::root().key("routes").index(1).key("name");
        assert_eq!(locate(DOC, &p), Some((7, 5)));
    }
}
