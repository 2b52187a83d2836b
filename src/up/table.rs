//! Plain-text tables for `plan` and `up` (left-aligned columns, two spaces apart, like
//! `kubectl get`).

use std::fmt::Write;

use super::reconcile::Intents;
use super::serving::ServingPlan;
use crate::plan::serving::{Gate, ServingAction};
use crate::plan::{Action, Plan, Verdict};

/// Renders rows under headers; the last column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate().take(columns) {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (index, cell) in cells.enumerate() {
            if index + 1 < columns {
                let pad = widths[index] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Width used when standard output is not a terminal (a file, a pipe, a pod's log).
pub const DEFAULT_WIDTH: usize = 120;

/// The width to fit output to: `COLUMNS` if set, else the terminal's, else
/// [`DEFAULT_WIDTH`].
pub fn output_width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|columns| *columns > 0)
    {
        return columns;
    }
    terminal_width().unwrap_or(DEFAULT_WIDTH)
}

fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct passed by pointer.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// Renders rows as a table when it fits in `width` columns; otherwise one line per
/// row: its first cell, then `header: cell` for the others that say something (not
/// `-`).
pub fn render_fitted(headers: &[&str], rows: &[Vec<String>], width: usize) -> String {
    let table = render(headers, rows);
    if table.lines().all(|line| line.chars().count() <= width) {
        return table;
    }
    let mut out = String::new();
    for row in rows {
        let mut cells = row.iter();
        out.push_str(cells.next().map(String::as_str).unwrap_or(""));
        let rest: Vec<String> = headers
            .iter()
            .skip(1)
            .zip(cells)
            .filter(|(_, cell)| !cell.is_empty() && *cell != "-")
            .map(|(header, cell)| format!("{}: {cell}", header.to_lowercase()))
            .collect();
        if !rest.is_empty() {
            out.push_str(" -- ");
            out.push_str(&rest.join("; "));
        }
        out.push('\n');
    }
    out
}

/// An action as one line, the way `plan` lists it: `alter alias default products
/// products_v1 -> products_v2 (for CollectionAlias default/products)`.
pub fn action_line(row: &[String]) -> String {
    row.iter()
        .filter(|cell| !cell.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `ACTION DATABASE OBJECT DETAIL` row of an action.
pub fn action_row(action: &Action, intents: &Intents) -> Vec<String> {
    let owner = |key| {
        intents
            .resource(key)
            .map(|id| format!(" (for {id})"))
            .unwrap_or_default()
    };
    let (verb, database, object, detail) = match action {
        Action::CreateDatabase { database } => {
            ("create database", database, database.clone(), String::new())
        }
        Action::CreateCollection {
            key,
            database,
            name,
            spec,
        } => {
            let pk = spec
                .fields
                .iter()
                .find(|f| f.is_primary_key)
                .map(|f| format!(", primary key {}", f.name))
                .unwrap_or_default();
            (
                "create collection",
                database,
                name.clone(),
                format!("{} field(s){pk}{}", spec.fields.len(), owner(key)),
            )
        }
        Action::AdoptCollection {
            key,
            database,
            name,
            id,
        } => (
            "adopt collection",
            database,
            name.clone(),
            format!("existing ID {id}{}", owner(key)),
        ),
        Action::CreateAlias {
            key,
            database,
            alias,
            target,
        } => (
            "create alias",
            database,
            alias.clone(),
            format!("-> {target}{}", owner(key)),
        ),
        Action::AlterAlias {
            key,
            database,
            alias,
            from,
            to,
        } => (
            "alter alias",
            database,
            alias.clone(),
            format!("{from} -> {to}{}", owner(key)),
        ),
        Action::AdoptAlias {
            key,
            database,
            alias,
            target,
        } => (
            "adopt alias",
            database,
            alias.clone(),
            format!("existing -> {target}{}", owner(key)),
        ),
        Action::DropAlias {
            key,
            database,
            alias,
        } => (
            "drop alias",
            database,
            alias.clone(),
            owner(key).trim().to_string(),
        ),
        Action::DropCollection {
            key,
            database,
            name,
        } => (
            "drop collection",
            database,
            name.clone(),
            owner(key).trim().to_string(),
        ),
    };
    vec![verb.to_string(), database.clone(), object, detail]
}

/// The readable form of a verdict.
pub fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Ready => "Ready".to_string(),
        Verdict::Released => "Released".to_string(),
        Verdict::NotReady { reason, message } => {
            format!("NotReady {}: {message}", reason.as_str())
        }
    }
}

/// Counts by kind of change, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Creates (databases, collections, aliases).
    pub create: usize,
    /// Alias moves.
    pub alter: usize,
    /// Drops.
    pub drop: usize,
    /// Adoptions (no engine write).
    pub adopt: usize,
}

impl Counts {
    /// Counts the plan's actions.
    pub fn of(actions: &[Action]) -> Self {
        let mut counts = Self::default();
        for action in actions {
            match action {
                Action::CreateDatabase { .. }
                | Action::CreateCollection { .. }
                | Action::CreateAlias { .. } => counts.create += 1,
                Action::AlterAlias { .. } => counts.alter += 1,
                Action::DropAlias { .. } | Action::DropCollection { .. } => counts.drop += 1,
                Action::AdoptCollection { .. } | Action::AdoptAlias { .. } => counts.adopt += 1,
            }
        }
        counts
    }
}

/// The `ACTION DATABASE OBJECT DETAIL` row of a serving call (index, load, release).
pub fn serving_row(
    key: &crate::plan::ObjectKey,
    database: &str,
    name: &str,
    action: &ServingAction,
    intents: &Intents,
) -> Vec<String> {
    let owner = intents
        .resource(key)
        .map(|id| format!(" (for {id})"))
        .unwrap_or_default();
    let (verb, detail) = match action {
        ServingAction::CreateIndex(index) => (
            "create index",
            format!(
                "{} on {}: {}{}",
                index.engine_name(),
                index.field_name,
                index.index_type,
                index
                    .metric_type
                    .as_ref()
                    .map(|metric| format!(" {metric}"))
                    .unwrap_or_default()
            ),
        ),
        ServingAction::LoadCollection { replicas, .. } => (
            "load collection",
            replicas
                .map(|replicas| format!("{replicas} replica(s)"))
                .unwrap_or_default(),
        ),
        ServingAction::ReleaseCollection => (
            "release collection",
            "no alias has pointed to it for its releaseDelay".to_string(),
        ),
    };
    let detail = format!("{detail}{owner}").trim().to_string();
    vec![
        verb.to_string(),
        database.to_string(),
        name.to_string(),
        detail,
    ]
}

/// One line per gate checked: what the alias waits for, with the figures.
pub fn gate_rows(serving: &ServingPlan, intents: &Intents) -> Vec<Vec<String>> {
    intents
        .aliases
        .iter()
        .filter_map(|intent| {
            let (target, gate) = serving.gates.get(&intent.key)?;
            let text = match gate {
                Gate::Swap => format!("opens: {target} serves"),
                Gate::Wait { waits } => format!("waits: {target} {}", waits.join("; ")),
                Gate::Blocked { message } => format!("blocked (SwapBlocked): {message}"),
            };
            Some(vec![
                intents
                    .resource(&intent.key)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| intent.key.to_string()),
                intent.alias.clone(),
                text,
            ])
        })
        .collect()
}

/// The whole `plan` report: actions (engine objects, then indexes and load), gates,
/// verdicts, summary.
pub fn plan_report(plan: &Plan, serving: &ServingPlan, intents: &Intents) -> String {
    let mut out = String::new();
    if plan.actions.is_empty() && serving.actions.is_empty() {
        out.push_str("No engine changes.\n");
    } else {
        let rows: Vec<Vec<String>> = plan
            .actions
            .iter()
            .map(|a| action_row(a, intents))
            .chain(serving.actions.iter().map(|(key, database, name, action)| {
                serving_row(key, database, name, action, intents)
            }))
            .collect();
        out.push_str(&render(&["ACTION", "DATABASE", "OBJECT", "DETAIL"], &rows));
    }
    let gates = gate_rows(serving, intents);
    if !gates.is_empty() {
        out.push('\n');
        out.push_str(&render(&["ALIAS", "ENGINE NAME", "GATE"], &gates));
    }
    out.push('\n');
    let mut rows = Vec::new();
    for intent in &intents.collections {
        let verdict = plan.verdicts.get(&intent.key);
        let mut row = verdict_row(
            intents,
            &intent.key,
            &intent.database,
            &intent.name,
            verdict,
        );
        if serving.collections.contains_key(&intent.key) {
            row[3] = format!("{}; {}", row[3], serving.collection_text(&intent.key));
        }
        rows.push(row);
    }
    for intent in &intents.aliases {
        let verdict = plan.verdicts.get(&intent.key);
        rows.push(verdict_row(
            intents,
            &intent.key,
            &intent.database,
            &intent.alias,
            verdict,
        ));
    }
    out.push_str(&render(
        &["RESOURCE", "DATABASE", "ENGINE NAME", "VERDICT"],
        &rows,
    ));
    let counts = Counts::of(&plan.actions);
    let mut indexes = 0;
    let mut loads = 0;
    let mut releases = 0;
    for (_, _, _, action) in &serving.actions {
        match action {
            ServingAction::CreateIndex(_) => indexes += 1,
            ServingAction::LoadCollection { .. } => loads += 1,
            ServingAction::ReleaseCollection => releases += 1,
        }
    }
    let not_ready = plan
        .verdicts
        .values()
        .filter(|v| matches!(v, Verdict::NotReady { .. }))
        .count();
    let _ = write!(
        out,
        "\nPlan: {} to create, {} to alter, {} to drop, {} to adopt; {indexes} index(es) to \
         create, {loads} collection(s) to load, {releases} to release; {} of {} resource(s) \
         not ready.\n",
        counts.create,
        counts.alter,
        counts.drop,
        counts.adopt,
        not_ready,
        intents.collections.len() + intents.aliases.len()
    );
    out
}

fn verdict_row(
    intents: &Intents,
    key: &crate::plan::ObjectKey,
    database: &str,
    name: &str,
    verdict: Option<&Verdict>,
) -> Vec<String> {
    let resource = intents
        .resource(key)
        .map(ToString::to_string)
        .unwrap_or_else(|| key.to_string());
    vec![
        resource,
        database.to_string(),
        name.to_string(),
        verdict
            .map(verdict_text)
            .unwrap_or_else(|| "(no verdict)".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_are_trimmed() {
        let text = render(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "y".into(), "z".into()],
                vec!["x".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(text, "A    BB  C\nxxx  y   z\nx\n");
    }

    #[test]
    fn a_table_too_wide_becomes_one_line_per_row() {
        let rows = vec![
            vec!["Collection default/a".into(), "-".into(), "READY".into()],
            vec![
                "CollectionAlias default/b".into(),
                "x".into(),
                "NotReady: waits".into(),
            ],
        ];
        let wide = render_fitted(&["RESOURCE", "X", "STATUS"], &rows, 80);
        assert_eq!(wide, render(&["RESOURCE", "X", "STATUS"], &rows));
        let narrow = render_fitted(&["RESOURCE", "X", "STATUS"], &rows, 30);
        assert_eq!(
            narrow,
            "Collection default/a -- status: READY\n\
             CollectionAlias default/b -- x: x; status: NotReady: waits\n"
        );
    }
}
