//! Watching the manifest folder: which changed paths can matter, and the quiet period
//! that gathers an editor's several writes into one pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::manifest::ResourceId;

/// Watches the manifest folder; every relevant event sends the paths it names on `tx`
/// (none: re-read everything). `None` if the platform watcher cannot start (then only
/// the periodic resync picks up changes).
pub(super) fn watch_folder(
    path: &Path,
    tx: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let changed = match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => None,
            Ok(event) if event.paths.is_empty() => Some(Vec::new()),
            Ok(event) => {
                let paths: Vec<PathBuf> =
                    event.paths.into_iter().filter(|p| may_matter(p)).collect();
                (!paths.is_empty()).then_some(paths)
            }
            // A watcher error (e.g. an overflowed queue): re-read to be safe.
            Err(_) => Some(Vec::new()),
        };
        if let Some(paths) = changed {
            let _ = tx.send(paths);
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            eprintln!("up: cannot watch files ({error}); changes are picked up at each resync");
            return None;
        }
    };
    if let Err(error) = watcher.watch(path, RecursiveMode::Recursive) {
        eprintln!(
            "up: cannot watch {} ({error}); changes are picked up at each resync",
            path.display()
        );
        return None;
    }
    Some(watcher)
}

/// Whether a changed path can change the manifest set: a manifest file, or something
/// without an extension (a folder). Editor swap and backup files are not.
fn may_matter(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with('.'));
    let extension = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(extension, None | Some("yaml" | "yml" | "json"))
}

/// Waits until no event arrived for `quiet` (at most 2 s or 4 × `quiet` in all); the
/// pass to run then covers the paths of `first` and of every event meanwhile.
pub(super) async fn settle(
    rx: &mut mpsc::UnboundedReceiver<Vec<PathBuf>>,
    quiet: Duration,
    first: Vec<PathBuf>,
) -> Trigger {
    let mut changed = Some(BTreeSet::new());
    let mut add = |paths: Vec<PathBuf>| {
        // An event naming no path: anything may have changed.
        if paths.is_empty() {
            changed = None;
        }
        if let Some(changed) = &mut changed {
            changed.extend(paths);
        }
    };
    add(first);
    let deadline = Instant::now() + (quiet * 4).max(Duration::from_secs(2));
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(paths)) => add(paths),
            Ok(None) | Err(_) => break,
        }
    }
    changed.map_or(Trigger::Full, Trigger::Files)
}

/// What a pass covers.
#[derive(Debug)]
pub(super) enum Trigger {
    /// Every manifest and every resource (start, resync, recheck, retry).
    Full,
    /// The resources of these changed files and what depends on them.
    Files(BTreeSet<PathBuf>),
    /// These resources again, files unchanged (a targeted pass asked to look again).
    Again(BTreeSet<ResourceId>),
}
