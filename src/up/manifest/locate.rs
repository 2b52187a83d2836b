//! The line of a field inside a YAML document, so that a problem with
//! `spec.fields[1].dim` points at the `dim:` line rather than at the document's first
//! line. The parsed value carries no positions below the document, so the path is
//! followed through the text by indentation (block mappings and sequences; a flow
//! value `{...}`/`[...]` ends the walk at its line). Where a field is missing (a
//! required one) the line of the deepest part of the path found is the answer.

/// One step of a field path.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.fields[1].dim` → `spec`, `fields`, `[1]`, `dim`. `None` if it is not a path.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        steps.push(Step::Key(key));
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            steps.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(steps)
}

/// The field path a problem message is about: the quoted path of `unknown field "…"`,
/// or the leading `path:` of messages such as `spec.fields[1].dim: must be at least 2`.
pub(super) fn path_in_message(message: &str) -> Option<&str> {
    if let Some(rest) = message.split_once("unknown field \"").map(|(_, rest)| rest) {
        return rest.split('"').next();
    }
    let (head, _) = message.split_once(": ")?;
    steps(head).map(|_| head)
}

/// A line of the document: its number, where its content starts, and the content
/// with a leading `- ` (a sequence item) noted separately.
struct Line<'a> {
    number: u64,
    indent: usize,
    dash: bool,
    /// Column of the content after any `- `.
    inner: usize,
    content: &'a str,
}

fn lines_of(text: &str, first_line: u64) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for (index, raw) in text
        .lines()
        .enumerate()
        .skip(first_line.saturating_sub(1) as usize)
    {
        let number = index as u64 + 1;
        if number > first_line && (raw.starts_with("---") || raw.starts_with("...")) {
            break;
        }
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let (dash, inner, content) = match trimmed.strip_prefix('-') {
            Some(after) if after.is_empty() || after.starts_with(' ') => {
                let after_trimmed = after.trim_start();
                let inner = indent + 1 + (after.len() - after_trimmed.len());
                (true, inner, after_trimmed)
            }
            _ => (false, indent, trimmed),
        };
        out.push(Line {
            number,
            indent,
            dash,
            inner,
            content,
        });
    }
    out
}

/// Whether `content` is the key `key` (`key:`, `"key":` or `'key':`) and the rest of
/// the line after the colon.
fn key_value<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    for quote in ["", "\"", "'"] {
        if let Some(rest) = content
            .strip_prefix(quote)
            .and_then(|c| c.strip_prefix(key))
            .and_then(|c| c.strip_prefix(quote))
            .and_then(|c| c.strip_prefix(':'))
            && (rest.is_empty() || rest.starts_with(' '))
        {
            return Some(rest.trim());
        }
    }
    None
}

/// The 1-based line of `path` in the YAML document starting at `first_line` of `text`
/// (the deepest part of it found), or `None` when not even its first key is there.
pub(super) fn field_line(text: &str, first_line: u64, path: &str) -> Option<u64> {
    let steps = steps(path)?;
    let lines = lines_of(text, first_line);
    // The lines of the current node's value, and the line of the node itself.
    let mut range: &[Line<'_>] = &lines;
    let mut found: Option<u64> = None;
    for step in steps {
        match step {
            Step::Key(key) => {
                // The mapping's keys sit at the column of its first entry.
                let Some(column) = range.first().map(|line| line.inner) else {
                    return found;
                };
                let at = range.iter().position(|line| {
                    let key_column = if line.dash { line.inner } else { line.indent };
                    key_column == column && key_value(line.content, key).is_some()
                });
                let Some(at) = at else {
                    return found;
                };
                let line = &range[at];
                found = Some(line.number);
                let value = key_value(line.content, key).unwrap_or("");
                if value.starts_with('{') || value.starts_with('[') {
                    // A flow value: everything below is on this line.
                    return found;
                }
                let key_column = column;
                let rest = &range[at + 1..];
                let end = rest
                    .iter()
                    .position(|l| l.indent < key_column || (l.indent == key_column && !l.dash))
                    .unwrap_or(rest.len());
                range = &rest[..end];
            }
            Step::Index(index) => {
                let Some(column) = range.first().filter(|line| line.dash).map(|l| l.indent) else {
                    return found;
                };
                let items: Vec<usize> = range
                    .iter()
                    .enumerate()
                    .filter(|(_, line)| line.dash && line.indent == column)
                    .map(|(at, _)| at)
                    .collect();
                let Some(&start) = items.get(index) else {
                    return found;
                };
                let end = items.get(index + 1).copied().unwrap_or(range.len());
                let item = &range[start..end];
                found = Some(item[0].number);
                if item[0].content.starts_with('{') || item[0].content.starts_with('[') {
                    return found;
                }
                range = item;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
kind: Collection
apiVersion: collections.dev/v1alpha1
metadata:
  name: docs
spec:
  coordinatorRef: {name: c1}
  fields:
    - {name: pk, dataType: VarChar, maxLength: 64, isPrimaryKey: true}
    - name: embedding
      dataType: FloatVector
      dim: 1
  indexes:
  - field: embedding
    indexType: HNSW
---
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: products
spec:
  collecton: products_v1
";

    #[test]
    fn paths_lead_to_their_own_line() {
        assert_eq!(field_line(DOC, 1, "spec.fields[1].dim"), Some(11));
        assert_eq!(field_line(DOC, 1, "spec.fields[0].isPrimaryKey"), Some(8));
        assert_eq!(field_line(DOC, 1, "spec.coordinatorRef.name"), Some(6));
        assert_eq!(field_line(DOC, 1, "spec.indexes[0].indexType"), Some(14));
        assert_eq!(field_line(DOC, 1, "metadata.name"), Some(4));
        // The second document: its own lines, not the first document's.
        assert_eq!(field_line(DOC, 16, "spec.collecton"), Some(21));
        assert_eq!(field_line(DOC, 16, "metadata.name"), Some(19));
    }

    #[test]
    fn a_missing_field_points_at_its_deepest_parent() {
        assert_eq!(field_line(DOC, 16, "spec.collection"), Some(20));
        assert_eq!(field_line(DOC, 1, "spec.fields[5].dim"), Some(7));
        assert_eq!(field_line(DOC, 1, "status.x"), None);
    }

    #[test]
    fn messages_name_their_path() {
        assert_eq!(
            path_in_message("unknown field \"spec.collecton\""),
            Some("spec.collecton")
        );
        assert_eq!(
            path_in_message("spec.fields[1].dim: must be at least 2"),
            Some("spec.fields[1].dim")
        );
        assert_eq!(path_in_message("the document is not a mapping"), None);
    }
}
