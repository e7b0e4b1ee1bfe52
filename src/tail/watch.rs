//! File-system events as a wake-up hint. Stat polling is the source of truth (inotify sees
//! nothing on NFS, FUSE or some overlay volumes, and runs out of watches); events only end
//! the poller's sleep early, and say whether a directory changed (a file created, removed or
//! renamed) so that discovery runs before the next poll is due.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher, event::ModifyKind};

/// Watches the directories discovery walks; without inotify it just sleeps.
pub(super) struct Wakeup {
    watcher: Option<RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    events: Receiver<()>,
    rescan: Arc<AtomicBool>,
}

impl Wakeup {
    pub fn new() -> Wakeup {
        let (sender, events) = sync_channel(1);
        let rescan = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&rescan);
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| on_event(&sender, &flag, event))
            .map_err(|error| tracing::debug!(%error, "no file-system events; polling only"))
            .ok();
        Wakeup { watcher, watched: HashSet::new(), events, rescan }
    }

    /// Watches `dir` if it exists and is not watched yet.
    pub fn watch(&mut self, dir: &Path, recursive: bool) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        if self.watched.contains(dir) || !dir.is_dir() {
            return;
        }
        let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        match watcher.watch(dir, mode) {
            Ok(()) => {
                self.watched.insert(dir.to_owned());
            }
            Err(error) => {
                tracing::debug!(dir = %dir.display(), %error, "cannot watch; polling only")
            }
        }
    }

    /// Sleeps up to `timeout`; returns early on an event.
    pub fn wait(&self, timeout: Duration) {
        match self.events.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
    }

    /// A file was created, removed or renamed since the last call.
    pub fn take_rescan(&self) -> bool {
        self.rescan.swap(false, Ordering::Relaxed)
    }
}

fn on_event(sender: &SyncSender<()>, rescan: &AtomicBool, event: notify::Result<Event>) {
    let structural = match event {
        Ok(event) => {
            matches!(event.kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)))
        }
        // Missed events (queue overflow): look at everything.
        Err(_) => true,
    };
    if structural {
        rescan.store(true, Ordering::Relaxed);
    }
    match sender.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}
