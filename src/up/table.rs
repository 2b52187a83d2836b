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
}
