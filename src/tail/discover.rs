//! File discovery: walks the literal directory prefix of each `paths` glob and keeps the
//! regular files that match an include glob and no exclude glob. What a glob selects but must
//! not be tailed is reported with the reason ([`SkipReason`]): a symlink leading out of the
//! glob's fixed prefix (unless `follow_symlinks`), or something that is not a regular file.
//! Without `follow_symlinks` the walk never descends through a link to a directory, so `**`
//! cannot wander out of the watched tree.

use std::path::{Component, Path, PathBuf};

use super::InputSettings;

/// Where to walk for one glob: the directory before the first glob character, and how deep.
#[derive(Debug, PartialEq, Eq)]
struct WalkRoot {
    dir: PathBuf,
    /// `None`: unlimited (the glob has `**`).
    max_depth: Option<usize>,
}

fn walk_root(pattern: &str) -> WalkRoot {
    let path = Path::new(pattern);
    let mut dir = PathBuf::new();
    let mut rest = Vec::new();
    for component in path.components() {
        let text = component.as_os_str().to_string_lossy();
        let is_glob = text.contains(['*', '?', '[', '{']);
        if rest.is_empty() && !is_glob {
            dir.push(component);
        } else {
            rest.push(text.into_owned());
        }
    }
    if rest.is_empty() {
        // A literal file path: walk its directory, one level.
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        return WalkRoot { dir: non_empty(parent), max_depth: Some(1) };
    }
    let unlimited = rest.iter().any(|part| part.contains("**"));
    let max_depth = (!unlimited).then_some(rest.len());
    WalkRoot { dir: non_empty(dir), max_depth }
}

fn non_empty(dir: PathBuf) -> PathBuf {
    if dir.as_os_str().is_empty() || dir.components().all(|c| c == Component::CurDir) {
        PathBuf::from(".")
    } else {
        dir
    }
}

/// The directories discovery walks, and whether below them too (for file-system events).
pub fn roots(input: &InputSettings) -> Vec<(PathBuf, bool)> {
    input
        .paths
        .iter()
        .map(|pattern| walk_root(pattern))
        .map(|root| (root.dir, root.max_depth.is_none_or(|d| d > 1)))
        .collect()
}

/// Why a path the globs select is not tailed (the `reason` label of
/// `pillion_input_skipped_files_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A symlink whose target is outside the glob's fixed prefix (`follow_symlinks: false`).
    SymlinkOutside,
    /// A FIFO, socket, device, directory, or a pseudo-file (procfs, sysfs) whose size says 0.
    NotRegular,
    /// It cannot be opened for reading (permissions).
    Unreadable,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::SymlinkOutside => "symlink_outside",
            SkipReason::NotRegular => "not_regular",
            SkipReason::Unreadable => "unreadable",
        }
    }
}

/// What one walk found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Regular files to follow, sorted, without duplicates.
    pub files: Vec<PathBuf>,
    /// Paths the globs select that are not followed, and why.
    pub skipped: Vec<(PathBuf, SkipReason)>,
}

/// The files that `input` selects right now.
pub fn discover(input: &InputSettings) -> Discovery {
    let mut found = Discovery::default();
    for pattern in &input.paths {
        let root = walk_root(pattern);
        // Links are resolved by hand below, against the canonical root (which may itself be
        // reached through a link: the root is always followed).
        let canonical_root = match std::fs::canonicalize(&root.dir) {
            Ok(dir) => dir,
            Err(_) => continue,
        };
        let mut walker = walkdir::WalkDir::new(&root.dir).follow_links(input.follow_symlinks);
        if let Some(depth) = root.max_depth {
            walker = walker.max_depth(depth);
        }
        for entry in walker.into_iter().filter_map(Result::ok) {
            let file_type = entry.file_type();
            if file_type.is_dir() && entry.depth() == 0 {
                continue;
            }
            let path = clean(entry.path(), &root.dir, pattern);
            if !selected(input, &path) {
                continue;
            }
            let verdict = if file_type.is_symlink() {
                // Only without follow_symlinks: walkdir resolves links itself otherwise (a
                // dangling link stays a symlink and is skipped as not regular).
                classify_link(entry.path(), &canonical_root, input.follow_symlinks)
            } else if file_type.is_file() {
                Ok(())
            } else {
                Err(SkipReason::NotRegular)
            };
            match verdict {
                Ok(()) => found.files.push(path),
                Err(reason) => found.skipped.push((path, reason)),
            }
        }
    }
    found.files.sort();
    found.files.dedup();
    found
}

/// A symlink the walk did not follow: tailed when it leads to a regular file inside `root`
/// (or anywhere with `follow_any`).
fn classify_link(link: &Path, root: &Path, follow_any: bool) -> Result<(), SkipReason> {
    let Ok(target) = std::fs::canonicalize(link) else {
        return Err(SkipReason::NotRegular);
    };
    if !follow_any && !target.starts_with(root) {
        return Err(SkipReason::SymlinkOutside);
    }
    match std::fs::metadata(&target) {
        Ok(meta) if meta.is_file() => Ok(()),
        _ => Err(SkipReason::NotRegular),
    }
}

/// walkdir yields `./x.log` for a root of `.`; globs written as `x/*.log` expect `x/...`.
fn clean(path: &Path, root: &Path, pattern: &str) -> PathBuf {
    if root == Path::new(".") && !pattern.starts_with("./") {
        if let Ok(stripped) = path.strip_prefix(".") {
            return stripped.to_path_buf();
        }
    }
    path.to_path_buf()
}

fn selected(input: &InputSettings, path: &Path) -> bool {
    if !input.include.is_match(path) || input.exclude_paths.is_match(path) {
        return false;
    }
    path.file_name().is_none_or(|name| !input.exclude_names.is_match(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_stop_at_the_first_glob_component() {
        assert_eq!(walk_root("/var/log/app/*.log"), WalkRoot { dir: "/var/log/app".into(), max_depth: Some(1) });
        assert_eq!(walk_root("/var/log/**/*.json"), WalkRoot { dir: "/var/log".into(), max_depth: None });
        assert_eq!(walk_root("fixtures/*.log"), WalkRoot { dir: "fixtures".into(), max_depth: Some(1) });
        assert_eq!(walk_root("*.log"), WalkRoot { dir: ".".into(), max_depth: Some(1) });
        assert_eq!(walk_root("/var/log/app.log"), WalkRoot { dir: "/var/log".into(), max_depth: Some(1) });
    }
}
